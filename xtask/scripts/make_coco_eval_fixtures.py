#!/usr/bin/env python3
"""Generate the COCO detection mAP reference fixtures with pycocotools' COCOeval (iouType "bbox").

Run through `cargo xtask fixtures` (which runs every xtask/scripts/make_*.py), or directly:

    PY=$(../shared/tools/setup-reference-env.sh)
    $PY xtask/scripts/make_coco_eval_fixtures.py --out fixtures

Pinned versions: pycocotools 2.0.11, numpy 2.4.6. Everything is drawn from `random.Random(SEED)`, so the files are
the same on every run. Coordinates are rounded to 2 decimals and scores to 3 (so equal scores occur, and the
stable ranking matters) — short decimals also parse to the same doubles in any correct JSON reader. Output, under
<out>/reference/coco_eval/:

    <case>_gt.json       a COCO ground-truth file (images of different sizes, non-contiguous category ids,
                         small / medium / large boxes, `area` fields that differ from w*h, crowd regions, an image
                         without annotations, a box overshooting its image by half a pixel)
    <case>_results.json  a COCO results file: exact hits, near misses at a spread of IoUs, duplicates, wrong
                         classes, false positives, an image with more than 100 detections, a category with ground
                         truth but no detection and one with detections but no ground truth
    expected.json        per case: pycocotools' `stats` (the 12 figures), `eval["recall"]` flattened in C order
                         ([T, K, A, M]), the per-category AP@[.5:.95] (all areas, 100 detections: the mean of
                         `precision[:, :, k, 0, 2]` over entries > -1, -1 when none), and the `iouThrs` /
                         `recThrs` arrays

Cases: `mixed` (the main one), `random` (more images, noisy detections), `crowd` (crowd regions matched many times,
ignored detections), `id_zero` (an annotation with id 0: pycocotools records matches by ground-truth id, so a
detection matched to it counts as unmatched), `empty` (no detections: pycocotools' `loadRes` fails on an empty
list, so the results COCO object is built directly).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
from pathlib import Path

import numpy as np
import pycocotools
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SEED = 20240516
WRITTEN: list[Path] = []


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, separators=(",", ":")) + "\n")
    WRITTEN.append(path)


def r2(x: float) -> float:
    return round(x, 2)


def jitter_box(rng: random.Random, box, scale: float, width: int, height: int):
    """The box with its corners moved by up to `scale` of its size (kept non-degenerate)."""
    x, y, w, h = box
    x0 = x + rng.uniform(-scale, scale) * w
    y0 = y + rng.uniform(-scale, scale) * h
    x1 = x + w + rng.uniform(-scale, scale) * w
    y1 = y + h + rng.uniform(-scale, scale) * h
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    return [r2(x0), r2(y0), r2(max(x1 - x0, 0.5)), r2(max(y1 - y0, 0.5))]


def random_box(rng: random.Random, width: int, height: int, size: str):
    """A box inside the image of a given size class (by side length)."""
    side = {"small": (4, 30), "medium": (34, 90), "large": (100, 300)}[size]
    w = min(rng.uniform(*side), width - 1)
    h = min(w * rng.uniform(0.6, 1.5), height - 1)
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    return [r2(x), r2(y), r2(w), r2(h)]


def mixed_case(rng: random.Random):
    images = [
        {"id": 42, "file_name": "street.jpg", "width": 640, "height": 480},
        {"id": 7, "file_name": "room.jpg", "width": 320, "height": 240},
        {"id": 100, "file_name": "tiny.png", "width": 64, "height": 48},
        {"id": 3, "file_name": "square.png", "width": 500, "height": 500},
        {"id": 15, "file_name": "empty.png", "width": 200, "height": 150},  # no annotations
        {"id": 61, "file_name": "crowded.jpg", "width": 800, "height": 600},
    ]
    # Category 12 has ground truth but no detections; category 9 has detections but no ground truth.
    categories = [
        {"id": 5, "name": "car", "supercategory": "vehicle"},
        {"id": 1, "name": "person", "supercategory": "person"},
        {"id": 9, "name": "kite", "supercategory": "sports"},
        {"id": 12, "name": "cup", "supercategory": "kitchen"},
    ]
    with_gt = [1, 5, 12]
    annotations = []
    next_id = 1
    sizes = ["small", "medium", "large"]
    for img in images:
        if img["id"] == 15:
            continue
        count = 18 if img["id"] == 61 else rng.randint(2, 6)
        for _ in range(count):
            size = rng.choice(sizes) if img["width"] > 100 else "small"
            box = random_box(rng, img["width"], img["height"], size)
            # `area` as a segmentation would give it: a fraction of the box, so that size classes follow it.
            area = r2(box[2] * box[3] * rng.uniform(0.55, 1.0))
            ann = {"id": next_id, "image_id": img["id"], "category_id": rng.choice(with_gt), "bbox": box, "area": area}
            # pycocotools needs `iscrowd` on every ground-truth annotation (mosaic defaults it to 0).
            ann["iscrowd"] = 1 if rng.random() < 0.12 else 0
            annotations.append(ann)
            next_id += 1
    # Boxes on the size boundaries (area exactly 32² and 96²) and one overshooting its image by half a pixel.
    annotations.append({"id": next_id, "image_id": 3, "category_id": 1, "bbox": [10, 10, 32, 32], "area": 1024, "iscrowd": 0})
    annotations.append({"id": next_id + 1, "image_id": 3, "category_id": 5, "bbox": [200, 200, 96, 96], "area": 9216, "iscrowd": 0})
    annotations.append({"id": next_id + 2, "image_id": 7, "category_id": 1, "bbox": [280.5, 100, 40, 60], "area": 2400, "iscrowd": 0})

    dims = {img["id"]: (img["width"], img["height"]) for img in images}
    results = []

    def det(image_id, category_id, box, score):
        results.append({"image_id": image_id, "category_id": category_id, "bbox": box, "score": round(score, 3)})

    for ann in annotations:
        if ann["category_id"] == 12:
            continue  # ground truth that nothing detects
        w, h = dims[ann["image_id"]]
        roll = rng.random()
        if roll < 0.3:
            det(ann["image_id"], ann["category_id"], list(ann["bbox"]), rng.uniform(0.6, 1.0))  # exact hit
        elif roll < 0.75:
            det(ann["image_id"], ann["category_id"], jitter_box(rng, ann["bbox"], rng.choice([0.03, 0.1, 0.2, 0.35]), w, h), rng.uniform(0.2, 0.95))
        elif roll < 0.85:
            pass  # a miss
        else:
            other = rng.choice([c for c in (1, 5, 9) if c != ann["category_id"]])
            det(ann["image_id"], other, list(ann["bbox"]), rng.uniform(0.3, 0.9))  # wrong class
        if rng.random() < 0.2:
            det(ann["image_id"], ann["category_id"], jitter_box(rng, ann["bbox"], 0.05, w, h), rng.uniform(0.1, 0.7))  # duplicate
    # False positives everywhere, including the image without annotations and the category without ground truth.
    for img in images:
        for _ in range(rng.randint(1, 4)):
            size = rng.choice(sizes) if img["width"] > 100 else "small"
            det(img["id"], rng.choice([1, 5, 9]), random_box(rng, img["width"], img["height"], size), rng.uniform(0.0, 0.6))
    # More than 100 detections of one category on one image: only the 100 best count.
    for _ in range(130):
        det(61, 1, random_box(rng, 800, 600, rng.choice(sizes)), rng.choice([0.05, 0.1, 0.15, 0.2, rng.uniform(0, 1)]))
    # Equal scores across images and within one image: the stable ranking decides.
    for ann in [a for a in annotations if a["category_id"] != 12][:6]:
        det(ann["image_id"], ann["category_id"], jitter_box(rng, ann["bbox"], 0.1, *dims[ann["image_id"]]), 0.5)
    rng.shuffle(results)
    gt = {"info": {"description": "mosaic COCO eval fixture"}, "images": images, "annotations": annotations, "categories": categories}
    return gt, results


def random_case(rng: random.Random):
    images = [{"id": i + 1, "file_name": f"{i:03d}.png", "width": rng.choice([96, 160, 256, 400]), "height": rng.choice([96, 128, 300])} for i in range(12)]
    categories = [{"id": c, "name": f"shape{c}"} for c in (2, 4, 6)]
    annotations, results = [], []
    for img in images:
        for _ in range(rng.randint(0, 6)):
            size = rng.choice(["small", "medium", "large"]) if min(img["width"], img["height"]) > 120 else rng.choice(["small", "medium"])
            box = random_box(rng, img["width"], img["height"], size)
            annotations.append({"id": len(annotations) + 1, "image_id": img["id"], "category_id": rng.choice([2, 4, 6]), "bbox": box, "area": r2(box[2] * box[3]), "iscrowd": 0})
    for ann in annotations:
        img = images[ann["image_id"] - 1]
        for _ in range(rng.randint(0, 3)):
            results.append({"image_id": ann["image_id"], "category_id": ann["category_id"] if rng.random() < 0.8 else rng.choice([2, 4, 6]), "bbox": jitter_box(rng, ann["bbox"], rng.uniform(0.0, 0.4), img["width"], img["height"]), "score": round(rng.random(), 2)})
    for img in images:
        for _ in range(rng.randint(0, 3)):
            results.append({"image_id": img["id"], "category_id": rng.choice([2, 4, 6]), "bbox": random_box(rng, img["width"], img["height"], "small"), "score": round(rng.random(), 2)})
    return {"images": images, "annotations": annotations, "categories": categories}, results


def crowd_case():
    images = [{"id": 1, "file_name": "a.png", "width": 300, "height": 200}, {"id": 2, "file_name": "b.png", "width": 300, "height": 200}]
    categories = [{"id": 1, "name": "person"}, {"id": 2, "name": "bag"}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 150, 150], "area": 15000, "iscrowd": 1},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 60], "area": 2000, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [200, 20, 50, 80], "area": 3500, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 300, 200], "area": 50000, "iscrowd": 1},
        {"id": 5, "image_id": 2, "category_id": 2, "bbox": [20, 30, 25, 25], "area": 600, "iscrowd": 0},
        {"id": 6, "image_id": 2, "category_id": 2, "bbox": [100, 100, 20, 20], "area": 400, "iscrowd": 1},
    ]
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 60], "score": 0.9},  # the regular box
        {"image_id": 1, "category_id": 1, "bbox": [12, 11, 40, 58], "score": 0.85},  # duplicate: matches the crowd
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30], "score": 0.8},  # inside the crowd
        {"image_id": 1, "category_id": 1, "bbox": [70, 20, 20, 20], "score": 0.8},  # inside the crowd, small
        {"image_id": 1, "category_id": 1, "bbox": [205, 25, 45, 70], "score": 0.7},
        {"image_id": 1, "category_id": 1, "bbox": [250, 150, 10, 10], "score": 0.6},  # a small false positive
        {"image_id": 2, "category_id": 1, "bbox": [50, 50, 100, 100], "score": 0.95},  # crowd only: ignored
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 300, 200], "score": 0.5},
        {"image_id": 2, "category_id": 2, "bbox": [20, 30, 25, 25], "score": 0.4},
        {"image_id": 2, "category_id": 2, "bbox": [100, 100, 20, 20], "score": 0.9},  # on the crowd bag
        {"image_id": 2, "category_id": 2, "bbox": [101, 99, 20, 21], "score": 0.9},
        {"image_id": 2, "category_id": 2, "bbox": [150, 10, 30, 30], "score": 0.3},
    ]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def id_zero_case():
    images = [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}]
    categories = [{"id": 1, "name": "dot"}]
    annotations = [
        {"id": 0, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 0},
    ]
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "score": 0.8},
    ]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def evaluate(gt_path: Path, results_path: Path | None):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        if results_path is None:
            dt = COCO()
            dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]), "annotations": []}
            dt.createIndex()
        else:
            dt = gt.loadRes(str(results_path))
        e = COCOeval(gt, dt, iouType="bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    precision = e.eval["precision"]
    category_ap = []
    for k, cat in enumerate(e.params.catIds):
        s = precision[:, :, k, 0, 2]
        category_ap.append([int(cat), float(np.mean(s[s > -1])) if (s > -1).any() else -1.0])
    return {
        "stats": [float(v) for v in e.stats],
        "recall": [float(v) for v in e.eval["recall"].ravel()],
        "category_ap": category_ap,
        "iouThrs": [float(v) for v in e.params.iouThrs],
        "recThrs": [float(v) for v in e.params.recThrs],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the fixtures directory (e.g. <workspace>/fixtures)")
    args, _unknown = ap.parse_known_args()  # `cargo xtask fixtures` passes the other script's flags too
    out = args.out.resolve() / "reference" / "coco_eval"
    print(f"pycocotools {getattr(pycocotools, '__version__', '2.0.x')}, numpy {np.__version__}, out {out}")
    rng = random.Random(SEED)
    cases = {
        "mixed": mixed_case(rng),
        "random": random_case(rng),
        "crowd": crowd_case(),
        "id_zero": id_zero_case(),
        "empty": (mixed_case(random.Random(SEED))[0], None),
    }
    expected = {"versions": {"pycocotools": "2.0.11", "numpy": np.__version__}, "cases": {}}
    for name, (gt, results) in cases.items():
        gt_path = out / f"{name}_gt.json"
        write_json(gt_path, gt)
        results_path = None
        if results is not None:
            results_path = out / f"{name}_results.json"
            write_json(results_path, results)
        expected["cases"][name] = evaluate(gt_path, results_path)
    write_json(out / "expected.json", expected)

    print("wrote:")
    for p in WRITTEN:
        print(f"  {p.relative_to(args.out.resolve())!s:55s} {p.stat().st_size:>9,d} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
