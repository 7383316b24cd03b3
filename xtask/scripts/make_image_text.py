#!/usr/bin/env python3
"""Generate the `shapes` image-text set and the tiny CLIP it is meant for, with PIL + transformers.

Run directly (or through `cargo xtask fixtures`, which runs every xtask/scripts/make_*.py):

    ~/.cache/mosaic-refenv/bin/python xtask/scripts/make_image_text.py --out fixtures

Deterministic (fixed seeds, CPU, one thread). Outputs:

    <out>/data/shapes/images/*.png          32x32 RGB: one coloured shape (5 colours x 4 shapes, jittered size
                                            and position) on a flat, varied background
    <out>/data/shapes/{train,valid,test}.jsonl
                                            400 / 80 / 80 rows {"image": "images/....png", "caption": ...,
                                            "label": "red circle"}; the same files are the classification view
                                            (label = colour + shape, 20 classes) that CoOp trains on
    <out>/models/clip-shapes/               a tiny CLIPModel (text: 2 layers, hidden 32; vision: 2 layers, hidden
                                            32, patch 4; projection 32) with a word-level CLIP BPE tokenizer that
                                            covers every caption word and "a photo of a {}." (each one token), and
                                            preprocessor_config.json (CLIPImageProcessor, 32x32). It is
                                            *pre-trained* here (700 steps, about half a minute on CPU) with CLIP's
                                            loss on other images of the same generator, captioned only coarsely
                                            ("a red circle"). It learns colours first and shapes only partly, so
                                            zero-shot classification is above chance but far from perfect (test:
                                            0.38 with "a {}", 0.31 with "a photo of a {}.", chance 0.05):
                                            fine-tuning on the detailed captions (size, position, background) and
                                            CoOp both have something to learn.

Captions always name the colour and the shape, and sometimes the size ("small", "big"), where the shape is
("on the left", "at the top", "in the middle", ...) and the background ("on a black background"). Identical
captions do occur (the metric treats each image's own row as its only positive).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 75, 220),
    "yellow": (235, 205, 30),
    "purple": (140, 55, 185),
}
SHAPES = ["circle", "square", "triangle", "cross"]
BACKGROUNDS = {"white": (245, 245, 240), "black": (15, 15, 20), "gray": (128, 128, 125)}
POSITIONS = {
    "left": ((0.28, 0.5), "on the left"),
    "right": ((0.72, 0.5), "on the right"),
    "top": ((0.5, 0.28), "at the top"),
    "bottom": ((0.5, 0.72), "at the bottom"),
    "middle": ((0.5, 0.5), "in the middle"),
}
SIZES = {"small": (0.13, 0.17), "big": (0.24, 0.3)}
SPLITS = {"train": 400, "valid": 80, "test": 80}
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


def sample(rng: random.Random, colour: str, shape: str) -> tuple[Image.Image, dict]:
    """One image and what is in it."""
    size = rng.choice(list(SIZES))
    pos = rng.choice(list(POSITIONS))
    bg = rng.choice(list(BACKGROUNDS))
    side = SIDE * SCALE
    base = BACKGROUNDS[bg]
    tint = tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in base)
    img = Image.new("RGB", (side, side), tint)
    (fx, fy), _ = POSITIONS[pos]
    lo, hi = SIZES[size]
    r = rng.uniform(lo, hi) * side
    cx = (fx + rng.uniform(-0.05, 0.05)) * side
    cy = (fy + rng.uniform(-0.05, 0.05)) * side
    fill = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in COLOURS[colour])
    draw_shape(ImageDraw.Draw(img), shape, cx, cy, r, fill)
    img = img.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    return img, {"colour": colour, "shape": shape, "size": size, "pos": pos, "bg": bg}


def caption(rng: random.Random, f: dict) -> str:
    """A detailed caption: colour and shape always, size / position / background sometimes."""
    words = ["a"]
    if rng.random() < 0.6:
        words.append(f["size"])
    words += [f["colour"], f["shape"]]
    extra = rng.random()
    if extra < 0.45:
        words.append(POSITIONS[f["pos"]][1])
    elif extra < 0.75:
        words.append(f"on a {f['bg']} background")
    elif extra < 0.9:
        words.append(POSITIONS[f["pos"]][1])
        words.append(f"on a {f['bg']} background")
    return " ".join(words)


def classes() -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES]


def make_split(rng: random.Random, n: int) -> list[tuple[Image.Image, dict, str]]:
    """`n` examples, classes balanced (cycled) and shuffled."""
    cls = classes()
    rows = []
    for i in range(n):
        colour, shape = cls[i % len(cls)]
        img, f = sample(rng, colour, shape)
        rows.append((img, f, caption(rng, f)))
    rng.shuffle(rows)
    return rows


def make_data(out: Path) -> dict[str, list]:
    root = out / "data" / "shapes"
    if root.exists():
        shutil.rmtree(root)
    (root / "images").mkdir(parents=True)
    splits = {}
    for k, (split, n) in enumerate(SPLITS.items()):
        rng = random.Random(1000 + k)
        rows = make_split(rng, n)
        lines = []
        for i, (img, f, cap) in enumerate(rows):
            name = f"images/{split}-{i:03d}.png"
            img.save(root / name, optimize=True)
            lines.append(
                json.dumps({"image": name, "caption": cap, "label": f"{f['colour']} {f['shape']}"}) + "\n"
            )
        (root / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
        splits[split] = rows
    return splits


# ----------------------------------------------------------------------------------------------------------------
# The tokenizer and the model
# ----------------------------------------------------------------------------------------------------------------


def bpe_merges(words: list[str]) -> list[str]:
    """BPE merges learned on `words` (each counted once), ties broken by the pair itself: deterministic, unlike
    the `tokenizers` trainer, whose order among equally frequent pairs changes from run to run. Runs until every
    word is one symbol."""
    seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in sorted(words)]
    merges = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for seq in seqs:
            for pair in zip(seq, seq[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(f"{best[0]} {best[1]}")
        for k, seq in enumerate(seqs):
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[k] = out


def make_tokenizer(folder: Path):
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    words = set(COLOURS) | set(SHAPES) | set(BACKGROUNDS) | set(SIZES)
    words |= {w for _, phrase in POSITIONS.values() for w in phrase.split()}
    words |= {"a", "on", "background", "photo", "of", "the", "an", "image", "picture", "shape"}
    merges = bpe_merges(sorted(words))
    # OpenAI's layout: the 256 byte symbols, the same with </w>, merge results in merge order, then the specials.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    seen = set(vocab_list)
    for m in merges:
        a, b = m.split(" ")
        if a + b not in seen:
            seen.add(a + b)
            vocab_list.append(a + b)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(vocab_list)}
    clip_tok = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], model_max_length=24)
    clip_tok.save_pretrained(str(folder))
    for w in sorted(words):
        ids = clip_tok(w, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, f"`{w}` is {len(ids)} tokens"
    return clip_tok, vocab


# ----------------------------------------------------------------------------------------------------------------
# Pre-training
# ----------------------------------------------------------------------------------------------------------------


def pretrain(model, tok, processor, steps: int) -> None:
    """CLIP's loss on coarse captions ("a red circle") of fresh images: a little pre-training."""
    rng = random.Random(7)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    cls = classes()
    for step in range(steps):
        batch = []
        for i in range(20):
            colour, shape = cls[i]
            img, _ = sample(rng, colour, shape)
            batch.append((img, f"a {colour} {shape}"))
        rng.shuffle(batch)
        pixels = processor(images=[b[0] for b in batch], return_tensors="pt")["pixel_values"]
        enc = tok([b[1] for b in batch], padding=True, return_tensors="pt")
        out = model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels, return_loss=True
        )
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=float(np.log(100.0)))
        if step % 25 == 0 or step == steps - 1:
            print(f"  pretrain step {step:4d} loss {out.loss.item():.4f}")
    model.eval()


def make_model(out: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    folder = out / "models" / "clip-shapes"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tok, vocab = make_tokenizer(folder)
    eos, bos = vocab["<|endoftext|>"], vocab["<|startoftext|>"]
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=24,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            attention_dropout=0.0,
            projection_dim=32,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=4,
            num_channels=3,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            attention_dropout=0.0,
            projection_dim=32,
        ),
        projection_dim=32,
        logit_scale_init_value=2.6592,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(20)
    model = CLIPModel(config)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pretrain(model, tok, processor, steps=700)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    assert (folder / "model.safetensors").exists()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the fixtures directory (e.g. <workspace>/fixtures)")
    args = ap.parse_args()
    out = args.out.resolve()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, out {out}")
    make_data(out)
    make_model(out)
    total = 0
    for sub in ["data/shapes", "models/clip-shapes"]:
        size = sum(p.stat().st_size for p in (out / sub).rglob("*") if p.is_file())
        total += size
        print(f"  {sub:30s} {size:>9,d} B")
    print(f"  total {total:,d} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
