#!/usr/bin/env python3
"""Generate the `scenes` set: 32x32 scenes of 1 to 3 coloured shapes with captions (LLaVA stage 1) and short
questions and answers (LLaVA stage 2), for visual instruction tuning on top of `models/clip-shapes`.

Run directly (or through `cargo xtask fixtures`, which runs every xtask/scripts/make_*.py):

    ~/.cache/mosaic-refenv/bin/python xtask/scripts/make_scenes.py --out fixtures

PIL + the standard library only; deterministic (fixed seeds, one `random.Random` per split, no clock, no hash
order). Outputs:

    <out>/data/scenes/images/{split}-{i:04d}.png
                                600 / 60 / 120 (train / valid / test) 32x32 RGB scenes of 1, 2 or 3 shapes (as many
                                of each), drawn exactly like `data/shapes` (make_image_text.py): the same 5 colours,
                                4 shape kinds, drawing code (4x supersampled, LANCZOS down to 32x32), colour jitter
                                and flat, tinted white / black / gray background, so clip-shapes' vision tower
                                already knows them. Each shape has radius 4 to 6 px (8 to 12 px across); the
                                shapes' bounding boxes lie inside the image and are at least 1 px apart.
    <out>/data/scenes/captions-{train,valid,test}.json
                                LLaVA-pretrain format: a JSON array (one object a line), one object per image:
                                {"id": "train-0000", "image": "images/train-0000.png",
                                 "conversations": [{"from": "human", "value": "<image>\\nDescribe the image briefly."},
                                                   {"from": "gpt", "value": CAPTION}],
                                 "references": [CAPTION, OTHER_PHRASING, ...]}
                                CAPTION is a function of the scene (no randomness), 4 to 13 words; references
                                holds 2 or 3 correct phrasings (for BLEU / CIDEr), the first one equal to CAPTION.
    <out>/data/scenes/instruct-{train,valid,test}.json
                                stage-2 data: each image's caption row followed by its question rows (the rows of
                                captions-*.json and vqa-*.json, interleaved by image)
    <out>/data/scenes/vqa-{train,valid,test}.json
                                LLaVA-instruct format, one object per (image, question), 2 or 3 questions per image
                                (alternately), 1500 / 150 / 300 rows:
                                {"id": "train-0000-q1", "image": "images/train-0000.png",
                                 "question_type": "color" | "count" | "position" | "yes/no", "answer": ANSWER,
                                 "conversations": [{"from": "human", "value": "<image>\\nQUESTION"},
                                                   {"from": "gpt", "value": ANSWER}]}
                                ANSWER is one lower-case word: a colour name, "1" / "2" / "3", "left" / "right" /
                                "top" / "bottom", or "yes" / "no".

The script writes nothing else: `<out>/data/scenes/README.md` is hand-written (the script prints the tables it
holds and warns when they are out of date).

Positions. The image is cut into thirds both ways (boundaries at x, y = 32/3 and 64/3 px). A shape's centre is the
point (cx, cy) it is drawn around (the centre of its 2r x 2r bounding box). Every shape's centre lies in one of five
cells, each scene using a cell at most once:

    left   = left third of x,   middle third of y        right  = right third of x,  middle third of y
    top    = middle third of x, top third of y           bottom = middle third of x, bottom third of y
    middle = middle third of x, middle third of y        (the four corner cells are never used)

and at least 1.5 px away from every third boundary, so that the centroid of a triangle (up to 0.2 r = 1.2 px below
its centre) is in the same cell. A shape's position word is its cell's name; captions use make_image_text.py's
phrases ("on the left", "on the right", "at the top", "at the bottom", "in the middle").

Shapes. The first shape's colour and kind are uniform; each later one copies an earlier shape exactly (p = 0.2),
copies its colour only (0.2) or its kind only (0.15), or is uniform again, so that repeated colours and kinds
("two green triangles", "How many red shapes are there?" -> "2") are common.

Captions, shapes listed in reading order of their cells (top, left, middle, right, bottom):
    1 shape                  "a red circle on the left"        (+ "a red circle", "one red circle on the left")
    2 different shapes       "a red circle on the left and a blue square on the right"
                             (+ the same listed the other way round, + "a red circle and a blue square")
    2 or 3 identical shapes  "two green triangles"             (+ "there are two green triangles")
    3, two of them the same  "two red circles and a blue cross" (+ "a blue cross and two red circles",
                                                                  + "three shapes, two red circles and a blue cross")
    3 different shapes       "a red circle, a blue square and a green cross"
                             (+ the same listed the other way round, + "three shapes, a red circle, ...")

Questions (question_type: forms):
    color     "What colour is the circle?" (only when exactly one shape is a circle), "What colour is the shape on
              the left?" ("at the top", "in the middle", ...; cells are unique, so always answerable)
    count     "How many shapes are there?", "How many red shapes are there?", "How many circles are there?"
              (only for colours / kinds in the scene, so answers are 1 to 3; a colour / kind that occurs more than
              once is picked with p = 0.7 when there is one)
    position  "Where is the blue square?" (only when exactly one shape is a blue square), "Where is the square?"
              (only when exactly one shape is a square); only for shapes in the left / right / top / bottom cells
    yes/no    "Is there a yellow triangle?"; within each split the answers alternate yes, no, yes, ... (balanced);
              most "no" questions name a colour or a kind that is in the scene (hard negatives)
For each image the question types are the 2 or 3 that have been asked least so far in the split (among those that
the scene allows; ties broken at random), so the four types are balanced overall.

Self-check (always run; the script fails on any mismatch): every answer is recomputed from the scene description by
parsing the question text again (and each question is checked to be unambiguous), every caption and reference is
parsed back into shapes and positions and compared with the scene, the geometry is checked (inside the image,
no overlap, cells, margins), and every PNG is read back: the pixel at each shape's centre is nearer that shape's
colour than the background and than any other palette colour. Also checked: the palette and the drawing code are
identical to make_image_text.py's (read with `ast`, without importing it: it needs torch).
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw

# ----------------------------------------------------------------------------------------------------------------
# Copied from make_image_text.py (checked identical by `check_same_as_shapes`): palette, kinds, backgrounds, drawing
# ----------------------------------------------------------------------------------------------------------------

COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 75, 220),
    "yellow": (235, 205, 30),
    "purple": (140, 55, 185),
}
SHAPES = ["circle", "square", "triangle", "cross"]
BACKGROUNDS = {"white": (245, 245, 240), "black": (15, 15, 20), "gray": (128, 128, 125)}
SCALE = 4  # drawn at 4x, then downsampled: anti-aliased edges
SIDE = 32


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.9
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif shape == "cross":
        w = r * 0.38
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        raise ValueError(shape)


# ----------------------------------------------------------------------------------------------------------------
# This set
# ----------------------------------------------------------------------------------------------------------------

SPLITS = {"train": 600, "valid": 60, "test": 120}
SEED = 2000  # split k uses random.Random(SEED + k)
THIRD = SIDE / 3
MARGIN = 1.5  # px between a centre and any third boundary
EDGE = 0.5  # px between a bounding box and the image border
GAP = 1.0  # px between two bounding boxes
RADIUS = (4.0, 6.0)  # px at 32x32
# cell -> (column, row), 0..2 each
CELLS = {"top": (1, 0), "left": (0, 1), "middle": (1, 1), "right": (2, 1), "bottom": (1, 2)}
READING_ORDER = ["top", "left", "middle", "right", "bottom"]
PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "middle": "in the middle",
}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
NUMBER = {1: "one", 2: "two", 3: "three"}
QTYPES = ["color", "count", "position", "yes/no"]
PROMPT = "Describe the image briefly."
ANSWERS = sorted(COLOURS) + ["1", "2", "3"] + ["left", "right", "top", "bottom"] + ["yes", "no"]


def cell_of(x: float, y: float) -> tuple[int, int]:
    """(column, row) of a point: which third of x and which third of y it falls in."""
    return min(2, int(x // THIRD)), min(2, int(y // THIRD))


def axis_range(index: int, r: float) -> tuple[float, float]:
    """Where a centre may go along one axis for third `index`: MARGIN inside the third, EDGE inside the image."""
    lo = max(index * THIRD + MARGIN, r + EDGE)
    hi = min((index + 1) * THIRD - MARGIN, SIDE - r - EDGE)
    assert lo < hi, (index, r)
    return lo, hi


def boxes_apart(a: dict, b: dict) -> bool:
    return (
        abs(a["cx"] - b["cx"]) >= a["r"] + b["r"] + GAP or abs(a["cy"] - b["cy"]) >= a["r"] + b["r"] + GAP
    )


def pick_kinds(rng: random.Random, n: int) -> list[tuple[str, str]]:
    colours, kinds = list(COLOURS), SHAPES
    picked = [(rng.choice(colours), rng.choice(kinds))]
    while len(picked) < n:
        u = rng.random()
        base = rng.choice(picked)
        if u < 0.2:
            picked.append(base)
        elif u < 0.4:
            picked.append((base[0], rng.choice([k for k in kinds if k != base[1]])))
        elif u < 0.55:
            picked.append((rng.choice([c for c in colours if c != base[0]]), base[1]))
        else:
            picked.append((rng.choice(colours), rng.choice(kinds)))
    return picked


def make_scene(rng: random.Random, n: int) -> dict:
    """The description of one scene: background and shapes (colour, kind, cell, centre, radius, fill)."""
    bg = rng.choice(list(BACKGROUNDS))
    tint = tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in BACKGROUNDS[bg])
    kinds = pick_kinds(rng, n)
    cells = rng.sample(READING_ORDER, n)
    for _ in range(20000):  # a row of three (left, middle, right) fits only with radii under 4.9: rare draws
        shapes = []
        for (colour, kind), cell in zip(kinds, cells):
            r = rng.uniform(*RADIUS)
            col, row = CELLS[cell]
            cx = rng.uniform(*axis_range(col, r))
            cy = rng.uniform(*axis_range(row, r))
            shapes.append({"colour": colour, "kind": kind, "cell": cell, "cx": cx, "cy": cy, "r": r})
        if all(boxes_apart(a, b) for i, a in enumerate(shapes) for b in shapes[i + 1 :]):
            break
    else:
        raise RuntimeError("could not place the shapes")
    for s in shapes:
        s["fill"] = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in COLOURS[s["colour"]])
    shapes.sort(key=lambda s: READING_ORDER.index(s["cell"]))
    return {"bg": bg, "tint": tint, "shapes": shapes}


def render(scene: dict) -> Image.Image:
    side = SIDE * SCALE
    img = Image.new("RGB", (side, side), scene["tint"])
    draw = ImageDraw.Draw(img)
    for s in scene["shapes"]:
        draw_shape(draw, s["kind"], s["cx"] * SCALE, s["cy"] * SCALE, s["r"] * SCALE, s["fill"])
    return img.resize((SIDE, SIDE), Image.Resampling.LANCZOS)


# ----------------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------------


def groups(scene: dict) -> list[tuple[int, str, str]]:
    """(count, colour, kind) of each distinct (colour, kind), in the reading order of its first shape."""
    out: dict[tuple[str, str], int] = {}
    for s in scene["shapes"]:
        key = (s["colour"], s["kind"])
        out[key] = out.get(key, 0) + 1
    return [(n, c, k) for (c, k), n in out.items()]


def noun(n: int, colour: str, kind: str) -> str:
    return f"a {colour} {kind}" if n == 1 else f"{NUMBER[n]} {colour} {PLURAL[kind]}"


def listing(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def captions(scene: dict) -> list[str]:
    """The trained caption first, then other correct phrasings."""
    shapes, gs = scene["shapes"], groups(scene)
    n = len(shapes)
    if n == 1:
        s = shapes[0]
        where = PHRASES[s["cell"]]
        return [f"a {s['colour']} {s['kind']} {where}", f"a {s['colour']} {s['kind']}",
                f"one {s['colour']} {s['kind']} {where}"]
    if len(gs) == 1:
        phrase = noun(*gs[0])
        return [phrase, f"there are {phrase}"]
    if n == 2:
        parts = [f"a {s['colour']} {s['kind']} {PHRASES[s['cell']]}" for s in shapes]
        return [" and ".join(parts), " and ".join(parts[::-1]),
                " and ".join(f"a {s['colour']} {s['kind']}" for s in shapes)]
    # three shapes, two or three groups: no positions (they would make the caption too long)
    parts = [noun(*g) for g in gs]
    if len(gs) == 2:  # list the pair first
        parts = sorted(parts, key=lambda p: not p.startswith("two "))
    return [listing(parts), listing(parts[::-1]), "three shapes, " + listing(parts)]


CAPTION_NOUN = re.compile(
    r"(a|one|two|three) (" + "|".join(COLOURS) + r") (" + "|".join(SHAPES + list(PLURAL.values())) + r")"
    r"(?: (" + "|".join(PHRASES.values()) + r"))?"
)


def check_caption(scene: dict, text: str) -> None:
    """Parse a caption back into (count, colour, kind, position) and compare it with the scene."""
    assert len(text.split()) <= 13, text
    rest = text
    for prefix in ("there are ", "three shapes, "):
        if rest.startswith(prefix):
            rest = rest[len(prefix) :]
            if prefix == "three shapes, ":
                assert len(scene["shapes"]) == 3, text
    pieces = re.split(r", | and ", rest)
    seen: dict[tuple[str, str], int] = {}
    for piece in pieces:
        m = CAPTION_NOUN.fullmatch(piece)
        assert m, (text, piece)
        count = {"a": 1, "one": 1, "two": 2, "three": 3}[m.group(1)]
        plural = m.group(3) in PLURAL.values()
        assert plural == (count > 1), text
        kind = m.group(3) if not plural else next(k for k, p in PLURAL.items() if p == m.group(3))
        key = (m.group(2), kind)
        seen[key] = seen.get(key, 0) + count
        if m.group(4):
            assert count == 1, text
            cell = next(c for c, p in PHRASES.items() if p == m.group(4))
            match = [s for s in scene["shapes"] if (s["colour"], s["kind"]) == key and s["cell"] == cell]
            assert match, (text, "wrong position")
    truth: dict[tuple[str, str], int] = {}
    for s in scene["shapes"]:
        truth[(s["colour"], s["kind"])] = truth.get((s["colour"], s["kind"]), 0) + 1
    assert seen == truth, (text, seen, truth)


# ----------------------------------------------------------------------------------------------------------------
# Questions
# ----------------------------------------------------------------------------------------------------------------


def candidates(rng: random.Random, scene: dict, want_yes: bool) -> dict[str, tuple[str, str]]:
    """One (question, answer) for each question type that this scene allows."""
    shapes = scene["shapes"]
    kinds = [s["kind"] for s in shapes]
    pairs = [(s["colour"], s["kind"]) for s in shapes]
    out = {}
    # color
    by_kind = [s for s in shapes if kinds.count(s["kind"]) == 1]
    if by_kind and rng.random() < 0.5:
        s = rng.choice(by_kind)
        out["color"] = (f"What colour is the {s['kind']}?", s["colour"])
    else:
        s = rng.choice(shapes)
        out["color"] = (f"What colour is the shape {PHRASES[s['cell']]}?", s["colour"])
    # count
    # (a colour or kind that occurs more than once is preferred, so that not nearly every answer is "1")
    u = rng.random()
    colours = [s["colour"] for s in shapes]
    if u < 0.4:
        out["count"] = ("How many shapes are there?", str(len(shapes)))
    elif u < 0.7:
        many = sorted({c for c in colours if colours.count(c) > 1})
        c = rng.choice(many if many and rng.random() < 0.7 else sorted(set(colours)))
        out["count"] = (f"How many {c} shapes are there?", str(colours.count(c)))
    else:
        many = sorted({k for k in kinds if kinds.count(k) > 1})
        k = rng.choice(many if many and rng.random() < 0.7 else sorted(set(kinds)))
        out["count"] = (f"How many {PLURAL[k]} are there?", str(kinds.count(k)))
    # position
    placed = [s for s in shapes if s["cell"] != "middle" and pairs.count((s["colour"], s["kind"])) == 1]
    if placed:
        s = rng.choice(placed)
        if kinds.count(s["kind"]) == 1 and rng.random() < 0.3:
            out["position"] = (f"Where is the {s['kind']}?", s["cell"])
        else:
            out["position"] = (f"Where is the {s['colour']} {s['kind']}?", s["cell"])
    # yes/no
    if want_yes:
        c, k = rng.choice(pairs)
    else:
        absent = [(c, k) for c in COLOURS for k in SHAPES if (c, k) not in pairs]
        hard = [(c, k) for c, k in absent if any(c == pc or k == pk for pc, pk in pairs)]
        c, k = rng.choice(hard if hard and rng.random() < 0.75 else absent)
    out["yes/no"] = (f"Is there a {c} {k}?", "yes" if want_yes else "no")
    return out


def recompute(scene: dict, qtype: str, question: str) -> str:
    """The answer to `question`, worked out again from the scene alone (and the question checked unambiguous)."""
    shapes = scene["shapes"]
    colours, kinds = "|".join(COLOURS), "|".join(SHAPES)
    plurals = {p: k for k, p in PLURAL.items()}
    cell_of_phrase = {p: c for c, p in PHRASES.items()}
    if m := re.fullmatch(rf"What colour is the ({kinds})\?", question):
        hits = [s for s in shapes if s["kind"] == m.group(1)]
        assert len(hits) == 1, question
        ans, t = hits[0]["colour"], "color"
    elif m := re.fullmatch(r"What colour is the shape (.+)\?", question):
        col, row = CELLS[cell_of_phrase[m.group(1)]]
        hits = [s for s in shapes if cell_of(s["cx"], s["cy"]) == (col, row)]
        assert len(hits) == 1, question
        ans, t = hits[0]["colour"], "color"
    elif question == "How many shapes are there?":
        ans, t = str(len(shapes)), "count"
    elif m := re.fullmatch(rf"How many ({colours}) shapes are there\?", question):
        ans, t = str(sum(s["colour"] == m.group(1) for s in shapes)), "count"
    elif m := re.fullmatch(r"How many (\w+) are there\?", question):
        ans, t = str(sum(s["kind"] == plurals[m.group(1)] for s in shapes)), "count"
    elif m := re.fullmatch(rf"Where is the (?:({colours}) )?({kinds})\?", question):
        hits = [s for s in shapes if s["kind"] == m.group(2) and m.group(1) in (None, s["colour"])]
        assert len(hits) == 1, question
        col, row = cell_of(hits[0]["cx"], hits[0]["cy"])
        word = {(0, 1): "left", (2, 1): "right", (1, 0): "top", (1, 2): "bottom"}.get((col, row))
        assert word is not None, (question, "no position word")
        ans, t = word, "position"
    elif m := re.fullmatch(rf"Is there an? ({colours}) ({kinds})\?", question):
        ans = "yes" if any((s["colour"], s["kind"]) == m.groups() for s in shapes) else "no"
        t = "yes/no"
    else:
        raise AssertionError(f"unparsed question {question!r}")
    assert t == qtype, (question, qtype)
    assert ans != "0", question
    return ans


# ----------------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------------


def check_geometry(scene: dict) -> None:
    shapes = scene["shapes"]
    assert 1 <= len(shapes) <= 3
    assert len({s["cell"] for s in shapes}) == len(shapes)
    for s in shapes:
        r = s["r"]
        assert RADIUS[0] <= r <= RADIUS[1]
        assert s["cx"] - r >= EDGE and s["cx"] + r <= SIDE - EDGE and s["cy"] - r >= EDGE and s["cy"] + r <= SIDE - EDGE
        assert cell_of(s["cx"], s["cy"]) == CELLS[s["cell"]], s
        for v in (s["cx"], s["cy"]):
            assert min(abs(v - THIRD), abs(v - 2 * THIRD)) >= MARGIN, s
        if s["kind"] == "triangle":  # the centroid is 0.2 r below the centre
            assert cell_of(s["cx"], s["cy"] + 0.2 * r) == CELLS[s["cell"]], s
    for i, a in enumerate(shapes):
        for b in shapes[i + 1 :]:
            assert boxes_apart(a, b), (a, b)


def check_pixels(scene: dict, img: Image.Image) -> None:
    assert img.mode == "RGB" and img.size == (SIDE, SIDE)

    def dist(p, q):
        return sum((x - y) ** 2 for x, y in zip(p, q))

    for s in scene["shapes"]:
        p = img.getpixel((int(s["cx"]), int(s["cy"])))
        assert dist(p, s["fill"]) < dist(p, scene["tint"]), (s, p)
        nearest = min(COLOURS, key=lambda c: dist(p, COLOURS[c]))
        assert nearest == s["colour"], (s, p, nearest)


def check_same_as_shapes(here: Path) -> None:
    """The palette and the drawing code equal make_image_text.py's (parsed, not imported: it needs torch)."""
    other = here.with_name("make_image_text.py")
    if not other.is_file():
        print(f"  note: {other.name} not found, palette not compared")
        return
    mine, theirs = (ast.parse(p.read_text(encoding="utf-8")) for p in (here, other))

    def defs(tree):
        out = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                if name in ("COLOURS", "SHAPES", "BACKGROUNDS", "SCALE", "SIDE"):
                    out[name] = ast.literal_eval(node.value)
            elif isinstance(node, ast.FunctionDef) and node.name == "draw_shape":
                out["draw_shape"] = ast.dump(node)
        return out

    a, b = defs(mine), defs(theirs)
    assert a == b and len(a) == 6, f"palette / drawing differ from {other.name}: {sorted(set(a) ^ set(b))}"


# ----------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------


def write_json_array(path: Path, rows: list[dict]) -> None:
    """A JSON array with one object a line."""
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    path.write_text("[\n" + body + "\n]\n", encoding="utf-8")


def make_split(root: Path, split: str, n: int, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    rng = random.Random(seed)
    scenes, caps, vqa = [], [], []
    asked = {t: 0 for t in QTYPES}
    yes_next = True
    for i in range(n):
        scene = make_scene(rng, 1 + i % 3)
        check_geometry(scene)
        name = f"images/{split}-{i:04d}.png"
        img = render(scene)
        img.save(root / name, optimize=True)
        with Image.open(root / name) as back:
            check_pixels(scene, back.convert("RGB") if back.mode != "RGB" else back.copy())
        sid = f"{split}-{i:04d}"
        refs = captions(scene)
        for ref in refs:
            check_caption(scene, ref)
        assert 2 <= len(refs) <= 3 and len(set(refs)) == len(refs)
        caps.append({
            "id": sid,
            "image": name,
            "conversations": [{"from": "human", "value": "<image>\n" + PROMPT}, {"from": "gpt", "value": refs[0]}],
            "references": refs,
        })
        cands = candidates(rng, scene, yes_next)
        k = 2 if i % 2 == 0 else 3
        order = sorted(cands, key=lambda t: (asked[t], rng.random()))[:k]
        rng.shuffle(order)
        for j, t in enumerate(order, 1):
            question, answer = cands[t]
            assert recompute(scene, t, question) == answer, (sid, question, answer)
            assert answer in ANSWERS
            asked[t] += 1
            if t == "yes/no":
                yes_next = not yes_next
            vqa.append({
                "id": f"{sid}-q{j}",
                "image": name,
                "question_type": t,
                "answer": answer,
                "conversations": [{"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": answer}],
            })
        scenes.append(scene)
    return scenes, caps, vqa


def tables(stats: dict) -> str:
    """The README's tables (markdown)."""
    lines = ["| split | images | 1 / 2 / 3 shapes | VQA rows | color | count | position | yes/no |",
             "|-------|-------:|-----------------:|---------:|------:|------:|---------:|-------:|"]
    for split, s in stats.items():
        q = s["qtypes"]
        lines.append(
            f"| `{split}` | {s['images']} | {' / '.join(str(s['shapes'][n]) for n in (1, 2, 3))} | {s['rows']} | "
            + " | ".join(str(q[t]) for t in QTYPES) + " |"
        )
    lines += ["", "| question_type | answers (train / valid / test) |", "|---|---|"]
    for t in QTYPES:
        vocab = sorted({a for s in stats.values() for (tt, a) in s["answers"] if tt == t},
                       key=ANSWERS.index)
        cells = ", ".join(
            f"`{a}` " + " / ".join(str(s["answers"].get((t, a), 0)) for s in stats.values()) for a in vocab
        )
        lines.append(f"| {t} | {cells} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=Path("fixtures"), type=Path, help="the fixtures directory (default: fixtures)")
    args = ap.parse_args()
    out = args.out.resolve()
    root = out / "data" / "scenes"
    print(f"make_scenes: out {out}")
    check_same_as_shapes(Path(__file__).resolve())
    if (root / "images").exists():
        shutil.rmtree(root / "images")
    (root / "images").mkdir(parents=True)
    stats = {}
    for k, (split, n) in enumerate(SPLITS.items()):
        scenes, caps, vqa = make_split(root, split, n, SEED + k)
        write_json_array(root / f"captions-{split}.json", caps)
        write_json_array(root / f"vqa-{split}.json", vqa)
        # Stage 2 data as LLaVA mixes it: the questions and the captions of the same images, image by image.
        by_image: dict[str, list[dict]] = {}
        for row in vqa:
            by_image.setdefault(row["image"], []).append(row)
        mixed = [r for cap in caps for r in [cap] + by_image.get(cap["image"], [])]
        write_json_array(root / f"instruct-{split}.json", mixed)
        answers: dict[tuple[str, str], int] = {}
        for row in vqa:
            key = (row["question_type"], row["answer"])
            answers[key] = answers.get(key, 0) + 1
        stats[split] = {
            "images": len(caps),
            "rows": len(vqa),
            "shapes": {m: sum(len(s["shapes"]) == m for s in scenes) for m in (1, 2, 3)},
            "qtypes": {t: sum(r["question_type"] == t for r in vqa) for t in QTYPES},
            "answers": answers,
        }
        yn = stats[split]["answers"]
        assert abs(yn.get(("yes/no", "yes"), 0) - yn.get(("yes/no", "no"), 0)) <= 1, split
        qt = stats[split]["qtypes"]
        assert max(qt.values()) - min(qt.values()) <= max(3, len(vqa) // 20), (split, qt)
        n_words = [len(c["references"][0].split()) for c in caps]
        print(f"  {split:5s}: {len(caps)} images, {len(vqa)} VQA rows, caption words "
              f"{min(n_words)}..{max(n_words)} (mean {sum(n_words) / len(n_words):.1f}), "
              f"{len({c['references'][0] for c in caps})} distinct captions")
    table = tables(stats)
    print(table)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"  data/scenes {size:,d} B")
    readme = root / "README.md"
    if not readme.is_file() or table not in readme.read_text(encoding="utf-8"):
        print(f"  warning: {readme} does not hold the tables above; paste them in")
    return 0


if __name__ == "__main__":
    sys.exit(main())
