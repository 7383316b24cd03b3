#!/usr/bin/env python3
"""Generate the `shapes-detection` set: 64x64 images of 2 to 6 squares, circles and triangles on textured, noisy
backgrounds, with COCO detection JSON, for training a small DETR (issue 16).

Pinned: pillow 13.0.0 (the reference venv); PIL + the standard library only.

Run directly (or through `cargo xtask fixtures`, which runs every xtask/scripts/make_*.py):

    ~/.cache/mosaic-refenv/bin/python xtask/scripts/make_shapes_detection.py --out fixtures

Deterministic: one `random.Random(seed)` per split, no clock, no hash order; a rerun writes byte-identical files.
Outputs (everything under <out>/data/shapes-detection/, which the script replaces):

    images/{split}-{i:04d}.png     2400 / 100 / 100 (train / valid / test) 64x64 RGB images
    {train,valid,test}.json        COCO detection JSON: `images` (`file_name` relative to the JSON's folder),
                                   `annotations` (`bbox` [x, y, w, h] in pixels, `area`, `iscrowd` 0),
                                   `categories` 1 square, 2 circle, 3 triangle
    preprocessor_config.json       a DetrImageProcessor config that keeps the 64x64 size (shortest and longest
                                   edge 64), ImageNet mean / std, bilinear
    README.md                      what the set is, with its statistics

Each image: a gradient between two random colours, a low-contrast texture (checkerboard, or stripes: vertical,
horizontal or diagonal, random period and strength) and 2x2-block noise; then 2 to 6 objects, each a square,
circle or upright / upside-down isosceles triangle filling a square box of 10 to 30 px, in a random colour far
from the background (so the shape, not the colour, tells the class), drawn 4x supersampled for smooth edges.
Objects lie inside the image and overlap little: the intersection of two boxes is at most 20% of the smaller box.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
SUPERSAMPLE = 4
SPLITS = {"train": (2400, 1), "valid": (100, 2), "test": (100, 3)}
CATEGORIES = ["square", "circle", "triangle"]
MIN_SIDE, MAX_SIDE = 10, 30
MAX_OVERLAP = 0.2
MIN_COLOUR_DISTANCE = 90


def background(rng: random.Random) -> Image.Image:
    c0 = [rng.randrange(256) for _ in range(3)]
    c1 = [rng.randrange(256) for _ in range(3)]
    kind = rng.randrange(4)
    period = rng.randrange(4, 12)
    amp = rng.randrange(10, 30)
    # Noise on 2x2 blocks keeps the PNGs small (pixel noise does not compress) while still being noise.
    half = SIZE // 2
    noise = [rng.choice((-8, 0, 0, 8)) for _ in range(half * half)]
    image = Image.new("RGB", (SIZE, SIZE))
    px = image.load()
    for y in range(SIZE):
        for x in range(SIZE):
            t = (x + y) / (2 * SIZE - 2)
            if kind == 0:
                on = ((x // period) + (y // period)) % 2
            elif kind == 1:
                on = (x // period) % 2
            elif kind == 2:
                on = (y // period) % 2
            else:
                on = ((x + y) // period) % 2
            n = noise[(y // 2) * half + x // 2] + (amp if on else 0)
            px[x, y] = tuple(max(0, min(255, int(c0[i] + (c1[i] - c0[i]) * t) + n)) for i in range(3))
    return image


def mean_colour(image: Image.Image, box: tuple[int, int, int, int]) -> list[float]:
    x, y, w, h = box
    px = image.load()
    sums = [0.0, 0.0, 0.0]
    for yy in range(y, y + h):
        for xx in range(x, x + w):
            for i, v in enumerate(px[xx, yy]):
                sums[i] += v
    return [s / (w * h) for s in sums]


def colour_far_from(rng: random.Random, ref: list[float]) -> tuple[int, int, int]:
    for _ in range(200):
        c = tuple(rng.randrange(256) for _ in range(3))
        if sum(abs(a - b) for a, b in zip(c, ref)) / 3 >= MIN_COLOUR_DISTANCE:
            return c
    # The complement is always far enough from a mean colour.
    return tuple(255 - int(v) for v in ref)


def overlap_ok(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]]) -> bool:
    x, y, w, h = box
    for bx, by, bw, bh in boxes:
        iw = min(x + w, bx + bw) - max(x, bx)
        ih = min(y + h, by + bh) - max(y, by)
        if iw > 0 and ih > 0 and iw * ih > MAX_OVERLAP * min(w * h, bw * bh):
            return False
    return True


def draw_object(image: Image.Image, kind: int, box: tuple[int, int, int, int], colour, flip: bool) -> float:
    """Draws a shape filling `box` (x, y, side, side); returns its drawn area in pixels."""
    k = SUPERSAMPLE
    x, y, s, _ = box
    mask = Image.new("L", (SIZE * k, SIZE * k), 0)
    d = ImageDraw.Draw(mask)
    # Ink covers [x, x + s) in output pixels: the last supersampled pixel is (x + s) * k - 1.
    x0, y0, x1, y1 = x * k, y * k, (x + s) * k - 1, (y + s) * k - 1
    if kind == 0:
        d.rectangle([x0, y0, x1, y1], fill=255)
    elif kind == 1:
        d.ellipse([x0, y0, x1, y1], fill=255)
    elif flip:
        d.polygon([(x0, y0), (x1, y0), ((x0 + x1) / 2, y1)], fill=255)
    else:
        d.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=255)
    alpha = mask.resize((SIZE, SIZE), Image.BOX)
    image.paste(Image.new("RGB", (SIZE, SIZE), colour), (0, 0), alpha)
    return round(sum(v * n for v, n in enumerate(alpha.histogram())) / 255.0, 2)


def make_image(rng: random.Random):
    image = background(rng)
    count = rng.randint(2, 6)
    boxes: list[tuple[int, int, int, int]] = []
    objects = []
    for _ in range(count):
        for _ in range(200):
            s = rng.randint(MIN_SIDE, MAX_SIDE)
            box = (rng.randint(0, SIZE - s), rng.randint(0, SIZE - s), s, s)
            if overlap_ok(box, boxes):
                break
        else:
            continue
        kind = rng.randrange(len(CATEGORIES))
        colour = colour_far_from(rng, mean_colour(image, box))
        area = draw_object(image, kind, box, colour, flip=rng.random() < 0.5)
        boxes.append(box)
        objects.append((kind, box, area))
    return image, objects


def write_coco(path: Path, images: list[dict], annotations: list[dict]) -> None:
    """One entry a line, so a change shows as a readable diff."""
    dump = lambda o: json.dumps(o, separators=(", ", ": "))  # noqa: E731
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CATEGORIES)]
    parts = ["{", '"info": {"description": "shapes-detection (xtask/scripts/make_shapes_detection.py)"},']
    sections = (("images", images, False), ("annotations", annotations, False), ("categories", categories, True))
    for key, rows, last in sections:
        parts.append(f'"{key}": [')
        parts.append(",\n".join(dump(r) for r in rows))
        parts.append("]" if last else "],")
    parts.append("}")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


PREPROCESSOR = {
    "do_convert_annotations": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "format": "coco_detection",
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "DetrImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"longest_edge": 64, "shortest_edge": 64},
}


def readme(stats: dict) -> str:
    rows = "\n".join(
        f"| {split} | {s['images']} | {s['objects']} | {s['min']}–{s['max']} ({s['objects'] / s['images']:.2f}) | "
        + " / ".join(str(s["per_class"][c]) for c in CATEGORIES)
        + f" | {s['side_min']}–{s['side_max']} |"
        for split, s in stats.items()
    )
    return f"""# shapes-detection

A generated object-detection set for the DETR recipe (issue 16), written by
`xtask/scripts/make_shapes_detection.py` (PIL + the standard library, fixed seeds; a rerun is byte-identical).

64x64 RGB images: a gradient between two random colours, a low-contrast texture (checkerboard or stripes) and
2x2-block noise, with 2 to 6 objects, each a **square**, **circle** or **triangle** (upright or upside down)
filling a square box of 10 to 30 px, in a random colour far from the background, so the shape rather than the
colour decides the class. Boxes lie inside the image and overlap little (the intersection of two boxes is at
most 20% of the smaller one; later objects are drawn over earlier ones).

| split | images | objects | objects / image (mean) | square / circle / triangle | box side (px) |
|---|---|---|---|---|---|
{rows}

## Files
- `{{train,valid,test}}.json`: COCO detection JSON. `images[].file_name` is relative to this folder
  (`images/train-0000.png`); `annotations[].bbox` is `[x, y, width, height]` in pixels (integers: the shape's
  box), `area` the drawn shape's area in pixels (anti-aliased coverage), `iscrowd` 0; `categories` are
  1 square, 2 circle, 3 triangle.
- `images/`: the PNGs.
- `preprocessor_config.json`: a `DetrImageProcessor` config that keeps the 64x64 size (shortest and longest edge
  64: a 64x64 image is not resized), rescales by 1/255 and normalises with ImageNet's mean and std.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the fixtures directory (e.g. <workspace>/fixtures)")
    args = ap.parse_args()
    root = args.out.resolve() / "data" / "shapes-detection"
    if root.exists():
        shutil.rmtree(root)
    (root / "images").mkdir(parents=True)
    stats = {}
    for split, (n, seed) in SPLITS.items():
        rng = random.Random(seed)
        images, annotations = [], []
        per_class = {c: 0 for c in CATEGORIES}
        counts, sides = [], []
        for i in range(n):
            image, objects = make_image(rng)
            name = f"images/{split}-{i:04d}.png"
            # No metadata chunks (no time stamps) so the bytes only depend on the pixels.
            image.save(root / name, "PNG", optimize=True)
            images.append({"id": i + 1, "file_name": name, "width": SIZE, "height": SIZE})
            for kind, box, area in objects:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": kind + 1,
                        "bbox": list(box),
                        "area": area,
                        "iscrowd": 0,
                    }
                )
                per_class[CATEGORIES[kind]] += 1
                sides.append(box[2])
            counts.append(len(objects))
        write_coco(root / f"{split}.json", images, annotations)
        stats[split] = {
            "images": n,
            "objects": len(annotations),
            "min": min(counts),
            "max": max(counts),
            "per_class": per_class,
            "side_min": min(sides),
            "side_max": max(sides),
        }
        print(f"{split}: {stats[split]}")
    (root / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2, sort_keys=True) + "\n")
    (root / "README.md").write_text(readme(stats), encoding="utf-8")
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"wrote {root} ({total:,d} B)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
