#!/usr/bin/env python3
"""Generate the `scene-statements` set: (image, statement) pairs labelled true / false for multimodal
classification, on the images of `data/scenes`, built so that neither the image alone nor the text alone predicts
the label.

Run directly (or through `cargo xtask fixtures`, which runs every xtask/scripts/make_*.py):

    ~/.cache/mosaic-refenv/bin/python xtask/scripts/make_scene_statements.py --out fixtures

PIL + the standard library only (what make_scenes.py needs; its functions are imported); deterministic (fixed
seeds, one `random.Random` per split, no clock, no hash order). Outputs:

    <out>/data/scene-statements/{train,valid,test}.jsonl
                                2400 / 240 / 480 rows, one JSON object a line, one row per (image, statement),
                                4 rows per image of data/scenes (600 / 60 / 120 images), 2 true and 2 false:
                                {"image": "../scenes/images/train-0000.png", "text": "there is a red circle",
                                 "label": "true"}
                                `image` is relative to the JSONL file; `label` is "true" or "false". Rows are in
                                image order; the 4 rows of an image are shuffled.

The script writes nothing else and reads `<out>/data/scenes/` (it must exist: `make_scenes.py` writes it; this
script sorts before it, but both are deterministic, so the order does not matter). `<out>/data/scene-statements/
README.md` is hand-written (the script prints the numbers it holds).

Scenes. The scene descriptions (shapes, colours, cells, centres) are made again by calling make_scenes.py's own
`make_split` with its seeds into a temporary folder; the result must equal the committed captions-*.json and
vqa-*.json exactly, and every committed PNG must have the same pixels as the regenerated one.

Statements (all lower case, no final full stop), four kinds:
    existence  "there is a red circle"; only asked of images that hold a red shape or a circle (so a false one is
               always a near miss: the colour and the kind have to be bound together)
    count      "there is one shape", "there are two shapes", "there are three shapes" (any image);
               "there is one blue shape", "there are two blue shapes", ... and "there is one circle", "there are
               two crosses", ... (only for a colour / kind the image holds). Counts are exact: "there is one blue
               shape" is false for an image with two blue shapes.
    position   "the red circle is on the left", "the square is at the top" (on the left / on the right / at the
               top / at the bottom / in the middle, as make_scenes' cells); only asked of images in which exactly
               one shape fits the description, so a false one names a shape that is there, somewhere else
    colour     "the square is green" (only when exactly one shape is a square), "the shape on the left is red"
               (only when a shape is in that cell), so a false one names a shape that is there, in another colour
Every statement is only used on images where its presupposition holds (the shape it names exists and is unique),
so its label is well defined.

Design (per split). Each image gets 2 true statements, of two different kinds: the two kinds used least so far in
the split (ties broken at random), and within a kind a random form and a random true statement. Each true
statement is then used once more, as a false statement on another image where it applies and is false: a max flow
(text -> (image, kind), capacity 1; (image, kind) -> image, 1; image -> sink, 2) gives every image exactly 2 false
statements, of two different kinds, no image the same text twice. So every distinct text occurs exactly as often with "true" as with "false", and every image has
exactly 2 of each: the best text-only predictor (the majority label of each distinct text) and the best image-only
predictor (the majority label of each image) both score exactly 0.5 on every split, and so does any function of the
text alone or of the image alone. The script prints both numbers per split and asserts them (<= 0.55).

Self-check (always run; the script fails on any mismatch): every label is worked out again from the scene
description by parsing the statement text (with the cell taken from the centre's coordinates, not from the stored
cell name), and each statement's presupposition is checked; the balance properties above are asserted; every image
path must exist.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_scenes as ms  # noqa: E402  (PIL + stdlib only)

SEED = 3000  # split k uses random.Random(SEED + k); the scenes use make_scenes' own seeds
PER_IMAGE_TRUE = 2
PER_IMAGE_FALSE = 2
KINDS = ["existence", "count", "position", "colour"]
WORDS = {1: "one", 2: "two", 3: "three"}
MAX_CHANCE = 0.55


# ----------------------------------------------------------------------------------------------------------------
# Scenes (regenerated with make_scenes' own code and seeds, compared with the committed files)
# ----------------------------------------------------------------------------------------------------------------


def load_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def scenes_for(scenes_dir: Path) -> dict[str, list[dict]]:
    """split -> scene descriptions, regenerated by make_scenes.make_split and checked against the committed set."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="scene-statements-") as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        for k, (split, n) in enumerate(ms.SPLITS.items()):
            scenes, caps, vqa = ms.make_split(root, split, n, ms.SEED + k)
            assert caps == load_json(scenes_dir / f"captions-{split}.json"), f"captions-{split}.json differs"
            assert vqa == load_json(scenes_dir / f"vqa-{split}.json"), f"vqa-{split}.json differs"
            for cap in caps:
                with Image.open(root / cap["image"]) as a, Image.open(scenes_dir / cap["image"]) as b:
                    assert a.convert("RGB").tobytes() == b.convert("RGB").tobytes(), f"{cap['image']} differs"
            out[split] = scenes
    return out


# ----------------------------------------------------------------------------------------------------------------
# Statements, built from the scene's structure
# ----------------------------------------------------------------------------------------------------------------


def count_phrase(n: int, what: str, plural: str) -> str:
    return f"there is one {what}" if n == 1 else f"there are {WORDS[n]} {plural}"


def statements(scene: dict) -> dict[str, dict[str, list[tuple[str, bool]]]]:
    """kind -> form -> [(text, truth)] for every statement whose presupposition holds on this scene."""
    shapes = scene["shapes"]
    pairs = [(s["colour"], s["kind"]) for s in shapes]
    colours = [s["colour"] for s in shapes]
    kinds = [s["kind"] for s in shapes]
    out: dict[str, dict[str, list[tuple[str, bool]]]] = {k: {} for k in KINDS}
    out["existence"]["colour+kind"] = [
        (f"there is a {c} {k}", (c, k) in pairs)
        for c in ms.COLOURS for k in ms.SHAPES if c in colours or k in kinds
    ]
    out["count"]["shapes"] = [(count_phrase(n, "shape", "shapes"), n == len(shapes)) for n in WORDS]
    out["count"]["colour"] = [
        (count_phrase(n, f"{c} shape", f"{c} shapes"), colours.count(c) == n)
        for c in ms.COLOURS if c in colours for n in WORDS
    ]
    out["count"]["kind"] = [
        (count_phrase(n, k, ms.PLURAL[k]), kinds.count(k) == n) for k in ms.SHAPES if k in kinds for n in WORDS
    ]
    out["position"]["colour+kind"] = [
        (f"the {s['colour']} {s['kind']} is {ms.PHRASES[cell]}", s["cell"] == cell)
        for s in shapes if pairs.count((s["colour"], s["kind"])) == 1 for cell in ms.READING_ORDER
    ]
    out["position"]["kind"] = [
        (f"the {s['kind']} is {ms.PHRASES[cell]}", s["cell"] == cell)
        for s in shapes if kinds.count(s["kind"]) == 1 for cell in ms.READING_ORDER
    ]
    out["colour"]["kind"] = [
        (f"the {s['kind']} is {c}", s["colour"] == c) for s in shapes if kinds.count(s["kind"]) == 1 for c in ms.COLOURS
    ]
    out["colour"]["cell"] = [(f"the shape {ms.PHRASES[s['cell']]} is {c}", s["colour"] == c)
                             for s in shapes for c in ms.COLOURS]
    return out


def kind_of(text: str) -> str:
    if text.startswith("there is a "):
        return "existence"
    if text.startswith("there "):
        return "count"
    if text.endswith(tuple(ms.PHRASES.values())):
        return "position"
    return "colour"


# ----------------------------------------------------------------------------------------------------------------
# Self-check: the label again, from the statement text and the scene's geometry
# ----------------------------------------------------------------------------------------------------------------

C = "|".join(ms.COLOURS)
K = "|".join(ms.SHAPES)
P = "|".join(ms.PLURAL.values())
W = "|".join(ms.PHRASES.values())
NUM = {"one": 1, "two": 2, "three": 3}
CELL_OF_PHRASE = {p: ms.CELLS[c] for c, p in ms.PHRASES.items()}  # phrase -> (column, row)


def recompute(scene: dict, text: str) -> bool:
    """The truth of `text` on the scene, with its presupposition checked (asserts on an unusable statement)."""
    shapes = scene["shapes"]
    where = [ms.cell_of(s["cx"], s["cy"]) for s in shapes]

    def number(word: str, verb: str, noun: str, singular: str) -> int:
        n = NUM[word]
        assert (verb == "is") == (n == 1) and (noun == singular) == (n == 1), text
        return n

    if m := re.fullmatch(rf"there is a ({C}) ({K})", text):
        c, k = m.groups()
        assert any(s["colour"] == c or s["kind"] == k for s in shapes), (text, "neither colour nor kind present")
        return any((s["colour"], s["kind"]) == (c, k) for s in shapes)
    if m := re.fullmatch(r"there (is|are) (one|two|three) (shapes?)", text):
        return len(shapes) == number(m.group(2), m.group(1), m.group(3), "shape")
    if m := re.fullmatch(rf"there (is|are) (one|two|three) ({C}) (shapes?)", text):
        c = m.group(3)
        have = sum(s["colour"] == c for s in shapes)
        assert have > 0, (text, "colour absent")
        return have == number(m.group(2), m.group(1), m.group(4), "shape")
    if m := re.fullmatch(rf"there (is|are) (one|two|three) ({K}|{P})", text):
        noun = m.group(3)
        k = noun if noun in ms.SHAPES else next(s for s, p in ms.PLURAL.items() if p == noun)
        have = sum(s["kind"] == k for s in shapes)
        assert have > 0, (text, "kind absent")
        return have == number(m.group(2), m.group(1), noun, k)
    if m := re.fullmatch(rf"the (?:({C}) )?({K}) is ({W})", text):
        c, k, phrase = m.groups()
        hits = [i for i, s in enumerate(shapes) if s["kind"] == k and c in (None, s["colour"])]
        assert len(hits) == 1, (text, "referent not unique")
        return where[hits[0]] == CELL_OF_PHRASE[phrase]
    if m := re.fullmatch(rf"the ({K}) is ({C})", text):
        k, c = m.groups()
        hits = [s for s in shapes if s["kind"] == k]
        assert len(hits) == 1, (text, "referent not unique")
        return hits[0]["colour"] == c
    if m := re.fullmatch(rf"the shape ({W}) is ({C})", text):
        phrase, c = m.groups()
        hits = [s for s, cell in zip(shapes, where) if cell == CELL_OF_PHRASE[phrase]]
        assert len(hits) == 1, (text, "no shape there")
        return hits[0]["colour"] == c
    raise AssertionError(f"unparsed statement {text!r}")


# ----------------------------------------------------------------------------------------------------------------
# Max flow (Dinic): true statements -> images that take them as false ones
# ----------------------------------------------------------------------------------------------------------------


class Flow:
    def __init__(self, n: int) -> None:
        self.adj: list[list[int]] = [[] for _ in range(n)]
        self.to: list[int] = []
        self.cap: list[int] = []

    def edge(self, a: int, b: int, cap: int) -> int:
        self.adj[a].append(len(self.to))
        self.to.append(b)
        self.cap.append(cap)
        self.adj[b].append(len(self.to))
        self.to.append(a)
        self.cap.append(0)
        return len(self.to) - 2

    def run(self, s: int, t: int) -> int:
        total = 0
        while True:
            level = [-1] * len(self.adj)
            level[s] = 0
            queue = [s]
            for v in queue:
                for e in self.adj[v]:
                    if self.cap[e] > 0 and level[self.to[e]] < 0:
                        level[self.to[e]] = level[v] + 1
                        queue.append(self.to[e])
            if level[t] < 0:
                return total
            it = [0] * len(self.adj)

            def push(v: int, f: int) -> int:
                if v == t:
                    return f
                while it[v] < len(self.adj[v]):
                    e = self.adj[v][it[v]]
                    w = self.to[e]
                    if self.cap[e] > 0 and level[w] == level[v] + 1:
                        got = push(w, min(f, self.cap[e]))
                        if got:
                            self.cap[e] -= got
                            self.cap[e ^ 1] += got
                            return got
                    it[v] += 1
                return 0

            while f := push(s, 1 << 30):
                total += f


# ----------------------------------------------------------------------------------------------------------------
# One split
# ----------------------------------------------------------------------------------------------------------------


def make_split(split: str, scenes: list[dict], seed: int) -> list[dict]:
    rng = random.Random(seed)
    n = len(scenes)
    facts = [statements(sc) for sc in scenes]
    truth = [{t: v for forms in f.values() for items in forms.values() for t, v in items} for f in facts]
    # where each text applies and is false
    false_on: dict[str, list[int]] = {}
    for i, tv in enumerate(truth):
        for t, v in tv.items():
            if not v:
                false_on.setdefault(t, []).append(i)
    # 1. two true statements per image, of the two kinds used least so far; a text is only picked while there are
    #    still images it is false on that it has not been given to
    used_kind = {k: 0 for k in KINDS}
    used_text: dict[str, int] = {}
    true_of: list[list[str]] = []
    for i in range(n):
        options = {}
        for kind in KINDS:
            forms = {
                form: [t for t, v in items if v and used_text.get(t, 0) < len(false_on.get(t, []))]
                for form, items in facts[i][kind].items()
            }
            forms = {f: ts for f, ts in forms.items() if ts}
            if forms:
                options[kind] = forms
        chosen = sorted(options, key=lambda k: (used_kind[k], rng.random()))[:PER_IMAGE_TRUE]
        assert len(chosen) == PER_IMAGE_TRUE, (split, i, options)
        picked = []
        for kind in chosen:
            form = rng.choice(sorted(options[kind]))
            text = rng.choice(options[kind][form])
            picked.append(text)
            used_kind[kind] += 1
            used_text[text] = used_text.get(text, 0) + 1
        true_of.append(picked)
    # 2. each true statement once more as a false one: max flow text -> image (1) -> sink (2)
    #    (through a node per (image, kind) of capacity 1, so that an image's 2 false statements are of two kinds)
    texts = sorted(used_text)
    slot0 = 1 + len(texts)  # (image i, kind k) -> slot0 + i * len(KINDS) + k
    image0 = slot0 + n * len(KINDS)
    src, sink = 0, image0 + n
    flow = Flow(sink + 1)
    edges: list[tuple[int, str, int]] = []
    for j, t in enumerate(texts):
        flow.edge(src, 1 + j, used_text[t])
        targets = list(false_on[t])
        rng.shuffle(targets)
        k = KINDS.index(kind_of(t))
        for i in targets:
            edges.append((flow.edge(1 + j, slot0 + i * len(KINDS) + k, 1), t, i))
    for i in range(n):
        for k in range(len(KINDS)):
            flow.edge(slot0 + i * len(KINDS) + k, image0 + i, 1)
        flow.edge(image0 + i, sink, PER_IMAGE_FALSE)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * (sink + 1)))
    got = flow.run(src, sink)
    assert got == PER_IMAGE_FALSE * n, (split, got, "no assignment of false statements")
    false_of: list[list[str]] = [[] for _ in range(n)]
    for e, t, i in edges:
        if flow.cap[e] == 0:
            false_of[i].append(t)
    rows = []
    for i in range(n):
        assert len(false_of[i]) == PER_IMAGE_FALSE and len({kind_of(t) for t in false_of[i]}) == PER_IMAGE_FALSE, i
        group = [(t, True) for t in true_of[i]] + [(t, False) for t in sorted(false_of[i])]
        rng.shuffle(group)
        for t, v in group:
            rows.append({"image": f"../scenes/images/{split}-{i:04d}.png", "text": t,
                         "label": "true" if v else "false", "_scene": i})
    return rows


def majority_accuracy(rows: list[dict], key: str) -> float:
    """Accuracy of the best predictor that sees only rows[key]: the majority label of each value (fitted on these
    same rows, so an upper bound for any predictor from that field alone)."""
    tally: dict[str, dict[str, int]] = {}
    for r in rows:
        tally.setdefault(r[key], {"true": 0, "false": 0})[r["label"]] += 1
    return sum(max(c.values()) for c in tally.values()) / len(rows)


def check_split(split: str, rows: list[dict], scenes: list[dict], folder: Path) -> dict:
    for r in rows:
        want = recompute(scenes[r["_scene"]], r["text"])
        assert r["label"] == ("true" if want else "false"), (split, r)
        assert (folder / r["image"]).is_file(), r["image"]
    per_image: dict[str, list[dict]] = {}
    per_text: dict[str, dict[str, int]] = {}
    for r in rows:
        per_image.setdefault(r["image"], []).append(r)
        per_text.setdefault(r["text"], {"true": 0, "false": 0})[r["label"]] += 1
    assert len(per_image) == len(scenes)
    for img, rs in per_image.items():
        labels = [r["label"] for r in rs]
        assert labels.count("true") == PER_IMAGE_TRUE and labels.count("false") == PER_IMAGE_FALSE, img
        assert len({r["text"] for r in rs}) == len(rs), img
    for t, c in per_text.items():
        assert c["true"] == c["false"], (split, t, c)
    text_acc, image_acc = majority_accuracy(rows, "text"), majority_accuracy(rows, "image")
    assert text_acc <= MAX_CHANCE and image_acc <= MAX_CHANCE, (split, text_acc, image_acc)
    kinds = {k: sum(kind_of(r["text"]) == k for r in rows) for k in KINDS}
    assert max(kinds.values()) - min(kinds.values()) <= max(4, len(rows) // 20), (split, kinds)
    return {
        "rows": len(rows),
        "images": len(per_image),
        "true": sum(r["label"] == "true" for r in rows),
        "false": sum(r["label"] == "false" for r in rows),
        "texts": len(per_text),
        "text_acc": text_acc,
        "image_acc": image_acc,
        "kinds": kinds,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=Path("fixtures"), type=Path, help="the fixtures directory (default: fixtures)")
    args = ap.parse_args()
    out = args.out.resolve()
    scenes_dir = out / "data" / "scenes"
    folder = out / "data" / "scene-statements"
    print(f"make_scene_statements: out {out}")
    if not (scenes_dir / "captions-train.json").is_file():
        print(f"error: {scenes_dir} is missing; run xtask/scripts/make_scenes.py first", file=sys.stderr)
        return 1
    all_scenes = scenes_for(scenes_dir)
    print("  scenes regenerated with make_scenes.py's seeds: captions, questions and pixels match the committed set")
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["| split | images | rows | true / false | distinct texts | existence / count / position / colour "
             "| text-only acc | image-only acc |",
             "|-------|-------:|-----:|-------------:|---------------:|--------------------------------------:"
             "|--------------:|---------------:|"]
    for k, (split, scenes) in enumerate(all_scenes.items()):
        rows = make_split(split, scenes, SEED + k)
        s = check_split(split, rows, scenes, folder)
        body = "".join(
            json.dumps({key: r[key] for key in ("image", "text", "label")}, ensure_ascii=False) + "\n" for r in rows
        )
        (folder / f"{split}.jsonl").write_bytes(body.encode("utf-8"))
        print(f"  {split:5s}: {s['rows']} rows ({s['true']} true / {s['false']} false), {s['images']} images, "
              f"{s['texts']} distinct texts; best text-only acc {s['text_acc']:.3f}, "
              f"best image-only acc {s['image_acc']:.3f}")
        lines.append(f"| `{split}` | {s['images']} | {s['rows']} | {s['true']} / {s['false']} | {s['texts']} | "
                     + " / ".join(str(s["kinds"][x]) for x in KINDS)
                     + f" | {s['text_acc']:.3f} | {s['image_acc']:.3f} |")
    table = "\n".join(lines)
    print(table)
    readme = folder / "README.md"
    if not readme.is_file() or table not in readme.read_text(encoding="utf-8"):
        print(f"  warning: {readme} does not hold the table above; paste it in")
    return 0


if __name__ == "__main__":
    sys.exit(main())
