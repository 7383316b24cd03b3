#!/usr/bin/env python3
"""Generate the GPT-2 reference fixtures with PyTorch + Hugging Face transformers.

Run through `cargo xtask fixtures` (which runs every xtask/scripts/make_*.py), or directly:

    PY=$(../shared/tools/setup-reference-env.sh)
    $PY xtask/scripts/make_gpt2_fixtures.py --out fixtures

Everything is deterministic (fixed seeds, CPU, float32, eager attention). Outputs:

    <out>/models/tiny-gpt2/                      a tiny random GPT2LMHeadModel (config, safetensors) with a tiny
                                                 byte-level BPE tokenizer (tokenizer.json, tokenizer_config.json)
    <out>/reference/tiny-gpt2.safetensors        inputs + eval-mode logits/hidden states: a right-padded batch and a
                                                 left-padded batch (with position ids as `generate` makes them)
    <out>/reference/gpt2_generate.json           greedy `generate(do_sample=False)` outputs: single prompts, a
                                                 left-padded batch, repetition penalty, an early EOS
    <out>/reference/gpt2_logits_processors.json  temperature / top-k / top-p / repetition-penalty processors of
                                                 transformers applied to fixed scores
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
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402
from transformers.generation.logits_process import (  # noqa: E402
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

try:
    transformers.utils.logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

WRITTEN: list[Path] = []
EOS = "<|endoftext|>"

# The tokenizer's training text: a few short paragraphs, enough for a few hundred merges.
CORPUS = """
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs into the forest.
Once upon a time there was a little model that wanted to learn. It read every sentence twice and wrote them down.
Instruction: translate the word cat into French. Response: chat.
Instruction: add two and three. Response: five.
Instruction: is this review positive or negative? I loved the film. Response: positive.
Question: what is the capital of France? Answer: Paris is the capital of France.
Question: what colour is the sky? Answer: the sky is blue on a clear day.
Hello world! Hello there, general Kenobi. How are you today? I am fine, thank you.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1000.
The weather today is sunny with a light breeze; tomorrow it will rain in the morning and clear up by noon.
Transformers read text as tokens, predict the next token, and repeat until they reach the end of the text.
""".strip().splitlines()

VOCAB_SIZE = 400

TINY_CONFIG = dict(
    n_embd=32,
    n_layer=2,
    n_head=4,
    n_positions=64,
    n_inner=None,
    activation_function="gelu_new",
    layer_norm_epsilon=1e-5,
    initializer_range=0.2,
    resid_pdrop=0.1,
    embd_pdrop=0.1,
    attn_pdrop=0.1,
)

# Right-padded batch for the logits reference (different lengths, so the attention mask holds zeros).
LOGITS_TEXTS = [
    "The quick brown fox",
    "Question: what is the capital of France? Answer:",
    "Hello world! 12 + 30 = 42",
]

GENERATE_PROMPTS = [
    "The quick brown fox",
    "Instruction: add two and three. Response:",
    "Hello",
]
MAX_NEW_TOKENS = 16


def note(path: Path) -> None:
    WRITTEN.append(path)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    note(path)


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    assert tok.token_to_id(EOS) == 0
    return tok


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    # GPT-2's tokenizer: bos = eos = unk = <|endoftext|>, no pad token, no BOS added to inputs.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        model_max_length=TINY_CONFIG["n_positions"],
        clean_up_tokenization_spaces=False,
    )


def perturb_norms_and_biases(model: torch.nn.Module, seed: int) -> None:
    """GPT-2's init sets LayerNorm to (1, 0) and biases to 0; randomise them so a loader that drops or swaps
    them (or forgets a Conv1D transposition) is caught by the reference outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def build_model(vocab_size: int, eos_id: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, bos_token_id=eos_id, eos_token_id=eos_id, **TINY_CONFIG)
    try:
        model = GPT2LMHeadModel(config, attn_implementation="eager")
    except TypeError:
        config._attn_implementation = "eager"
        model = GPT2LMHeadModel(config)
    perturb_norms_and_biases(model, seed + 1000)
    model.tie_weights()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    return model.eval()


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


def pad_batch(rows: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(r) for r in rows)
    ids, mask = [], []
    for r in rows:
        pad = [pad_id] * (t - len(r))
        ids.append(pad + r if side == "left" else r + pad)
        ones, zeros = [1] * len(r), [0] * (t - len(r))
        mask.append(zeros + ones if side == "left" else ones + zeros)
    return torch.tensor(ids, dtype=torch.int64), torch.tensor(mask, dtype=torch.int64)


def generation_positions(mask: torch.Tensor) -> torch.Tensor:
    # As transformers' `_prepare_position_ids_for_generation`: count real tokens, padding at 0.
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 0)


def make_logits_reference(model, tok, eos_id: int, out: Path) -> None:
    rows = [tok(t)["input_ids"] for t in LOGITS_TEXTS]
    right_ids, right_mask = pad_batch(rows, eos_id, "right")
    left_ids, left_mask = pad_batch(rows, eos_id, "left")
    left_pos = generation_positions(left_mask)
    with torch.no_grad():
        right = model(input_ids=right_ids, attention_mask=right_mask, output_hidden_states=True)
        left = model(input_ids=left_ids, attention_mask=left_mask, position_ids=left_pos)
    tensors = {
        "input_ids": right_ids,
        "attention_mask": right_mask,
        "logits": right.logits.float(),
        "left_input_ids": left_ids,
        "left_attention_mask": left_mask,
        "left_position_ids": left_pos,
        "left_logits": left.logits.float(),
    }
    # hidden_states_0 = embeddings output; hidden_states_i = output of block i; the last one is after ln_f.
    for i, h in enumerate(right.hidden_states):
        tensors[f"hidden_states_{i}"] = h.float()
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    metadata = {
        "generator": "xtask/scripts/make_gpt2_fixtures.py",
        "texts": json.dumps(LOGITS_TEXTS, ensure_ascii=False),
        "padding": f"right (input_ids/attention_mask/logits) and left (left_*), pad id {eos_id}",
        "hidden_states": "hidden_states_0 = embeddings; hidden_states_i = block i output; the last is after ln_f",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    save_safetensors_sorted(tensors, out / "reference" / "tiny-gpt2.safetensors", metadata)


def greedy(model, rows: list[list[int]], eos_id: int, pad_id: int, **kwargs) -> list[list[int]]:
    ids, mask = pad_batch(rows, pad_id, "left")
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            num_beams=1,
            **kwargs,
        )
    new = out[:, ids.shape[1] :].tolist()
    result = []
    for row in new:
        cut = row.index(eos_id) + 1 if eos_id in row else len(row)
        result.append(row[:cut])
    return result


def make_generate_reference(model, tok, eos_id: int, out: Path) -> None:
    prompts = [tok(p)["input_ids"] for p in GENERATE_PROMPTS]
    cases = []
    singles = [greedy(model, [p], eos_id, eos_id)[0] for p in prompts]
    for text, ids, new in zip(GENERATE_PROMPTS, prompts, singles):
        cases.append({"name": f"single: {text}", "prompts": [text], "prompt_ids": [ids], "expected": [new]})
    batched = greedy(model, prompts, eos_id, eos_id)
    cases.append(
        {"name": "batched, left padded", "prompts": GENERATE_PROMPTS, "prompt_ids": prompts, "expected": batched}
    )
    penalised = greedy(model, [prompts[0]], eos_id, eos_id, repetition_penalty=1.5)
    assert penalised[0] != singles[0], "repetition penalty should change the tiny model's output"
    cases.append(
        {
            "name": "repetition penalty 1.5",
            "prompts": [GENERATE_PROMPTS[0]],
            "prompt_ids": [prompts[0]],
            "repetition_penalty": 1.5,
            "expected": penalised,
        }
    )
    # An early EOS: pretend the 5th token greedy picks for prompt 1 is the end of text.
    stop_token = singles[1][4]
    early = greedy(model, [prompts[1]], stop_token, eos_id)
    assert early[0][-1] == stop_token and len(early[0]) <= 5
    cases.append(
        {
            "name": "early eos",
            "prompts": [GENERATE_PROMPTS[1]],
            "prompt_ids": [prompts[1]],
            "eos_token_id": stop_token,
            "expected": early,
        }
    )
    write_json(
        out / "reference" / "gpt2_generate.json",
        {
            "generator": "GPT2LMHeadModel.generate(input_ids, attention_mask, do_sample=False, num_beams=1, "
            f"max_new_tokens={MAX_NEW_TOKENS}, eos_token_id, pad_token_id={eos_id}) on fixtures/models/tiny-gpt2, "
            "prompts left padded; expected = the new tokens of each row up to and including the first EOS",
            "model": "fixtures/models/tiny-gpt2",
            "max_new_tokens": MAX_NEW_TOKENS,
            "eos_token_id": eos_id,
            "pad_token_id": eos_id,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cases": cases,
        },
    )


def make_processor_reference(out: Path) -> None:
    gen = torch.Generator().manual_seed(7)
    vocab = 50
    scores = torch.randn((1, vocab), generator=gen) * 3.0
    history = torch.tensor([[3, 7, 7, 11, 20, 42]])

    def as_list(t: torch.Tensor) -> list:
        return [None if v == float("-inf") else float(v) for v in t[0].tolist()]

    cases = []

    def case(name: str, processors: list, **params) -> None:
        s = scores.clone()
        for p in processors:
            s = p(history, s)
        cases.append({"name": name, **params, "expected": as_list(s)})

    case("temperature 0.7", [TemperatureLogitsWarper(0.7)], temperature=0.7)
    case("top_k 5", [TopKLogitsWarper(5)], top_k=5)
    case("top_k larger than the vocabulary", [TopKLogitsWarper(500)], top_k=500)
    case("top_p 0.9", [TopPLogitsWarper(0.9)], top_p=0.9)
    case("top_p 0.3", [TopPLogitsWarper(0.3)], top_p=0.3)
    case("top_p 0.0001 keeps one", [TopPLogitsWarper(0.0001)], top_p=0.0001)
    case("repetition penalty 1.3", [RepetitionPenaltyLogitsProcessor(1.3)], repetition_penalty=1.3)
    case(
        "penalty, temperature, top_k, top_p",
        [RepetitionPenaltyLogitsProcessor(1.2), TemperatureLogitsWarper(1.5), TopKLogitsWarper(10), TopPLogitsWarper(0.8)],
        repetition_penalty=1.2,
        temperature=1.5,
        top_k=10,
        top_p=0.8,
    )
    write_json(
        out / "reference" / "gpt2_logits_processors.json",
        {
            "generator": "transformers.generation.logits_process processors in generate's order (repetition "
            "penalty, temperature, top-k, top-p); -inf written as null",
            "scores": as_list(scores),
            "history": history[0].tolist(),
            "transformers": transformers.__version__,
            "cases": cases,
        },
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the fixtures directory (e.g. <workspace>/fixtures)")
    args, _unknown = ap.parse_known_args()  # `cargo xtask fixtures` passes the other script's flags too
    out = args.out.resolve()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, out {out}")

    raw_tok = train_tokenizer()
    tok = wrap_tokenizer(raw_tok)
    eos_id = raw_tok.token_to_id(EOS)
    folder = out / "models" / "tiny-gpt2"
    if folder.exists():
        shutil.rmtree(folder)
    model = build_model(raw_tok.get_vocab_size(), eos_id, seed=11)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    for extra in ["special_tokens_map.json", "generation_config.json"]:
        # Keep the folder to what mosaic reads; generation_config.json only repeats bos/eos from config.json.
        (folder / extra).unlink(missing_ok=True)
    assert (folder / "model.safetensors").exists()
    for f in sorted(folder.iterdir()):
        note(f)

    # The reference is what a loader of the saved folder must reproduce.
    reloaded = GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    make_logits_reference(reloaded, tok, eos_id, out)
    make_generate_reference(reloaded, tok, eos_id, out)
    make_processor_reference(out)

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
