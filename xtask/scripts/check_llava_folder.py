#!/usr/bin/env python3
"""Check that transformers loads a LLaVA folder (e.g. one mosaic saved) and reproduces the LLaVA reference.

Used by the Rust test that saves a mosaic-loaded LLaVA and asks transformers to load it back, or directly:

    $PY xtask/scripts/check_llava_folder.py --folder DIR --model tiny-llava|tiny-llava-layers \
        [--reference fixtures/reference/llava.safetensors] [--tol 1e-4] [--check-processor]

DIR is loaded with `LlavaForConditionalGeneration.from_pretrained(DIR, attn_implementation="eager",
output_loading_info=True)` (any missing, unexpected or mismatched key is an error) and `AutoProcessor.from_pretrained`
(it must load and give `<image>` the config's image token id). Cases a (raw prompt) and b (chat template) of MODEL
in the reference (written by make_llava_fixtures.py; llava.json next to the .safetensors) are rerun from the
recorded input_ids / attention_mask / pixel_values (not through the processor): the logits must agree within
--tol, `image_features` too where recorded, and greedy generation (max_new_tokens and the eos/pad ids from
llava.json, do_sample=False, one beam; any generation_config.json in DIR is overridden) must give the recorded new
tokens. With --check-processor the processor must also reproduce the recorded input_ids, pixel_values (within
1e-5) and rendered chat prompt from the images and prompts.

Prints one line of JSON ({"ok": ..., "errors": [...], "cases": {...}, ...}) and exits 1 on any mismatch or error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoProcessor, GenerationConfig, LlavaForConditionalGeneration  # noqa: E402

try:
    transformers.utils.logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

ROOT = Path(__file__).resolve().parents[2]
CASES = ["a", "b"]


def check(args, result: dict) -> None:
    errors: list[str] = result["errors"]
    reference = load_file(str(args.reference))
    ref_json = json.loads(args.reference.with_suffix(".json").read_text(encoding="utf-8"))
    if args.model not in ref_json["models"]:
        errors.append(f"no model {args.model!r} in {args.reference.with_suffix('.json')}")
        return
    spec = ref_json["models"][args.model]

    model, info = LlavaForConditionalGeneration.from_pretrained(
        str(args.folder), attn_implementation="eager", output_loading_info=True
    )
    model.eval()
    info = {k: sorted(map(str, v)) for k, v in info.items()}
    result["loading_info"] = info
    for kind, keys in info.items():
        if keys:
            errors.append(f"{kind}: {keys}")

    config = model.config
    result["config"] = {
        "image_token_id": config.image_token_id,
        "vision_feature_layer": config.vision_feature_layer,
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
        "projector_hidden_act": config.projector_hidden_act,
    }
    result["config_differences"] = {
        k: {"folder": v, "reference": spec[k]} for k, v in result["config"].items() if spec.get(k) != v
    }

    processor = AutoProcessor.from_pretrained(str(args.folder))
    result["processor"] = {
        "class": type(processor).__name__,
        "image_processor": type(getattr(processor, "image_processor", None)).__name__,
        "image_token_id": getattr(processor, "image_token_id", None),
        "has_chat_template": bool(getattr(processor, "chat_template", None)),
    }
    if result["processor"]["image_token_id"] != config.image_token_id:
        errors.append(
            f"the processor's image token id {result['processor']['image_token_id']} is not the config's "
            f"{config.image_token_id}"
        )

    gen_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        eos_token_id=spec["eos_token_id"],
        pad_token_id=spec["pad_token_id"],
    )
    for case in CASES:
        entry = spec["cases"][case]
        names = entry["tensors"]
        inputs = {k: reference[names[k]] for k in ["input_ids", "attention_mask", "pixel_values"]}
        out: dict = {}
        with torch.no_grad():
            logits = model(**inputs).logits.float()
        expected = reference[names["logits"]]
        if logits.shape != expected.shape:
            errors.append(f"{case}: logits shape {list(logits.shape)}, expected {list(expected.shape)}")
        else:
            diff = (logits - expected).abs().max().item()
            out["max_abs_logits_diff"] = diff
            if not diff <= args.tol:
                errors.append(f"{case}: max |logits difference| {diff:.3g} > {args.tol:g}")
        if "image_features" in names:
            with torch.no_grad():
                feats = model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
            feats = torch.stack(list(feats))
            want = reference[names["image_features"]]
            if feats.shape != want.shape:
                errors.append(f"{case}: image_features shape {list(feats.shape)}, expected {list(want.shape)}")
            else:
                diff = (feats.float() - want).abs().max().item()
                out["max_abs_image_features_diff"] = diff
                if not diff <= args.tol:
                    errors.append(f"{case}: max |image_features difference| {diff:.3g} > {args.tol:g}")
        if "generate" in entry:
            want_ids = entry["generate"]["new_token_ids"]
            with torch.no_grad():
                seq = model.generate(
                    **inputs, generation_config=gen_config, max_new_tokens=entry["generate"]["max_new_tokens"]
                )
            new = seq[0, inputs["input_ids"].shape[1] :].tolist()
            out["new_token_ids"] = new
            out["generate_equal"] = new == want_ids
            if new != want_ids:
                errors.append(f"{case}: generated {new}, expected {want_ids}")
        if args.check_processor:
            check_processor(processor, entry, reference, case, out, errors)
        result["cases"][case] = out


def check_processor(processor, entry: dict, reference: dict, case: str, out: dict, errors: list[str]) -> None:
    from PIL import Image

    names = entry["tensors"]
    if "messages" in entry:
        rendered = processor.apply_chat_template(entry["messages"], add_generation_prompt=True)
        out["rendered_prompt_equal"] = rendered == entry["rendered_prompt"]
        if rendered != entry["rendered_prompt"]:
            errors.append(f"{case}: chat template rendered {rendered!r}, expected {entry['rendered_prompt']!r}")
    with Image.open(ROOT / entry["images"][0]) as im:
        im.load()
        enc = processor(images=im.copy(), text=entry["prompts"][0], return_tensors="pt")
    ids_ok = enc["input_ids"].tolist() == reference[names["input_ids"]].tolist()
    out["processor_input_ids_equal"] = ids_ok
    if not ids_ok:
        errors.append(f"{case}: the processor's input_ids differ from the reference")
    pv, want = enc["pixel_values"].float(), reference[names["pixel_values"]]
    if pv.shape != want.shape:
        errors.append(f"{case}: the processor's pixel_values shape {list(pv.shape)}, expected {list(want.shape)}")
    else:
        diff = (pv - want).abs().max().item()
        out["processor_max_abs_pixel_diff"] = diff
        if not diff <= 1e-5:
            errors.append(f"{case}: the processor's pixel_values differ by {diff:.3g}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", required=True, type=Path, help="the LLaVA folder to load")
    ap.add_argument("--model", required=True, help="which reference model: tiny-llava or tiny-llava-layers")
    ap.add_argument("--reference", type=Path, default=ROOT / "fixtures" / "reference" / "llava.safetensors")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest |logits difference| allowed (default 1e-4)")
    ap.add_argument("--check-processor", action="store_true", help="also rerun the processor on the recorded inputs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    result: dict = {
        "ok": False,
        "folder": str(args.folder),
        "model": args.model,
        "reference": str(args.reference),
        "tol": args.tol,
        "errors": [],
        "cases": {},
    }
    try:
        check(args, result)
    except Exception as e:  # a folder transformers refuses is a failure too, reported in the same JSON line
        result["errors"].append(f"{type(e).__name__}: {e}")
        result["traceback"] = traceback.format_exc(limit=4)
    result["ok"] = not result["errors"]
    print(json.dumps(result, ensure_ascii=False, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
