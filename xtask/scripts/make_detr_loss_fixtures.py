#!/usr/bin/env python3
"""Generate the DETR set-loss reference fixtures with transformers' ForObjectDetectionLoss (Hungarian matching by
scipy's linear_sum_assignment, weighted cross-entropy, L1 and GIoU box losses, auxiliary outputs).

Run through `cargo xtask fixtures` (which runs every xtask/scripts/make_*.py), or directly:

    PY=$(../shared/tools/setup-reference-env.sh)     # or ~/.cache/mosaic-refenv/bin/python
    $PY xtask/scripts/make_detr_loss_fixtures.py --out fixtures

Pinned versions: torch 2.15.0, transformers 5.25.0, scipy 1.17.1. Deterministic: fixed seeds, CPU, float32, one
thread. Each case uses DetrConfig's loss defaults (class_cost 1, bbox_cost 5, giou_cost 2, eos_coefficient 0.1,
bbox_loss_coefficient 5, giou_loss_coefficient 2) with num_labels 4 and auxiliary_loss on. Outputs:

    <out>/reference/detr_loss.json
        cases: {name: {batch, queries, num_labels, aux_layers, targets: [{class_labels, boxes (cx, cy, w, h)}],
                loss, loss_dict (every entry), indices: {"final" | "aux_0" | ...: [[queries], [targets]] per image}}}
    <out>/reference/detr_loss.safetensors
        <case>.logits [B, Q, 5], <case>.pred_boxes [B, Q, 4] (sigmoid of normals), <case>.aux_<i>.logits and
        .aux_<i>.pred_boxes, and grad.<same name> for each: the gradient of the total loss.

Cases: `main` (B = 3, Q = 8, two auxiliary layers, 3, 1 and 0 target boxes: one image without objects) and `dense`
(B = 2, Q = 12, one auxiliary layer, 10 and 12 boxes: as many targets as queries).
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

import scipy  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import DetrConfig  # noqa: E402
from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss, HungarianMatcher  # noqa: E402

WRITTEN: list[Path] = []
NUM_LABELS = 4


def save_safetensors_sorted(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors with sorted keys and metadata, byte-identical across runs."""
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        assert t.dtype == torch.float32, name
        data = t.numpy().astype("<f4", copy=False).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
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


def make_targets(gen: torch.Generator, counts: list[int]) -> list[dict[str, torch.Tensor]]:
    """Per image: random labels in 0..NUM_LABELS and boxes (cx, cy in [0.2, 0.8], w, h in [0.05, 0.4])."""
    targets = []
    for n in counts:
        labels = torch.randint(0, NUM_LABELS, (n,), generator=gen)
        centers = 0.2 + 0.6 * torch.rand(n, 2, generator=gen)
        sizes = 0.05 + 0.35 * torch.rand(n, 2, generator=gen)
        targets.append({"class_labels": labels, "boxes": torch.cat([centers, sizes], dim=1)})
    return targets


def run_case(name: str, seed: int, queries: int, counts: list[int], aux_layers: int, tensors: dict) -> dict:
    gen = torch.Generator().manual_seed(seed)
    batch = len(counts)
    layers = []
    for _ in range(aux_layers + 1):
        logits = (2.0 * torch.randn(batch, queries, NUM_LABELS + 1, generator=gen)).requires_grad_(True)
        boxes = torch.sigmoid(torch.randn(batch, queries, 4, generator=gen)).requires_grad_(True)
        layers.append((logits, boxes))
    targets = make_targets(gen, counts)
    # transformers stacks every decoder layer's output, the last being the final one; aux are the others.
    names = [f"aux_{i}" for i in range(aux_layers)] + ["final"]
    config = DetrConfig(num_labels=NUM_LABELS, auxiliary_loss=True, decoder_layers=aux_layers + 1)
    outputs_class = torch.stack([lg for lg, _ in layers])
    outputs_coord = torch.stack([bx for _, bx in layers])
    final_logits, final_boxes = layers[-1]
    loss, loss_dict, _ = ForObjectDetectionLoss(
        final_logits, targets, "cpu", final_boxes, config, outputs_class=outputs_class, outputs_coord=outputs_coord
    )
    loss.backward()

    matcher = HungarianMatcher(class_cost=config.class_cost, bbox_cost=config.bbox_cost, giou_cost=config.giou_cost)
    indices = {}
    for layer_name, (lg, bx) in zip(names, layers):
        matched = matcher({"logits": lg.detach(), "pred_boxes": bx.detach()}, targets)
        indices[layer_name] = [[i.tolist(), j.tolist()] for i, j in matched]
        prefix = name if layer_name == "final" else f"{name}.{layer_name}"
        tensors[f"{prefix}.logits"] = lg.detach().clone()
        tensors[f"{prefix}.pred_boxes"] = bx.detach().clone()
        tensors[f"grad.{prefix}.logits"] = lg.grad.clone()
        tensors[f"grad.{prefix}.pred_boxes"] = bx.grad.clone()
    return {
        "batch": batch,
        "queries": queries,
        "num_labels": NUM_LABELS,
        "aux_layers": aux_layers,
        "targets": [{"class_labels": t["class_labels"].tolist(), "boxes": t["boxes"].tolist()} for t in targets],
        "loss": loss.item(),
        "loss_dict": {k: float(v) for k, v in loss_dict.items()},
        "indices": indices,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("fixtures"))
    out = parser.parse_args().out
    torch.set_num_threads(1)
    tensors: dict[str, torch.Tensor] = {}
    cases = {
        "main": run_case("main", 16, 8, [3, 1, 0], 2, tensors),
        "dense": run_case("dense", 17, 12, [10, 12], 1, tensors),
    }
    meta = {
        "generator": "xtask/scripts/make_detr_loss_fixtures.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "scipy": scipy.__version__,
    }
    write_json(out / "reference" / "detr_loss.json", {"cases": cases, "meta": meta})
    save_safetensors_sorted(tensors, out / "reference" / "detr_loss.safetensors", meta)
    for p in WRITTEN:
        print(f"wrote {p} ({p.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
