#!/usr/bin/env python3
"""Generate the ResNet fixtures (tiny random ResNetForImageClassification models and their reference outputs).

Run directly (or through `cargo xtask fixtures`, which runs every xtask/scripts/make_*.py):

    PY=$(../shared/tools/setup-reference-env.sh)     # or ~/.cache/mosaic-refenv/bin/python
    $PY xtask/scripts/make_resnet_fixtures.py --out fixtures

Deterministic: fixed seeds, CPU, float32, one thread. The batch norms get random affine weights and running
statistics (HF initialises them to the identity, which would hide mistakes). Outputs:

    <out>/models/tiny-resnet/                      basic blocks, embedding 8, hidden [8, 16], depths [1, 1], 3 labels,
                                                   with preprocessor_config.json (ViTImageProcessor, 24x24, ImageNet
                                                   mean/std)
    <out>/reference/tiny-resnet-bottleneck/        bottleneck blocks, hidden [16, 32], depths [2, 1], downsampling in
                                                   the first stage and in the bottleneck's first 1x1 convolution
    <out>/reference/tiny-resnet.safetensors        and tiny-resnet-bottleneck.safetensors, each:
        pixel_values (2, 3, 24, 24); eval.logits, eval.pooled (eval mode, running statistics);
        train.logits (one training-mode forward from the saved state); train.<buffer> for every running_mean,
        running_var and num_batches_tracked after that forward; train.labels and grad.<param> for every trainable
        parameter: the gradient of the mean cross-entropy of train.logits.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import ResNetConfig, ResNetForImageClassification  # noqa: E402

WRITTEN: list[Path] = []
IMAGE_SIZE = 24


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
    from safetensors.torch import load_file

    back = load_file(str(path))
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    WRITTEN.append(path)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    WRITTEN.append(path)


def meta(**extra: str) -> dict[str, str]:
    return {
        "generator": "xtask/scripts/make_resnet_fixtures.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **extra,
    }


def randomise_batch_norms(model: torch.nn.Module, gen: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            with torch.no_grad():
                module.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=gen))
                module.bias.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                module.num_batches_tracked.fill_(7)


def save_model(model: ResNetForImageClassification, folder: Path, preprocessor: dict | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # What save_pretrained writes (the non-default keys), without the version stamp so reruns are identical.
    model.config.architectures = [type(model).__name__]
    config = model.config.to_diff_dict()
    config.pop("transformers_version", None)
    write_json(folder / "config.json", config)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_safetensors_sorted(state, folder / "model.safetensors", {"format": "pt"})
    if preprocessor is not None:
        write_json(folder / "preprocessor_config.json", preprocessor)


def make(out: Path, name: str, folder: Path, config: ResNetConfig, seed: int, preprocessor: dict | None) -> None:
    torch.manual_seed(seed)
    model = ResNetForImageClassification(config).float()
    gen = torch.Generator().manual_seed(seed + 1)
    randomise_batch_norms(model, gen)
    save_model(model, folder, preprocessor)

    pixels = torch.randn(2, config.num_channels, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    labels = torch.tensor([0, config.num_labels - 1])
    ref: dict[str, torch.Tensor] = {"pixel_values": pixels, "train.labels": labels}

    model.eval()
    with torch.no_grad():
        out_eval = model(pixel_values=pixels, output_hidden_states=False)
        pooled = model.resnet(pixel_values=pixels).pooler_output.flatten(1)
    ref["eval.logits"] = out_eval.logits
    ref["eval.pooled"] = pooled

    model.train()
    model.zero_grad()
    logits = model(pixel_values=pixels).logits
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    ref["train.logits"] = logits.detach()
    ref["train.loss"] = loss.detach().reshape(1)
    for k, v in model.state_dict().items():
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            ref[f"train.{k}"] = v.detach().clone()
    for k, p in model.named_parameters():
        assert p.grad is not None, k
        ref[f"grad.{k}"] = p.grad.detach().clone()
    save_safetensors_sorted(ref, out / "reference" / f"{name}.safetensors", meta(model=name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="fixtures directory (e.g. fixtures)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out: Path = args.out

    labels = ["cat", "dog", "bird"]
    basic = ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        hidden_act="relu",
        downsample_in_first_stage=False,
        id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)},
    )
    preprocessor = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_processor_type": "ViTImageProcessor",
        "image_std": [0.229, 0.224, 0.225],
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    }
    make(out, "tiny-resnet", out / "models" / "tiny-resnet", basic, 0, preprocessor)

    bottleneck = ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[16, 32],
        depths=[2, 1],
        layer_type="bottleneck",
        hidden_act="relu",
        downsample_in_first_stage=True,
        downsample_in_bottleneck=True,
        id2label={0: "a", 1: "b"},
        label2id={"a": 0, "b": 1},
    )
    name = "tiny-resnet-bottleneck"
    make(out, name, out / "reference" / name, bottleneck, 1, None)

    for p in WRITTEN:
        print(f"wrote {p} ({p.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
