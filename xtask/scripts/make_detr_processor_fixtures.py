#!/usr/bin/env python3
"""Generate the DETR image-processor parity fixtures with PIL + transformers' `DetrImageProcessorPil`.

Pinned: torch 2.15.0, transformers 5.25.0, pillow 13.0.0, numpy 2.4.6 (the reference venv).

Run directly (or through `cargo xtask fixtures`, which runs every xtask/scripts/make_*.py):

    PY=$(../shared/tools/setup-reference-env.sh)
    $PY xtask/scripts/make_detr_processor_fixtures.py --out fixtures

Needs `fixtures/images/` (written by make_vision_fixtures.py). Deterministic: no randomness at all, sorted keys.
Outputs:

    <out>/reference/detr_processor/<case>/preprocessor_config.json
                                    the processor of each case, saved with `save_pretrained`
    <out>/reference/detr_processor.json
                                    per case: the images, the COCO annotations given, and per image the labels
                                    transformers returns (`class_labels`, `boxes`, `area`, `iscrowd`, `size`,
                                    `orig_size`) plus the batch's pixel_values / pixel_mask shapes
    <out>/reference/detr_processor.safetensors
                                    `<case>.pixel_values` [B, 3, H, W] f32, `<case>.pixel_mask` [B, H, W] u8
                                    (i64 in transformers),
                                    and `decoded/<image>` [H, W, 3] u8: PIL's RGB pixels (JPEG decoders differ by a
                                    level or two, so the Rust test checks the transforms on these)

Cases (small sizes keep the file small): `shortest` resizes by shortest edge 40 / longest 64 (one image already has
its short side at 40, so it is not resized at all), `capped` by 32 / 40 (the longest-edge cap decides), `exact`
to a fixed 24x30 (height x width), and `plain` does not resize, rescale nor normalise (pixels 0..255, boxes in pixels).

transformers 5 made `DetrImageProcessor` the torchvision backend and falls back to `DetrImageProcessorPil` when
torchvision is missing (as in the reference venv); the PIL one, the classic behaviour (PIL bilinear on uint8, then
rescale and normalise in numpy), is used here explicitly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import DetrImageProcessorPil  # noqa: E402

WRITTEN: list[Path] = []

# Images of different sizes and aspects; portrait_gray is grayscale and converted to RGB as mosaic's decoder does.
IMAGES = ["landscape.png", "photo.jpg", "portrait_gray.png"]

# COCO annotations per image: ordinary boxes, one reaching past the right/bottom edge (clipped), one with a
# negative corner (clipped), one of zero width (dropped), one crowd box (dropped) and one fully outside (dropped).
ANNOTATIONS = {
    "landscape.png": [
        {"bbox": [3.5, 4.25, 20.0, 15.5], "category_id": 1, "area": 310.0, "iscrowd": 0},
        {"bbox": [40.0, 30.0, 40.0, 30.0], "category_id": 2, "area": 1200.0, "iscrowd": 0},
        {"bbox": [10.0, 10.0, 0.0, 5.0], "category_id": 3, "area": 0.0, "iscrowd": 0},
        {"bbox": [5.0, 20.0, 12.0, 12.0], "category_id": 2, "area": 144.0, "iscrowd": 1},
    ],
    "photo.jpg": [
        {"bbox": [-4.0, -2.0, 14.0, 10.0], "category_id": 3, "area": 140.0, "iscrowd": 0},
        {"bbox": [12.3, 7.7, 25.1, 21.9], "category_id": 1, "area": 549.69, "iscrowd": 0},
        {"bbox": [60.0, 5.0, 5.0, 5.0], "category_id": 1, "area": 25.0, "iscrowd": 0},
    ],
    "portrait_gray.png": [
        {"bbox": [2.0, 3.0, 15.0, 20.0], "category_id": 2, "area": 300.0, "iscrowd": 0},
    ],
}

CASES = {
    "shortest": {"size": {"shortest_edge": 40, "longest_edge": 64}},
    "capped": {"size": {"shortest_edge": 32, "longest_edge": 40}},
    "exact": {"size": {"height": 24, "width": 30}},
    "plain": {"do_resize": False, "do_rescale": False, "do_normalize": False},
}


def note(path: Path) -> None:
    WRITTEN.append(path)


def save_safetensors_sorted(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors with sorted keys and metadata, byte-identical across runs."""
    dtypes = {torch.float32: "F32", torch.uint8: "U8"}
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        data = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(len(hjson).to_bytes(8, "little"))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    note(path)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    note(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the fixtures directory (e.g. <workspace>/fixtures)")
    args = ap.parse_args()
    out = args.out.resolve()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, pillow {Image.__version__}, out {out}")
    missing = [name for name in IMAGES if not (out / "images" / name).exists()]
    if missing:
        sys.exit(f"{out / 'images'} lacks {missing}: run xtask/scripts/make_vision_fixtures.py --out {out} first")
    images = [Image.open(out / "images" / name).convert("RGB") for name in IMAGES]
    annotations = [
        {"image_id": i, "annotations": ANNOTATIONS[name]} for i, name in enumerate(IMAGES)
    ]
    case_dir = out / "reference" / "detr_processor"
    if case_dir.exists():
        shutil.rmtree(case_dir)
    tensors: dict[str, torch.Tensor] = {
        f"decoded/{name}": torch.from_numpy(np.array(image, dtype=np.uint8)) for name, image in zip(IMAGES, images)
    }
    cases = {}
    for case, kwargs in CASES.items():
        processor = DetrImageProcessorPil(**kwargs)
        processor.save_pretrained(str(case_dir / case))
        note(case_dir / case / "preprocessor_config.json")
        enc = processor(images=images, annotations=annotations, return_tensors="pt")
        tensors[f"{case}.pixel_values"] = enc["pixel_values"].to(torch.float32)
        # 0/1 values: stored as u8 (transformers returns i64) to keep the file small.
        tensors[f"{case}.pixel_mask"] = enc["pixel_mask"].to(torch.uint8)
        labels = []
        for lab in enc["labels"]:
            labels.append(
                {
                    "class_labels": lab["class_labels"].tolist(),
                    "boxes": lab["boxes"].to(torch.float32).tolist(),
                    "area": lab["area"].to(torch.float32).tolist(),
                    "iscrowd": lab["iscrowd"].tolist(),
                    # transformers sets `size` only when it resizes or pads the image.
                    "size": lab["size"].tolist() if "size" in lab else None,
                    "orig_size": lab["orig_size"].tolist(),
                }
            )
        cases[case] = {
            "config": f"reference/detr_processor/{case}/preprocessor_config.json",
            "pixel_values_shape": list(enc["pixel_values"].shape),
            "labels": labels,
        }
        print(f"  {case}: pixel_values {list(enc['pixel_values'].shape)}, sizes {[lab['size'] for lab in labels]}")
    write_json(
        out / "reference" / "detr_processor.json",
        {
            "generator": "xtask/scripts/make_detr_processor_fixtures.py",
            "processor": "DetrImageProcessorPil",
            "transformers": transformers.__version__,
            "pillow": Image.__version__,
            "images": [f"images/{name}" for name in IMAGES],
            "annotations": annotations,
            "cases": cases,
        },
    )
    save_safetensors_sorted(
        tensors,
        out / "reference" / "detr_processor.safetensors",
        {"generator": "xtask/scripts/make_detr_processor_fixtures.py", "transformers": transformers.__version__},
    )
    total = 0
    for p in WRITTEN:
        size = p.stat().st_size
        total += size
        print(f"  {p.relative_to(out)!s:60s} {size:>9,d} B")
    print(f"  total {total:,d} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
