#!/usr/bin/env python3
"""Generate the vision fixtures (images, tiny ViT and CLIP, their reference outputs) with PIL + transformers.

Run directly (or through `cargo xtask fixtures`, which runs every xtask/scripts/make_*.py):

    PY=$(../shared/tools/setup-reference-env.sh)
    $PY xtask/scripts/make_vision_fixtures.py --out fixtures

Deterministic: fixed seeds, CPU, float32, eager attention, one thread. Outputs:

    <out>/images/*.png|jpg                        small test images: RGB, grayscale, RGBA, palette + tRNS, JPEG
    <out>/models/tiny-clip/                       a tiny random CLIPModel with a tiny CLIP BPE tokenizer and
                                                  preprocessor_config.json (CLIPImageProcessor, 32x32)
    <out>/models/tiny-vit/                        a tiny random ViTForImageClassification (3 labels) with
                                                  preprocessor_config.json (ViTImageProcessor, 32x32, bilinear)
    <out>/reference/clip_preprocess.safetensors   CLIPImageProcessor (PIL backend) pixel values per image
    <out>/reference/vit_preprocess.safetensors    ViTImageProcessor (PIL backend) pixel values per image
    <out>/reference/clip.safetensors              tiny-clip inputs and eval-mode outputs
    <out>/reference/vit.safetensors               tiny-vit inputs and eval-mode outputs
    <out>/reference/clip_zero_shot.json           zero-shot probabilities with a prompt ensemble

transformers 5 made `CLIPImageProcessor` the torchvision backend; the PIL one (the classic behaviour: PIL
bicubic on uint8, then rescale and normalise in numpy) is `CLIPImageProcessorPil`, used here.
"""

from __future__ import annotations

import argparse
import json
import os
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
from PIL import Image  # noqa: E402

WRITTEN: list[Path] = []


def note(path: Path) -> None:
    WRITTEN.append(path)


def save_safetensors_sorted(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors with sorted keys and metadata, byte-identical across runs."""
    dtypes = {torch.float32: "F32", torch.int64: "I64", torch.uint8: "U8"}
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
    from safetensors.torch import load_file

    back = load_file(str(path))
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    note(path)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    note(path)


def meta(**extra: str) -> dict[str, str]:
    return {
        "generator": "xtask/scripts/make_vision_fixtures.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "pillow": Image.__version__,
        **extra,
    }


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------


def pattern(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients, a hard-edged square (bicubic overshoot must be clamped) and a little noise, (h, w, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 127.5 + 127.5 * np.sin(x / 3.0 + y / 5.0)
    img = np.stack([r, g, b], axis=-1)
    img[h // 4 : h // 2, w // 3 : (2 * w) // 3] = [255, 0, 255]
    img += rng.normal(0, 12, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_images(out: Path) -> list[Path]:
    d = out / "images"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    paths = []

    def save(img: Image.Image, name: str, **kw) -> None:
        p = d / name
        img.save(p, **kw)
        note(p)
        paths.append(p)

    # Landscape RGB, downsampled (48 -> 32 on the short edge) then centre-cropped.
    save(Image.fromarray(pattern(48, 64, 1), "RGB"), "landscape.png", optimize=False)
    # Grayscale portrait, upsampled (20 -> 32).
    gray = pattern(28, 20, 2).mean(axis=-1).astype(np.uint8)
    save(Image.fromarray(gray, "L"), "portrait_gray.png")
    # RGBA with alpha from 0 to 255: composited onto white.
    rgba = np.concatenate(
        [pattern(41, 37, 3), np.tile(np.linspace(0, 255, 37).astype(np.uint8), (41, 1))[..., None]], axis=-1
    )
    save(Image.fromarray(rgba, "RGBA"), "rgba.png")
    # Palette image with a transparent index (tRNS).
    pal = Image.fromarray(pattern(30, 34, 4), "RGB").quantize(colors=16, dither=Image.Dither.NONE)
    save(pal, "palette.png", transparency=3)
    # JPEGs: colour (4:2:0) and grayscale.
    save(Image.fromarray(pattern(40, 50, 5), "RGB"), "photo.jpg", quality=90)
    save(Image.fromarray(pattern(36, 24, 6).mean(axis=-1).astype(np.uint8), "L"), "gray.jpg", quality=90)
    return paths


# (width, height) targets for a 23x31 source: up, down, mixed, and cases where Pillow 13 runs the vertical pass
# first (the height shrinks by more than twice as many pixels as the width).
RESIZE_TARGETS = [(32, 32), (12, 9), (40, 17), (17, 40), (23, 11), (30, 31), (8, 30), (29, 6), (46, 62), (5, 5)]


def make_resize_reference(out: Path) -> None:
    """PIL resizes of one noisy image to many sizes with every convolution filter PIL offers."""
    rng = np.random.default_rng(7)
    src = rng.integers(0, 256, size=(31, 23, 3), dtype=np.uint8)
    src[5:12, 4:15] = [255, 255, 0]  # hard edges: overshoot must be clamped
    im = Image.fromarray(src, "RGB")
    tensors = {"source": torch.from_numpy(src.copy())}
    filters = {"lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
    for name, f in filters.items():
        for w, h in RESIZE_TARGETS:
            tensors[f"{name}/{w}x{h}"] = torch.from_numpy(np.array(im.resize((w, h), resample=f)).copy())
    save_safetensors_sorted(
        tensors,
        out / "reference" / "clip_preprocess_resize.safetensors",
        meta(note="PIL Image.resize(source, (w, h), resample) for each filter/<w>x<h>; HWC uint8"),
    )


def make_preprocess_reference(images: list[Path], processor, name: str, out: Path) -> None:
    tensors = {}
    for p in images:
        with Image.open(p) as im:
            im.load()
            px = processor(images=im, return_tensors="np")["pixel_values"][0]
            # What PIL decodes, to tell a decoder difference from a transform difference.
            tensors[f"decoded/{p.name}"] = torch.from_numpy(np.array(im.convert("RGBA"))).contiguous()
        assert px.dtype == np.float32, px.dtype
        tensors[p.name] = torch.from_numpy(np.ascontiguousarray(px))
    save_safetensors_sorted(
        tensors,
        out / "reference" / f"{name}.safetensors",
        meta(processor=type(processor).__name__, config=json.dumps(processor.to_dict(), sort_keys=True)),
    )


# ----------------------------------------------------------------------------------------------------------------
# Tiny CLIP tokenizer
# ----------------------------------------------------------------------------------------------------------------

CORPUS = """
a photo of a cat. a photo of a dog. a photo of a car. a photo of a bird. a drawing of a cat.
a blurry photo of the dog. a close-up photo of a red car. itap of a cat. a bad photo of the bird.
a sketch of a tree. there is a house with a green door. the cat sat on the mat!
two dogs are playing in the park; a man rides a bike. 3 birds fly over 12 boats?
an image of a horse. a painting of the sea. it's a small plane, isn't it? photo photos photographed
""".split("\n")


def make_clip_tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from tokenizers import Regex
    from transformers import CLIPTokenizer

    # Train merges with the same normalisation and pre-tokenisation as CLIP's tokenizer.
    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
    )
    tok.train_from_iterator([l for l in CORPUS if l.strip()], trainer=trainer)
    trained = json.loads(tok.to_str())
    merges = [m if isinstance(m, str) else " ".join(m) for m in trained["model"]["merges"]]

    # OpenAI's layout: the 256 byte symbols, the same with </w>, merge results in merge order, then the specials.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    seen = set(vocab_list)
    for m in merges:
        a, b = m.split(" ")
        t = a + b
        if t not in seen:
            seen.add(t)
            vocab_list.append(t)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(vocab_list)}
    clip_tok = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], model_max_length=32)
    clip_tok.save_pretrained(str(folder))
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        assert (folder / f).exists(), f
    return clip_tok, vocab


# ----------------------------------------------------------------------------------------------------------------
# Tiny models
# ----------------------------------------------------------------------------------------------------------------


def randomize(model: torch.nn.Module, seed: int, std: float) -> None:
    """Fresh weights with a visible scale; LayerNorm weights near 1 and biases near 0 but never exactly, so a
    loader that drops or swaps one is caught by the reference outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name == "logit_scale":
                p.fill_(2.0)
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))


def save_model(model, folder: Path) -> None:
    model.save_pretrained(str(folder))
    assert (folder / "model.safetensors").exists(), "expected a single model.safetensors"


TEXTS = ["a photo of a cat.", "a drawing of a dog", "a red car!", "itap of a bird with a green door."]
ZS_LABELS = ["cat", "dog", "car"]
ZS_TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


def make_clip(out: Path, images: list[Path]) -> None:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    folder = out / "models" / "tiny-clip"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tok, vocab = make_clip_tokenizer(folder)
    eos = vocab["<|endoftext|>"]
    bos = vocab["<|startoftext|>"]
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=32,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            attention_dropout=0.1,
            projection_dim=16,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=24,
            intermediate_size=41,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            num_channels=3,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            attention_dropout=0.1,
            projection_dim=16,
        ),
        projection_dim=16,
        logit_scale_init_value=2.6592,
    )
    torch.manual_seed(10)
    config._attn_implementation = "eager"  # transformers 5: the constructor takes no attn_implementation
    model = CLIPModel(config)
    randomize(model, 11, 0.2)
    model.eval()
    save_model(model, folder)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(str(folder))
    for f in sorted(folder.iterdir()):
        note(f)

    model = CLIPModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    processor = CLIPImageProcessorPil.from_pretrained(str(folder))
    make_preprocess_reference(images, processor, "clip_preprocess", out)

    ref_images = [images[0], images[1], images[4]]
    pixel_values = []
    for p in ref_images:
        with Image.open(p) as im:
            pixel_values.append(processor(images=im, return_tensors="pt")["pixel_values"][0])
    pixel_values = torch.stack(pixel_values).float().contiguous()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any(), "the batch must contain padding"
    with torch.no_grad():
        outp = model(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            pixel_values=pixel_values,
            output_hidden_states=True,
            return_dict=True,
        )
        # transformers 5's CLIPOutput carries the *projected* features as the towers' pooler_output: run the
        # towers on their own for the unprojected ones.
        text_out = model.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        vision_out = model.vision_model(pixel_values=pixel_values)
    tensors = {
        "input_ids": enc["input_ids"].to(torch.int64),
        "attention_mask": enc["attention_mask"].to(torch.int64),
        "pixel_values": pixel_values,
        "text_embeds": outp.text_embeds,
        "image_embeds": outp.image_embeds,
        "logits_per_image": outp.logits_per_image,
        "logits_per_text": outp.logits_per_text,
        "text_last_hidden_state": text_out.last_hidden_state,
        "text_pooler_output": text_out.pooler_output,
        "text_features": model.text_projection(text_out.pooler_output),
        "vision_last_hidden_state": vision_out.last_hidden_state,
        "vision_pooler_output": vision_out.pooler_output,
        "image_features": model.visual_projection(vision_out.pooler_output),
    }
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    save_safetensors_sorted(
        tensors,
        out / "reference" / "clip.safetensors",
        meta(
            texts=json.dumps(TEXTS),
            images=json.dumps([p.name for p in ref_images]),
            note="pixel_values = clip_preprocess of the images; text ids from tiny-clip/tokenizer.json, padded",
        ),
    )

    # Zero-shot with a prompt ensemble: mean of the normalised text embeddings over templates, renormalised.
    with torch.no_grad():
        class_embeds = []
        for label in ZS_LABELS:
            prompts = [t.format(label) for t in ZS_TEMPLATES]
            e = tok(prompts, padding=True, return_tensors="pt")
            emb = model.get_text_features(input_ids=e["input_ids"], attention_mask=e["attention_mask"])
            emb = getattr(emb, "pooler_output", emb)
            emb = emb / emb.norm(dim=-1, keepdim=True)
            mean = emb.mean(dim=0)
            class_embeds.append(mean / mean.norm())
        text = torch.stack(class_embeds)
        img = model.get_image_features(pixel_values=pixel_values[:1])
        img = getattr(img, "pooler_output", img)
        img = img / img.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * img @ text.t()
        probs = logits.softmax(dim=-1)[0]
        single = tok([f"a photo of a {l}" for l in ZS_LABELS], padding=True, return_tensors="pt")
        out1 = model(input_ids=single["input_ids"], attention_mask=single["attention_mask"], pixel_values=pixel_values[:1])
        probs_single = out1.logits_per_image.softmax(dim=-1)[0]
    write_json(
        out / "reference" / "clip_zero_shot.json",
        {
            "model": "fixtures/models/tiny-clip",
            "image": f"fixtures/images/{ref_images[0].name}",
            "pixel_values": "reference/clip.safetensors pixel_values[0]",
            "labels": ZS_LABELS,
            "ensemble": {
                "templates": ZS_TEMPLATES,
                "prompt_ids": [[tok(t.format(l))["input_ids"] for t in ZS_TEMPLATES] for l in ZS_LABELS],
                "probs": [float(x) for x in probs],
            },
            "single": {"template": "a photo of a {}", "probs": [float(x) for x in probs_single]},
            "texts": TEXTS,
            "input_ids": [tok(t)["input_ids"] for t in TEXTS],
        },
    )


VIT_LABELS = ["cat", "dog", "car"]


def make_vit(out: Path, images: list[Path]) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    folder = out / "models" / "tiny-vit"
    if folder.exists():
        shutil.rmtree(folder)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        initializer_range=0.2,
        layer_norm_eps=1e-12,
        image_size=32,
        patch_size=8,
        num_channels=3,
        qkv_bias=True,
        num_labels=len(VIT_LABELS),
        id2label={i: l for i, l in enumerate(VIT_LABELS)},
        label2id={l: i for i, l in enumerate(VIT_LABELS)},
    )
    torch.manual_seed(20)
    config._attn_implementation = "eager"
    model = ViTForImageClassification(config)
    randomize(model, 21, 0.2)
    model.eval()
    save_model(model, folder)
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32}, do_convert_rgb=True)
    processor.save_pretrained(str(folder))
    for f in sorted(folder.iterdir()):
        note(f)

    model = ViTForImageClassification.from_pretrained(str(folder), attn_implementation="eager").eval()
    processor = ViTImageProcessorPil.from_pretrained(str(folder))
    make_preprocess_reference(images, processor, "vit_preprocess", out)
    ref_images = [images[0], images[2], images[5]]
    pixel_values = []
    for p in ref_images:
        with Image.open(p) as im:
            pixel_values.append(processor(images=im, return_tensors="pt")["pixel_values"][0])
    pixel_values = torch.stack(pixel_values).float().contiguous()
    with torch.no_grad():
        o = model(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
        # ViTForImageClassification's backbone has no pooler; last_hidden_state is after the final layernorm.
        last = model.vit(pixel_values=pixel_values).last_hidden_state
    tensors = {"pixel_values": pixel_values, "logits": o.logits, "last_hidden_state": last}
    for i, h in enumerate(o.hidden_states):
        tensors[f"hidden_states_{i}"] = h
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    save_safetensors_sorted(
        tensors,
        out / "reference" / "vit.safetensors",
        meta(
            images=json.dumps([p.name for p in ref_images]),
            hidden_states="hidden_states_0 = embeddings output; hidden_states_i = output of layer i (before the "
            "final layernorm); last_hidden_state = after it",
        ),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the fixtures directory (e.g. <workspace>/fixtures)")
    args = ap.parse_args()
    out = args.out.resolve()
    torch.manual_seed(0)
    np.random.seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, pillow {Image.__version__}, out {out}")
    images = make_images(out)
    make_resize_reference(out)
    make_clip(out, images)
    make_vit(out, images)
    total = 0
    for p in WRITTEN:
        size = p.stat().st_size
        total += size
        print(f"  {p.relative_to(out)!s:50s} {size:>9,d} B")
    print(f"  total {total:,d} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
