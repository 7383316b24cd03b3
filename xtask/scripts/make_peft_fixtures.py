#!/usr/bin/env python3
"""Make LoRA adapters with Hugging Face PEFT for the tiny fixture models, and their expected outputs.

Run through `cargo xtask fixtures` (after make_fixtures.py and make_gpt2_fixtures.py made the base models), or:

    PY=$(../shared/tools/setup-reference-env.sh)
    $PY xtask/scripts/make_peft_fixtures.py --out fixtures

Outputs (deterministic: fixed seeds, CPU, float32, eager attention):

    <out>/peft/bert-cls-lora/     PEFT LoRA on tiny-bert-cls (SEQ_CLS; query, value, attention output dense;
                                  the classifier saved whole), B drawn at random so the update is not zero
    <out>/peft/gpt2-lora/         PEFT LoRA on tiny-gpt2 (CAUSAL_LM; c_attn and both c_proj, Conv1D
                                  fan_in_fan_out, rsLoRA), B random
    <out>/peft/bert-cls-prompt-tuning/  PEFT prompt tuning on tiny-bert-cls (SEQ_CLS, 3 virtual tokens; the
                                  classifier saved whole, randomised)
    <out>/peft/gpt2-dora/         PEFT DoRA on tiny-gpt2 (c_attn, c_fc; B and magnitudes randomised)
    <out>/peft/gpt2-prompt-tuning/  PEFT prompt tuning on tiny-gpt2 (4 virtual tokens, random init)
    <out>/peft/gpt2-prefix-tuning/  PEFT prefix tuning on tiny-gpt2 (4 virtual tokens, trained through the
                                  prefix_projection MLP, so saved projected)
    <out>/peft/expected.json      for each adapter: the input ids, the logits of the adapted model, and for GPT-2
                                  greedy `generate` tokens of the adapted model and of the merged one
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import warnings
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from peft import (  # noqa: E402
    LoraConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptTuningConfig,
    TaskType,
    get_peft_model,
)
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

BERT_IDS = [[2, 10, 4, 7, 3], [2, 5, 9, 11, 3]]
GPT2_IDS = [[5, 17, 42, 99, 7, 120]]
NEW_TOKENS = 8
# What `mosaic generate --prompt` gets in the CLI tests (tokenized by the tiny GPT-2's tokenizer, as PEFT users do).
TEXT_PROMPT = "the cat sat on the mat"


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Gives every lora_B (and every saved head copy) random values, so the adapter changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "lora_magnitude_vector" in name:
                p.mul_(1.0 + 0.3 * torch.randn(p.shape, generator=g))


def save(model, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)


def reload(cls, models: Path, name: str, out: Path):
    """What a user does: a fresh base model, the adapter loaded from its folder (eval mode)."""
    base = cls.from_pretrained(models / name, attn_implementation="eager")
    return PeftModel.from_pretrained(base, out).eval()


def greedy(model, ids: list[list[int]]) -> list[int]:
    x = torch.tensor(ids)
    y = model.generate(
        input_ids=x,
        attention_mask=torch.ones_like(x),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=0,
    )
    return y[0, x.shape[1]:].tolist()


def bert(models: Path, out: Path) -> dict:
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(models / "tiny-bert-cls", attn_implementation="eager")
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["query", "value", "attention.output.dense"],
        task_type=TaskType.SEQ_CLS,
    )
    model = get_peft_model(base, cfg)
    randomise(model, 1)
    model.eval()
    save(model, out)
    loaded = reload(AutoModelForSequenceClassification, models, "tiny-bert-cls", out)
    with torch.no_grad():
        logits = loaded(input_ids=torch.tensor(BERT_IDS)).logits
    return {"input_ids": BERT_IDS, "logits": logits.tolist()}


def bert_prompt_tuning(models: Path, out: Path) -> dict:
    """Prompt tuning with a classification head (SEQ_CLS: the classifier trains and is saved whole; the pooler
    reads the first virtual token)."""
    torch.manual_seed(4)
    base = AutoModelForSequenceClassification.from_pretrained(models / "tiny-bert-cls", attn_implementation="eager")
    model = get_peft_model(base, PromptTuningConfig(num_virtual_tokens=3, task_type=TaskType.SEQ_CLS))
    randomise(model, 5)
    model.eval()
    save(model, out)
    loaded = reload(AutoModelForSequenceClassification, models, "tiny-bert-cls", out)
    with torch.no_grad():
        x = torch.tensor(BERT_IDS)
        logits = loaded(input_ids=x, attention_mask=torch.ones_like(x)).logits
    return {"input_ids": BERT_IDS, "logits": logits.tolist()}


def gpt2_dora(models: Path, out: Path) -> dict:
    """DoRA on GPT-2's Conv1D projections (c_attn, c_fc), B and the magnitudes randomised."""
    torch.manual_seed(6)
    base = AutoModelForCausalLM.from_pretrained(models / "tiny-gpt2", attn_implementation="eager")
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, use_dora=True,
                     task_type=TaskType.CAUSAL_LM)
    model = get_peft_model(base, cfg)
    randomise(model, 7)
    model.eval()
    save(model, out)
    loaded = reload(AutoModelForCausalLM, models, "tiny-gpt2", out)
    with torch.no_grad():
        logits = loaded(input_ids=torch.tensor(GPT2_IDS)).logits
        merged = loaded.merge_and_unload()
        merged_logits = merged(input_ids=torch.tensor(GPT2_IDS)).logits
    return {"input_ids": GPT2_IDS, "logits": logits.tolist(), "merged_logits": merged_logits.tolist()}


def gpt2(models: Path, out: Path) -> dict:
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(models / "tiny-gpt2", attn_implementation="eager")
    cfg = LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=["c_attn", "c_proj"],
        fan_in_fan_out=True,
        use_rslora=True,
        task_type=TaskType.CAUSAL_LM,
    )
    model = get_peft_model(base, cfg)
    randomise(model, 2)
    model.eval()
    save(model, out)
    loaded = reload(AutoModelForCausalLM, models, "tiny-gpt2", out)
    with torch.no_grad():
        logits = loaded(input_ids=torch.tensor(GPT2_IDS)).logits
        tokens = greedy(loaded, GPT2_IDS)
        text_ids = [AutoTokenizer.from_pretrained(models / "tiny-gpt2")(TEXT_PROMPT)["input_ids"]]
        text_tokens = greedy(loaded, text_ids)
        merged = loaded.merge_and_unload()
        merged_tokens = greedy(merged, GPT2_IDS)
    return {
        "input_ids": GPT2_IDS,
        "logits": logits.tolist(),
        "generated": tokens,
        "merged_generated": merged_tokens,
        "text_prompt": TEXT_PROMPT,
        "text_generated": text_tokens,
    }


def greedy_by_forward(model, ids: list[list[int]]) -> list[int]:
    """Greedy decoding by running the whole sequence through the PEFT model's forward at every step."""
    x = torch.tensor(ids)
    for _ in range(NEW_TOKENS):
        nxt = model(input_ids=x).logits[:, -1].argmax(-1, keepdim=True)
        x = torch.cat([x, nxt], dim=1)
    return x[0, len(ids[0]):].tolist()


def gpt2_prompt_learning(models: Path, out: Path, cfg) -> dict:
    """Prompt or prefix tuning: logits of the real tokens (PEFT's prompt-tuning output also covers the virtual
    ones, which come first) and greedy tokens. `generated` is PEFT's `generate`, `greedy_forward` greedy decoding
    through PEFT's forward; with peft 0.21 + transformers 5.24 they differ (PEFT's generate with a prompt-learning
    cache feeds the prefill step only part of the prompt), and mosaic's cached generation gives the latter."""
    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(models / "tiny-gpt2", attn_implementation="eager")
    model = get_peft_model(base, cfg).eval()
    save(model, out)
    loaded = reload(AutoModelForCausalLM, models, "tiny-gpt2", out)
    with torch.no_grad():
        logits = loaded(input_ids=torch.tensor(GPT2_IDS)).logits
        logits = logits[:, -len(GPT2_IDS[0]):]
        tokens = greedy(loaded, GPT2_IDS)
        by_forward = greedy_by_forward(loaded, GPT2_IDS)
        text_ids = [AutoTokenizer.from_pretrained(models / "tiny-gpt2")(TEXT_PROMPT)["input_ids"]]
        text_by_forward = greedy_by_forward(loaded, text_ids)
    return {
        "input_ids": GPT2_IDS,
        "logits": logits.tolist(),
        "generated": tokens,
        "greedy_forward": by_forward,
        "text_prompt": TEXT_PROMPT,
        "text_greedy_forward": text_by_forward,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("fixtures"))
    args = ap.parse_args()
    models = args.out / "models"
    peft_dir = args.out / "peft"
    peft_dir.mkdir(parents=True, exist_ok=True)
    expected = {
        "bert-cls-lora": bert(models, peft_dir / "bert-cls-lora"),
        "bert-cls-prompt-tuning": bert_prompt_tuning(models, peft_dir / "bert-cls-prompt-tuning"),
        "gpt2-lora": gpt2(models, peft_dir / "gpt2-lora"),
        "gpt2-dora": gpt2_dora(models, peft_dir / "gpt2-dora"),
        "gpt2-prompt-tuning": gpt2_prompt_learning(
            models,
            peft_dir / "gpt2-prompt-tuning",
            PromptTuningConfig(num_virtual_tokens=4, task_type=TaskType.CAUSAL_LM),
        ),
        "gpt2-prefix-tuning": gpt2_prompt_learning(
            models,
            peft_dir / "gpt2-prefix-tuning",
            PrefixTuningConfig(
                num_virtual_tokens=4,
                prefix_projection=True,
                encoder_hidden_size=16,
                task_type=TaskType.CAUSAL_LM,
            ),
        ),
    }
    (peft_dir / "expected.json").write_text(json.dumps(expected) + "\n")
    print(f"wrote {peft_dir}")


if __name__ == "__main__":
    main()
