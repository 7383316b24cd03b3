#!/usr/bin/env python3
"""Check that Python PEFT loads an adapter folder mosaic wrote and computes mosaic's outputs.

Run by `cargo test -p mosaic-peft --test python_peft_loads_ours -- --ignored` (and so by .ci/run when the reference
venv exists), or directly:

    $PY xtask/scripts/check_peft_adapter.py --base MODEL_DIR --adapter ADAPTER_DIR --kind seq-cls|causal-lm \
        --expected expected.json

`expected.json` holds `input_ids` and mosaic's `logits`. Exits non-zero, with the largest difference, when the
logits differ by more than --tol (default 1e-4) or PEFT refuses the folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--kind", choices=["seq-cls", "causal-lm"], required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--merged", action="store_true", help="--adapter is a merged whole model (mosaic merge)")
    args = ap.parse_args()
    expected = json.load(open(args.expected))
    cls = AutoModelForSequenceClassification if args.kind == "seq-cls" else AutoModelForCausalLM
    if args.merged:
        model = cls.from_pretrained(args.adapter, attn_implementation="eager").eval()
    else:
        base = cls.from_pretrained(args.base, attn_implementation="eager")
        model = PeftModel.from_pretrained(base, args.adapter).eval()
    with torch.no_grad():
        ids = torch.tensor(expected["input_ids"])
        logits = model(input_ids=ids).logits
        if logits.dim() == 3:
            # Prompt tuning's output covers its virtual tokens first; compare the real tokens'.
            logits = logits[:, -ids.shape[1]:]
    diff = (logits - torch.tensor(expected["logits"])).abs().max().item()
    what = "transformers loaded the merged model" if args.merged else "PEFT loaded it"
    print(f"{args.adapter}: {what}; max |logits difference| = {diff:.3g}")
    return 0 if diff <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
