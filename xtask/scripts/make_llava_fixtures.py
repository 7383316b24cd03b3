#!/usr/bin/env python3
"""Generate the LLaVA reference fixtures with PyTorch + Hugging Face transformers.

Run through `cargo xtask fixtures` (which runs every xtask/scripts/make_*.py, this one after make_gpt2_fixtures.py,
whose tokenizer it reuses), or directly:

    PY=$(../shared/tools/setup-reference-env.sh)
    $PY xtask/scripts/make_llava_fixtures.py --out fixtures

Everything is deterministic (fixed seeds, CPU, float32, eager attention, one thread). Two tiny random
`LlavaForConditionalGeneration` models: a CLIP vision tower (32 wide, 2 layers, 32x32 images in 8x8 patches), a
2-layer MLP projector and GPT-2 (32 wide, 2 layers, 128 positions, untied lm_head). Weights are drawn from N(0, 0.2),
LayerNorm weights from 1 + N(0, 0.1), biases from N(0, 0.1); the lm_head rows of the tokens that decode to no
printable text on their own (lone UTF-8 bytes, control bytes, `<image>`) are then scaled by 0.25, so that greedy
generations are readable. The tokenizer is tiny-gpt2's byte-level BPE plus an added special `<image>` token (id 400;
pad = eos = `<|endoftext|>`, padding side right), in a `LlavaProcessor` (CLIP image processor, PIL backend, shortest
edge 32, centre crop 32x32; num_additional_image_tokens 1; llava-1.5's USER:/ASSISTANT: chat template). Outputs:

    <out>/models/tiny-llava/         vision_feature_layer -2, select strategy "default" (CLS dropped: 16 image
                                     tokens), projector gelu. Everything via save_pretrained, so model.safetensors
                                     has transformers' file layout (`language_model.model.h.0.*`,
                                     `language_model.lm_head.weight`, `vision_tower.embeddings.*`,
                                     `multi_modal_projector.linear_{1,2}.*`). Files: config.json, model.safetensors,
                                     tokenizer.json, tokenizer_config.json, processor_config.json (the processor
                                     settings with the image processor's nested under "image_processor"; transformers
                                     5 writes no preprocessor_config.json), chat_template.jinja
    <out>/models/tiny-llava-layers/  vision_feature_layer [-3, -1] (two layers' features concatenated: a 64-wide
                                     projector input), strategy "full" (CLS kept: 17 image tokens), projector relu;
                                     the same files, but model.safetensors holds the in-memory names
                                     (`model.vision_tower.*`, `model.multi_modal_projector.*`,
                                     `model.language_model.*`, `lm_head.weight`), written with
                                     safetensors.torch.save_file; transformers loads it back with no missing or
                                     unexpected keys and identical outputs (checked here)
    <out>/reference/llava.safetensors  per model M and case C, tensors `M.C.input_ids`, `M.C.attention_mask` (i64),
                                     `M.C.pixel_values`, `M.C.logits` (f32, eval mode, the whole sequence), and
                                     `M.a.image_features` (`model.model.get_image_features(pixel_values)`, stacked)
    <out>/reference/llava.json       per model: settings and cases a (raw prompt), b (chat template), c (a batch of
                                     two, padded by the processor); cases a and b also hold greedy
                                     `generate(max_new_tokens=12, do_sample=False)` outputs (the case "d" of the
                                     brief): the new token ids and their decoded text

The reference is computed with the folders as transformers loads them back (model and `AutoProcessor`).
`xtask/scripts/check_llava_folder.py` replays cases a and b on any LLaVA folder (e.g. one mosaic saved).

`generation_config.json` is deleted from the folders, as for tiny-gpt2 (it only repeats bos/eos/pad = 0);
`generate` is called with explicit eos_token_id/pad_token_id, which llava.json records.
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

import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import AddedToken, Tokenizer  # noqa: E402
from transformers import (  # noqa: E402
    AutoProcessor,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    GPT2Config,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

try:
    transformers.utils.logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

WRITTEN: list[Path] = []
EOS = "<|endoftext|>"
IMAGE = "<image>"
N_POSITIONS = 128
MAX_NEW_TOKENS = 12

# llava-hf/llava-1.5-7b-hf's chat template (its chat_template.json), verbatim.
LLAVA_15_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
    hidden_act="quick_gelu",
)
TEXT = dict(
    n_embd=32,
    n_layer=2,
    n_head=4,
    n_positions=N_POSITIONS,
    activation_function="gelu_new",
    tie_word_embeddings=False,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    summary_first_dropout=0.0,
)

MODELS = [
    dict(
        name="tiny-llava",
        seed=26,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        weights="save_pretrained (transformers' file layout)",
    ),
    dict(
        name="tiny-llava-layers",
        seed=31,
        vision_feature_layer=[-3, -1],
        vision_feature_select_strategy="full",
        projector_hidden_act="relu",
        weights="safetensors.torch.save_file(model.state_dict()) (in-memory names)",
    ),
]

RAW_PROMPT = "<image>\nWhat is in the picture?"
CHAT_MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
BATCH_PROMPTS = ["<image>\nHi", "<image>\nIs it a dog? Answer:"]
CASE_IMAGES = {
    "a": ["images/photo.jpg"],
    "b": ["images/palette.png"],
    "c": ["images/landscape.png", "images/gray.jpg"],
}


def note(path: Path) -> None:
    WRITTEN.append(path)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    note(path)


def save_safetensors_sorted(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Byte-identical across runs (sorted keys and metadata)."""
    dtypes = {torch.float32: "F32", torch.int64: "I64"}
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


def make_tokenizer(gpt2_folder: Path) -> PreTrainedTokenizerFast:
    """tiny-gpt2's byte-level BPE with `<image>` added as a special token (id = the old vocabulary size)."""
    source = gpt2_folder / "tokenizer.json"
    if not source.exists():
        raise SystemExit(f"{source} is missing: run make_gpt2_fixtures.py first")
    tok = Tokenizer.from_file(str(source))
    assert tok.token_to_id(EOS) is not None, "tiny-gpt2's tokenizer has no <|endoftext|>"
    tok.add_special_tokens([AddedToken(IMAGE, special=True, normalized=False, lstrip=False, rstrip=False)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        model_max_length=N_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def make_processor(tok: PreTrainedTokenizerFast, strategy: str) -> LlavaProcessor:
    # transformers 5's `CLIPImageProcessor` is the torchvision backend (falling back to this one without
    # torchvision); the PIL backend is the classic behaviour, as in make_vision_fixtures.py.
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=VISION["patch_size"],
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1,
        chat_template=LLAVA_15_CHAT_TEMPLATE,
    )


def randomize(model: torch.nn.Module, seed: int, std: float = 0.2) -> None:
    """Every parameter re-drawn: weights from N(0, std), LayerNorm weights near 1 and biases near 0 but never
    exactly, so a loader that drops or swaps one is caught by the reference outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-2]  # the module's name: pre_layrnorm, layer_norm1, ln_f, ...
            is_norm = "norm" in leaf.lower() or leaf.startswith("ln_")
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))


def unreadable_tokens(tok: PreTrainedTokenizerFast) -> list[int]:
    """Ids that decode to no printable text on their own: lone bytes of multi-byte UTF-8 characters, control bytes,
    and `<image>`."""
    ids = []
    for i in range(len(tok)):
        text = tok.decode([i])
        unreadable = any(c == "\ufffd" or not (c.isprintable() or c in " \n") for c in text)
        if unreadable or i == tok.convert_tokens_to_ids(IMAGE):
            ids.append(i)
    return ids


def build_model(
    spec: dict, vocab_size: int, eos_id: int, image_id: int, quiet: list[int]
) -> LlavaForConditionalGeneration:
    torch.manual_seed(spec["seed"])
    n_patches = (VISION["image_size"] // VISION["patch_size"]) ** 2
    image_seq_length = n_patches + (1 if spec["vision_feature_select_strategy"] == "full" else 0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=GPT2Config(
            vocab_size=vocab_size, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id, **TEXT
        ),
        image_token_index=image_id,
        image_seq_length=image_seq_length,
        projector_hidden_act=spec["projector_hidden_act"],
        vision_feature_layer=spec["vision_feature_layer"],
        vision_feature_select_strategy=spec["vision_feature_select_strategy"],
        tie_word_embeddings=False,
    )
    config._attn_implementation = "eager"  # transformers 5: the constructor takes no attn_implementation
    model = LlavaForConditionalGeneration(config)
    randomize(model, spec["seed"] + 1000)
    with torch.no_grad():
        # Smaller output rows for the `quiet` tokens, so that greedy generations are readable text.
        model.lm_head.weight[quiet] *= 0.25
    assert model.lm_head.weight.data_ptr() != model.model.language_model.wte.weight.data_ptr()
    return model.eval()


def load_folder(folder: Path) -> LlavaForConditionalGeneration:
    model, info = LlavaForConditionalGeneration.from_pretrained(
        str(folder), attn_implementation="eager", output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v}
    assert not problems, f"{folder}: transformers reports {problems}"
    return model.eval()


def save_folder(spec: dict, model, processor, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(str(folder))
    if spec["name"] == "tiny-llava-layers":
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        assert any(k.startswith("model.language_model.") for k in state) and "lm_head.weight" in state
        (folder / "model.safetensors").unlink()
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    processor.save_pretrained(str(folder))
    for extra in ["special_tokens_map.json", "generation_config.json"]:
        (folder / extra).unlink(missing_ok=True)
    assert (folder / "model.safetensors").exists()
    for f in sorted(folder.iterdir()):
        note(f)


def open_image(out: Path, rel: str) -> Image.Image:
    with Image.open(out / rel) as im:
        im.load()
        return im.copy()


def forward(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"],
        ).logits.float()


def greedy(model, inputs: dict, eos_id: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"],
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            num_beams=1,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def make_cases(spec: dict, model, processor, out: Path, tensors: dict, eos_id: int, image_id: int) -> dict:
    name = spec["name"]
    rel_root = out.name  # image paths in the JSON are relative to the repository root: fixtures/images/...
    cases = {}
    for case in ["a", "b", "c"]:
        images = [open_image(out, p) for p in CASE_IMAGES[case]]
        entry: dict = {"images": [f"{rel_root}/{p}" for p in CASE_IMAGES[case]]}
        if case == "a":
            entry["kind"] = "raw prompt through the processor"
            prompts = [RAW_PROMPT]
        elif case == "b":
            entry["kind"] = "processor.apply_chat_template(messages, add_generation_prompt=True), then the processor"
            entry["messages"] = CHAT_MESSAGES
            rendered = processor.apply_chat_template(CHAT_MESSAGES, add_generation_prompt=True)
            assert isinstance(rendered, str)
            entry["rendered_prompt"] = rendered
            prompts = [rendered]
        else:
            entry["kind"] = "a batch of two images and two prompts of different lengths, padded by the processor"
            prompts = BATCH_PROMPTS
        entry["prompts"] = prompts
        if case == "c":
            inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt")
            entry["padding_side"] = processor.tokenizer.padding_side
            entry["pad_token_id"] = processor.tokenizer.pad_token_id
            mask = inputs["attention_mask"]
            assert (mask == 0).any(), "case c must hold padding"
            entry["padded_positions_note"] = (
                "logits at padded positions (attention_mask 0) are whatever transformers computes there; "
                "compare only where the mask is 1"
            )
        else:
            inputs = processor(images=images[0], text=prompts[0], return_tensors="pt")
        ids = inputs["input_ids"]
        assert ids.dtype == torch.int64 and inputs["pixel_values"].dtype == torch.float32
        entry["num_image_tokens"] = [int(n) for n in (ids == image_id).sum(-1).tolist()]
        entry["seq_len"] = int(ids.shape[1])
        entry["tokens"] = [processor.tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]
        logits = forward(model, inputs)
        names = {}
        for key, value in [
            ("input_ids", ids),
            ("attention_mask", inputs["attention_mask"].to(torch.int64)),
            ("pixel_values", inputs["pixel_values"].float()),
            ("logits", logits),
        ]:
            names[key] = f"{name}.{case}.{key}"
            tensors[names[key]] = value.detach().clone().contiguous()
        if case == "a":
            with torch.no_grad():
                feats = model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
            feats = torch.stack(list(feats)).float()
            assert feats.shape[1] == entry["num_image_tokens"][0]
            names["image_features"] = f"{name}.a.image_features"
            tensors[names["image_features"]] = feats.detach().clone().contiguous()
        entry["tensors"] = names
        # The tiny model must not be degenerate: logits spread out and differ between positions.
        assert logits.std().item() > 0.5, f"{name}.{case}: logits std {logits.std().item()}"
        assert logits[0].argmax(-1).unique().numel() > 1, f"{name}.{case}: the same argmax everywhere"
        if case in ("a", "b"):
            new = greedy(model, inputs, eos_id)
            assert len(set(new)) > 1, f"{name}.{case}: constant greedy generation {new}"
            entry["generate"] = {
                "max_new_tokens": MAX_NEW_TOKENS,
                "new_token_ids": new,
                "text": processor.tokenizer.decode(new, skip_special_tokens=True),
                "text_with_special_tokens": processor.tokenizer.decode(new, skip_special_tokens=False),
            }
        cases[case] = entry
    return cases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("fixtures"), help="the fixtures directory (default: fixtures)")
    args, _unknown = ap.parse_known_args()  # `cargo xtask fixtures` passes the other script's flags too
    out = args.out.resolve()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, out {out}")

    tensors: dict[str, torch.Tensor] = {}
    models_json = {}
    for spec in MODELS:
        tok = make_tokenizer(out / "models" / "tiny-gpt2")
        eos_id = tok.convert_tokens_to_ids(EOS)
        image_id = tok.convert_tokens_to_ids(IMAGE)
        assert image_id == len(tok) - 1 and tok.pad_token_id == eos_id
        processor = make_processor(tok, spec["vision_feature_select_strategy"])
        model = build_model(spec, len(tok), eos_id, image_id, unreadable_tokens(tok))
        folder = out / "models" / spec["name"]
        save_folder(spec, model, processor, folder)

        # The reference is what a loader of the saved folder must reproduce.
        reloaded = load_folder(folder)
        processor = AutoProcessor.from_pretrained(str(folder))
        assert isinstance(processor, LlavaProcessor), type(processor)
        assert processor.image_token_id == image_id
        cases = make_cases(spec, reloaded, processor, out, tensors, eos_id, image_id)
        # The in-memory model and the reloaded one agree exactly (no key was dropped or renamed wrongly).
        for case in cases:
            inputs = {k: tensors[f"{spec['name']}.{case}.{k}"] for k in ["input_ids", "attention_mask", "pixel_values"]}
            assert torch.equal(forward(model, inputs), tensors[f"{spec['name']}.{case}.logits"]), (spec, case)

        cfg = reloaded.config
        models_json[spec["name"]] = {
            "folder": f"{out.name}/models/{spec['name']}",
            "weights": spec["weights"],
            "files": sorted(p.name for p in folder.iterdir()),
            "image_token_id": image_id,
            "eos_token_id": eos_id,
            "pad_token_id": eos_id,
            "vocab_size": len(tok),
            "vision_feature_layer": cfg.vision_feature_layer,
            "vision_feature_select_strategy": cfg.vision_feature_select_strategy,
            "projector_hidden_act": cfg.projector_hidden_act,
            "image_seq_length": cfg.image_seq_length,
            "processor": {
                "patch_size": processor.patch_size,
                "num_additional_image_tokens": processor.num_additional_image_tokens,
                "vision_feature_select_strategy": processor.vision_feature_select_strategy,
                "image_processor": type(processor.image_processor).__name__,
                "padding_side": processor.tokenizer.padding_side,
            },
            "cases": cases,
        }
        print(f"{spec['name']}: " + ", ".join(
            f"{c} -> {cases[c]['generate']['new_token_ids']} {cases[c]['generate']['text']!r}" for c in ("a", "b")
        ))

    metadata = {
        "generator": "xtask/scripts/make_llava_fixtures.py",
        "layout": "<model>.<case>.{input_ids,attention_mask,pixel_values,logits}; <model>.a.image_features; "
        "cases described in llava.json",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    save_safetensors_sorted(tensors, out / "reference" / "llava.safetensors", metadata)
    write_json(
        out / "reference" / "llava.json",
        {
            "generator": "xtask/scripts/make_llava_fixtures.py: LlavaForConditionalGeneration (eval, float32, eager) "
            "and AutoProcessor of each folder as transformers loads it back; logits = model(input_ids, "
            "attention_mask, pixel_values).logits over the whole sequence; generate = model.generate(input_ids, "
            f"attention_mask, pixel_values, max_new_tokens={MAX_NEW_TOKENS}, do_sample=False, eos_token_id, "
            "pad_token_id), new tokens only (up to and including an EOS, if any); image_features = "
            "torch.stack(model.model.get_image_features(pixel_values).pooler_output)",
            "reference": f"{out.name}/reference/llava.safetensors",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "chat_template": LLAVA_15_CHAT_TEMPLATE,
            "models": models_json,
        },
    )

    print("wrote:")
    total = 0
    for p in WRITTEN:
        size = p.stat().st_size
        total += size
        print(f"  {p.relative_to(out)!s:55s} {size:>9,d} B")
    print(f"  total {total:,d} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
