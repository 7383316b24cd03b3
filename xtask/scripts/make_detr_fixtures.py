#!/usr/bin/env python3
"""Generate the DETR fixtures (tiny random DetrForObjectDetection models with an HF ResNet backbone, and their
reference outputs) with PyTorch + Hugging Face transformers.

Written with torch 2.15.0 and transformers 5.25.0 (the versions are recorded in the outputs' metadata). Run
directly (or through `cargo xtask fixtures`, which runs every xtask/scripts/make_*.py):

    PY=$(../shared/tools/setup-reference-env.sh)     # or ~/.cache/mosaic-refenv/bin/python
    $PY xtask/scripts/make_detr_fixtures.py --out fixtures

Deterministic: fixed seeds, CPU, float32, eager attention, one thread. `use_timm_backbone = false`. Every
parameter is redrawn (linear weights N(0, 0.3²), the classifier's N(0, 0.5²), biases N(0, 0.1²), layer norms 1 + N(0, 0.1²), query embeddings
N(0, 1)) and every frozen batch norm gets random weight, bias and running statistics, so that nothing sits at
an identity that would hide a mistake; the "no object" bias is then shifted until threshold 0.5 keeps some
queries and drops others, no score within 0.002 of it. Folders are written by save_pretrained (transformers' file layout:
`model.backbone.conv_encoder.model.*`, `self_attn.out_proj`, `layers.N.fc1`), then rewritten with sorted keys.

    <out>/models/tiny-detr/               basic ResNet (embedding 8, hidden [8, 16], depths [1, 1],
                                          out_features [stage2]); d_model 16, 2 + 2 layers, 2 heads, ffn 32,
                                          6 queries, 3 labels, auxiliary_loss true, relu
    <out>/reference/tiny-detr-bottleneck/ bottleneck ResNet (hidden [16, 32], out_features [stage1]: the
                                          transformer reads the first stage), d_model 16, 1 encoder + 2 decoder
                                          layers, 4 heads, 5 queries, 2 labels, auxiliary_loss false, gelu
    <out>/reference/detr.safetensors      for each model M: M.pixel_values (2, 3, 64, 56): two images of
                                          (40, 56) and (64, 48) pixels padded with zeros into one batch;
                                          M.pixel_mask (2, 64, 56) int64; M.logits, M.pred_boxes,
                                          M.last_hidden_state, M.encoder_last_hidden_state (eval mode) and
                                          M.aux.{i}.logits / M.aux.{i}.pred_boxes for each auxiliary output
    <out>/reference/detr.json             per model: image sizes, number of auxiliary outputs, and
                                          DetrImageProcessor.post_process_object_detection at thresholds 0 and 0.5
                                          with the images' (height, width) as target sizes: scores, labels, boxes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig  # noqa: E402
from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil  # noqa: E402

try:
    transformers.utils.logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

WRITTEN: list[Path] = []
IMAGE_SIZES = [(40, 56), (64, 48)]
THRESHOLDS = [0.0, 0.5]
# The smallest distance of a score from the 0.5 threshold (see separate_scores).
MARGIN = 0.002


def save_safetensors_sorted(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors with sorted keys and metadata, byte-identical across runs."""
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
    back = load_file(str(path))
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    WRITTEN.append(path)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    WRITTEN.append(path)


def meta(**extra: str) -> dict[str, str]:
    return {
        "generator": "xtask/scripts/make_detr_fixtures.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **extra,
    }


def randomise(model: DetrForObjectDetection, gen: torch.Generator) -> None:
    """Redraws every parameter and every frozen batch norm buffer (see the module docstring)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("query_position_embeddings.weight"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif "layer_norm" in name or "layernorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name == "class_labels_classifier.weight":
                # Logits spread so that some queries pass a 0.5 threshold and others do not.
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif "backbone" in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        frozen = 0
        for module in model.modules():
            if type(module).__name__ == "DetrFrozenBatchNorm2d":
                c = module.weight.shape[0]
                module.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=gen))
                module.bias.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                frozen += 1
        assert frozen > 0, "no DetrFrozenBatchNorm2d found"


def save_folder(model: DetrForObjectDetection, folder: Path) -> None:
    """save_pretrained (for transformers' file layout), then the files rewritten deterministically."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        config = json.loads((Path(tmp) / "config.json").read_text(encoding="utf-8"))
        state = load_file(str(Path(tmp) / "model.safetensors"))
    config.pop("transformers_version", None)
    if folder.exists():
        shutil.rmtree(folder)
    write_json(folder / "config.json", config)
    save_safetensors_sorted(state, folder / "model.safetensors", {"format": "pt"})
    assert any(k.startswith("model.backbone.conv_encoder.model.") for k in state), "unexpected file layout"


def inputs(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images of IMAGE_SIZES padded (bottom/right, zeros) into one batch, and the pixel mask."""
    h = max(s[0] for s in IMAGE_SIZES)
    w = max(s[1] for s in IMAGE_SIZES)
    pixels = torch.zeros(len(IMAGE_SIZES), 3, h, w)
    mask = torch.zeros(len(IMAGE_SIZES), h, w, dtype=torch.int64)
    for i, (ih, iw) in enumerate(IMAGE_SIZES):
        pixels[i, :, :ih, :iw] = torch.randn(3, ih, iw, generator=gen)
        mask[i, :ih, :iw] = 1
    return pixels, mask


def separate_scores(model: DetrForObjectDetection, pixels: torch.Tensor, mask: torch.Tensor) -> None:
    """Shifts the "no object" bias until the 0.5 threshold keeps some queries and drops others, every score at
    least MARGIN away from it, so that a 1e-4 difference cannot flip a detection."""
    bias = model.class_labels_classifier.bias
    start = bias[-1].item()
    for step in range(2000):
        delta = (step // 2 + 1) * 0.005 * (1 if step % 2 == 0 else -1) if step else 0.0
        with torch.no_grad():
            bias[-1] = start + delta
            prob = model(pixel_values=pixels, pixel_mask=mask).logits.softmax(-1)[..., :-1].max(-1).values
        above = int((prob > 0.5).sum())
        if 0 < above < prob.numel() and (prob - 0.5).abs().min().item() > MARGIN:
            return
    raise AssertionError("no 'no object' bias separates the scores around 0.5")


def make(name: str, folder: Path, config: DetrConfig, seed: int, ref: dict, spec: dict) -> None:
    torch.manual_seed(seed)
    model = DetrForObjectDetection(config).float()
    gen = torch.Generator().manual_seed(seed + 1)
    randomise(model, gen)
    model.eval()
    pixels, mask = inputs(gen)
    separate_scores(model, pixels, mask)
    save_folder(model, folder)

    # Reload what was written, so the references are those of the committed folder.
    model, info = DetrForObjectDetection.from_pretrained(str(folder), output_loading_info=True)
    assert not any(info.values()), f"{name}: loading info {info}"
    model.eval()
    with torch.no_grad():
        out = model(pixel_values=pixels, pixel_mask=mask)
        base = model.model(pixel_values=pixels, pixel_mask=mask)
    ref[f"{name}.pixel_values"] = pixels
    ref[f"{name}.pixel_mask"] = mask
    ref[f"{name}.logits"] = out.logits
    ref[f"{name}.pred_boxes"] = out.pred_boxes
    ref[f"{name}.last_hidden_state"] = out.last_hidden_state
    ref[f"{name}.encoder_last_hidden_state"] = out.encoder_last_hidden_state
    aux = 0
    if config.auxiliary_loss:
        # As DetrForObjectDetection.forward and _set_aux_loss compute them: the heads on the stacked layer-normed
        # decoder states, every layer but the last.
        with torch.no_grad():
            inter = base.intermediate_hidden_states
            classes = model.class_labels_classifier(inter)
            boxes = model.bbox_predictor(inter).sigmoid()
        for i in range(inter.shape[0] - 1):
            ref[f"{name}.aux.{i}.logits"] = classes[i]
            ref[f"{name}.aux.{i}.pred_boxes"] = boxes[i]
            aux += 1
    processor = DetrImageProcessorPil()
    post = {}
    for threshold in THRESHOLDS:
        results = processor.post_process_object_detection(out, threshold=threshold, target_sizes=IMAGE_SIZES)
        post[str(threshold)] = [
            {"scores": r["scores"].tolist(), "labels": r["labels"].tolist(), "boxes": r["boxes"].tolist()}
            for r in results
        ]
    kept = [len(r["scores"]) for r in post["0.5"]]
    assert 0 < sum(kept) < len(IMAGE_SIZES) * config.num_queries, f"{name}: threshold 0.5 keeps {kept}"
    spec[name] = {
        "image_sizes": [list(s) for s in IMAGE_SIZES],
        "num_aux": aux,
        "num_queries": config.num_queries,
        "num_labels": config.num_labels,
        "post_process": post,
    }


def config_for(backbone: ResNetConfig, labels: list[str], **kw) -> DetrConfig:
    return DetrConfig(
        backbone_config=backbone,
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)},
        **kw,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="fixtures directory (e.g. fixtures)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out: Path = args.out
    ref: dict[str, torch.Tensor] = {}
    spec: dict = {}

    basic = ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        hidden_act="relu",
        out_features=["stage2"],
    )
    tiny = config_for(
        basic,
        ["circle", "square", "triangle"],
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=6,
        auxiliary_loss=True,
        activation_function="relu",
    )
    make("tiny-detr", out / "models" / "tiny-detr", tiny, 0, ref, spec)

    bottleneck = ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[16, 32],
        depths=[1, 1],
        layer_type="bottleneck",
        hidden_act="relu",
        downsample_in_first_stage=True,
        out_features=["stage1"],
    )
    other = config_for(
        bottleneck,
        ["a", "b"],
        d_model=16,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=24,
        decoder_ffn_dim=24,
        num_queries=5,
        auxiliary_loss=False,
        activation_function="gelu",
    )
    make("tiny-detr-bottleneck", out / "reference" / "tiny-detr-bottleneck", other, 10, ref, spec)

    save_safetensors_sorted(ref, out / "reference" / "detr.safetensors", meta())
    write_json(out / "reference" / "detr.json", {"models": spec, **meta()})
    for p in WRITTEN:
        print(f"wrote {p} ({p.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
