#!/usr/bin/env python3
"""Check that transformers loads a DETR folder (e.g. one mosaic saved) and reproduces a DETR reference.

Used by the Rust test that saves a mosaic-loaded DETR and asks transformers to load it back, or directly:

    $PY xtask/scripts/check_detr_folder.py --folder DIR --model tiny-detr \
        [--reference fixtures/reference/detr.safetensors] [--tol 1e-4]

DIR is loaded with `DetrForObjectDetection.from_pretrained(DIR, output_loading_info=True)` (any missing,
unexpected or mismatched key is an error) and run in eval mode on MODEL's recorded `pixel_values` / `pixel_mask`
from the reference (written by make_detr_fixtures.py, or by the Rust test with mosaic's outputs): `logits`,
`pred_boxes` and, where recorded, each `aux.{i}.*` must agree within --tol. The config must say
`use_timm_backbone: false` and have an HF ResNet backbone.

Prints one line of JSON ({"ok": ..., "errors": [...], ...}) and exits 1 on any mismatch or error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import DetrForObjectDetection  # noqa: E402

try:
    transformers.utils.logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

ROOT = Path(__file__).resolve().parents[2]


def compare(name: str, got: torch.Tensor, want: torch.Tensor, tol: float, out: dict, errors: list[str]) -> None:
    if got.shape != want.shape:
        errors.append(f"{name}: shape {list(got.shape)}, expected {list(want.shape)}")
        return
    diff = (got.float() - want).abs().max().item()
    out[f"max_abs_{name}_diff"] = diff
    if not diff <= tol:
        errors.append(f"{name}: max |difference| {diff:.3g} > {tol:g}")


def check(args, result: dict) -> None:
    errors: list[str] = result["errors"]
    reference = load_file(str(args.reference))
    model, info = DetrForObjectDetection.from_pretrained(str(args.folder), output_loading_info=True)
    model.eval()
    info = {k: sorted(map(str, v)) for k, v in info.items()}
    result["loading_info"] = info
    for kind, keys in info.items():
        if keys:
            errors.append(f"{kind}: {keys}")
    config = model.config
    result["config"] = {
        "backbone_model_type": getattr(config.backbone_config, "model_type", None),
        "num_labels": config.num_labels,
        "num_queries": config.num_queries,
        "auxiliary_loss": config.auxiliary_loss,
    }
    if result["config"]["backbone_model_type"] != "resnet":
        errors.append(f"backbone model type {result['config']['backbone_model_type']!r}, expected 'resnet'")

    m = args.model
    pixels = reference[f"{m}.pixel_values"]
    mask = reference[f"{m}.pixel_mask"].long()
    out: dict = {}
    with torch.no_grad():
        outputs = model(pixel_values=pixels, pixel_mask=mask)
    compare("logits", outputs.logits, reference[f"{m}.logits"], args.tol, out, errors)
    compare("pred_boxes", outputs.pred_boxes, reference[f"{m}.pred_boxes"], args.tol, out, errors)
    aux = sorted({k.split(".")[2] for k in reference if k.startswith(f"{m}.aux.")}, key=int)
    if aux:
        with torch.no_grad():
            inter = model.model(pixel_values=pixels, pixel_mask=mask).intermediate_hidden_states
            classes = model.class_labels_classifier(inter)
            boxes = model.bbox_predictor(inter).sigmoid()
        for i in aux:
            compare(f"aux.{i}.logits", classes[int(i)], reference[f"{m}.aux.{i}.logits"], args.tol, out, errors)
            compare(f"aux.{i}.pred_boxes", boxes[int(i)], reference[f"{m}.aux.{i}.pred_boxes"], args.tol, out, errors)
    result["outputs"] = out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", required=True, type=Path, help="the DETR folder to load")
    ap.add_argument("--model", required=True, help="which reference model, e.g. tiny-detr")
    ap.add_argument("--reference", type=Path, default=ROOT / "fixtures" / "reference" / "detr.safetensors")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest |difference| allowed (default 1e-4)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    result: dict = {
        "ok": False,
        "folder": str(args.folder),
        "model": args.model,
        "reference": str(args.reference),
        "tol": args.tol,
        "errors": [],
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
