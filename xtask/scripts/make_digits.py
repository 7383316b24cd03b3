#!/usr/bin/env python3
"""Export scikit-learn's 8x8 handwritten digits as image folders, plus two model configs to train on them from scratch.

Run directly (or through `cargo xtask fixtures`, which runs every xtask/scripts/make_*.py):

    ~/.cache/mosaic-refenv/bin/python xtask/scripts/make_digits.py --out fixtures

Deterministic (a fixed seed for the split; PNG files written with PIL, no timestamps). Outputs:

    <out>/data/digits/{train,valid,test}/<digit>/<index>.png   1797 8-bit grayscale 8x8 PNGs, values 0..16 scaled
                                                              to 0..255; <index> is the row in `load_digits()`.
                                                              Stratified split 1257 / 270 / 270 (seed 0).
    <out>/data/digits/test.jsonl                              the test split as JSONL records {"image", "label"}
    <out>/data/digits/README.md                               source and licence (UCI optdigits via scikit-learn,
                                                              BSD-3-Clause)
    <out>/models/digits-vit/                                  config.json (ViTForImageClassification: 16x16 input,
                                                              4x4 patches, hidden 64, 4 layers, 4 heads, labels
                                                              0..9) + preprocessor_config.json (resize to 16x16
                                                              bilinear, rescale 1/255, mean/std 0.5). No weights.
    <out>/models/digits-resnet/                               config.json (ResNetForImageClassification: basic
                                                              blocks, embedding 16, stages [16, 32], depths [1, 1],
                                                              labels 0..9) + preprocessor_config.json (resize to
                                                              32x32 bilinear, rescale 1/255, mean/std 0.5). No
                                                              weights.

The PNGs are grayscale; mosaic's image pipeline converts them to RGB as PIL's `convert("RGB")` does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

SEED = 0
SPLIT_SIZES = {"valid": 270, "test": 270}
LABELS = [str(d) for d in range(10)]
GENERIC_KEYS = (
    "_name_or_path",
    "chunk_size_feed_forward",
    "dtype",
    "is_encoder_decoder",
    "output_attentions",
    "output_hidden_states",
    "problem_type",
    "return_dict",
    "transformers_version",
)

README = """# digits: scikit-learn's 8x8 handwritten digits as image folders

1797 images of the digits 0-9, 8x8 pixels, 8-bit grayscale (the original 0..16 ink counts scaled to 0..255),
exported by `xtask/scripts/make_digits.py` from `sklearn.datasets.load_digits()`.

| split   | images |
|---------|-------:|
| `train` |   1257 |
| `valid` |    270 |
| `test`  |    270 |

Layout: `<split>/<digit>/<index>.png`, `<index>` being the row of `load_digits()`. The split is stratified by digit
with a fixed seed (0). `test.jsonl` lists the test split as records (`{"image": "test/3/0003.png", "label": "3"}`,
paths relative to this folder), the form `mosaic eval --data` and `mosaic predict --input` also read.

**Source and licence.** The data is the test part of the UCI "Optical Recognition of Handwritten Digits" data set
(E. Alpaydin, C. Kaynak, 1998; https://archive.ics.uci.edu/dataset/80), as distributed with scikit-learn, which is
licensed under the BSD 3-Clause licence (Copyright (c) 2007-2024 The scikit-learn developers).
"""


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def export_digits(out: Path) -> None:
    digits = load_digits()
    images = digits.images  # (1797, 8, 8) float in 0..16
    target = digits.target
    indices = np.arange(len(target))
    rest, test = train_test_split(indices, test_size=SPLIT_SIZES["test"], stratify=target, random_state=SEED)
    train, valid = train_test_split(
        rest, test_size=SPLIT_SIZES["valid"], stratify=target[rest], random_state=SEED
    )
    root = out / "data" / "digits"
    if root.exists():
        shutil.rmtree(root)
    for split, chosen in (("train", train), ("valid", valid), ("test", test)):
        records = []
        for i in sorted(chosen.tolist()):
            pixels = np.rint(images[i] * 255.0 / 16.0).clip(0, 255).astype(np.uint8)
            folder = root / split / str(target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png", optimize=True)
            records.append({"image": f"{split}/{target[i]}/{i:04d}.png", "label": str(target[i])})
        if split == "test":
            # The same split as records (for `mosaic eval --data` and `mosaic predict --input`).
            lines = "".join(json.dumps(r) + "\n" for r in records)
            (root / "test.jsonl").write_text(lines)
        print(f"{split}: {len(chosen)} images")
    (root / "README.md").write_text(README)


def processor(size: int) -> dict:
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "ViTImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": size, "width": size},
    }


def config_dict(config: transformers.PretrainedConfig, architecture: str) -> dict:
    value = config.to_dict()
    value["architectures"] = [architecture]
    # Generic `PretrainedConfig` bookkeeping that says nothing about the architecture.
    for key in GENERIC_KEYS:
        value.pop(key, None)
    return value


def write_model_configs(out: Path) -> None:
    id2label = dict(enumerate(LABELS))
    label2id = {l: i for i, l in id2label.items()}
    vit = transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.02,
        id2label=id2label,
        label2id=label2id,
    )
    resnet = transformers.ResNetConfig(
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[16, 32],
        depths=[1, 1],
        layer_type="basic",
        hidden_act="relu",
        downsample_in_first_stage=False,
        id2label=id2label,
        label2id=label2id,
    )
    for name, config, arch, size in (
        ("digits-vit", vit, "ViTForImageClassification", 16),
        ("digits-resnet", resnet, "ResNetForImageClassification", 32),
    ):
        folder = out / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "config.json", config_dict(config, arch))
        write_json(folder / "preprocessor_config.json", processor(size))
        print(f"models/{name}: config.json, preprocessor_config.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("fixtures"))
    args = parser.parse_args()
    export_digits(args.out)
    write_model_configs(args.out)


if __name__ == "__main__":
    main()
