"""PyTorch + transformers peer of `cargo xtask bench model`: the same cases as benches/src/model_cases.rs, one per
process, printed as one JSON line {"case", "imp", "ms", "tokens_per_s", "peak_rss_bytes"}.

Usage: python torch_model.py --case NAME --minilm MODEL_DIR --gpt2-small-config CONFIG_JSON [--quick]
"""
import argparse, json, os, resource, statistics, sys, time

import torch
from transformers import BertForSequenceClassification, BertModel, GPT2Config, GPT2LMHeadModel

CASES = {
    "minilm-train-16x64": ("minilm-train", 16, 64),
    "minilm-train-32x128": ("minilm-train", 32, 128),
    "minilm-lora-train-16x64": ("minilm-lora-train", 16, 64),
    "minilm-lora-train-32x128": ("minilm-lora-train", 32, 128),
    "minilm-infer-64x128": ("minilm-infer", 64, 128),
    "gpt2-1m-train-8x48": ("gpt2-train", 8, 48),
    "gpt2-1m-train-8x128": ("gpt2-train", 8, 128),
    "gpt2-generate-32+128": ("gpt2-generate", 32, 128),
}


def median_ms(step, warm, reps):
    for _ in range(warm):
        step()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def prepare(kind, a, b, args):
    g = torch.Generator().manual_seed(0)
    if kind == "minilm-train":
        m = BertForSequenceClassification.from_pretrained(args.minilm, num_labels=2).train()
        opt = torch.optim.AdamW(m.parameters(), lr=2e-5)
        ids = torch.randint(1000, 20000, (a, b), generator=g)
        am = torch.ones(a, b, dtype=torch.long)
        y = torch.arange(a) % 2

        def step():
            m(input_ids=ids, attention_mask=am, labels=y).loss.backward()
            opt.step()
            opt.zero_grad()
        return step
    if kind == "minilm-lora-train":
        # PEFT's LoRA, as the mosaic case: r = 8 on query and value, the classifier trained whole (SEQ_CLS).
        from peft import LoraConfig, TaskType, get_peft_model

        base = BertForSequenceClassification.from_pretrained(args.minilm, num_labels=2)
        m = get_peft_model(base, LoraConfig(r=8, lora_alpha=8, target_modules=["query", "value"],
                                            task_type=TaskType.SEQ_CLS)).train()
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-4)
        ids = torch.randint(1000, 20000, (a, b), generator=g)
        am = torch.ones(a, b, dtype=torch.long)
        y = torch.arange(a) % 2

        def step():
            m(input_ids=ids, attention_mask=am, labels=y).loss.backward()
            opt.step()
            opt.zero_grad()
        return step
    if kind == "minilm-infer":
        m = BertModel.from_pretrained(args.minilm).eval()
        ids = torch.randint(1000, 20000, (a, b), generator=g)
        am = torch.ones(a, b, dtype=torch.long)

        def step():
            with torch.no_grad():
                m(input_ids=ids, attention_mask=am)
        return step
    if kind == "gpt2-train":
        cfg = GPT2Config.from_json_file(args.gpt2_small_config)
        m = GPT2LMHeadModel(cfg).train()
        opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.01)
        ids = torch.randint(1, cfg.vocab_size, (a, b), generator=g)

        def step():
            m(input_ids=ids, labels=ids).loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
        return step
    if kind == "gpt2-generate":
        # The 124M `gpt2` shape with random weights, as the mosaic case; no EOS so that all tokens are made.
        cfg = GPT2Config(n_positions=max(1024, a + b), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        m = GPT2LMHeadModel(cfg).eval()
        ids = torch.randint(1, cfg.vocab_size, (1, a), generator=g)
        am = torch.ones(1, a, dtype=torch.long)

        def step():
            with torch.no_grad():
                out = m.generate(input_ids=ids, attention_mask=am, max_new_tokens=b, min_new_tokens=b,
                                 do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
            assert out.shape[1] == a + b, out.shape
        return step
    raise SystemExit(f"unknown case kind {kind}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--case", required=True, choices=sorted(CASES))
    p.add_argument("--minilm")
    p.add_argument("--gpt2-small-config")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    # The same thread count as mosaic's rayon pool (all logical CPUs).
    torch.set_num_threads(os.cpu_count() or 1)
    kind, a, b = CASES[args.case]
    step = prepare(kind, a, b, args)
    warm, reps = (1, 2) if args.quick else (2, 5)
    ms = median_ms(step, warm, reps)
    print(json.dumps({
        "case": args.case,
        "imp": "torch",
        "ms": ms,
        "tokens_per_s": (b / (ms / 1e3)) if kind == "gpt2-generate" else None,
        # Linux reports ru_maxrss in KiB.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    sys.exit(main())
