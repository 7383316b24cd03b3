#!/usr/bin/env python3
"""Generate the bundled causal-LM data: a small pretraining corpus, an instruction set, and a GPT-2 config with
a byte-level BPE tokenizer trained on the corpus (no weights: the recipes initialise the model at random).

Run through `cargo xtask fixtures`, or directly:

    ~/.cache/mosaic-refenv/bin/python xtask/scripts/make_lm_data.py --out fixtures

Everything is drawn from one seeded random stream, so the output is the same on every run. Outputs:

    <out>/data/corpus/{train,valid}.jsonl          simple English paragraphs ({"text": ...}): reviews with sentiment
                                                   words, people and the cities they live in, sums written out,
                                                   words with their plurals and capital letters, some followed by
                                                   a plainly worded question and its answer; no held-out
                                                   instruction's review or sentence appears in it
    <out>/data/instruct/{train,valid,test}.jsonl   short {"instruction", "input", "output", "type"} pairs of four
                                                   task types (classification, extraction, rewriting, arithmetic);
                                                   no (instruction, input) pair appears in two files
    <out>/models/gpt2-small-init/                  config.json (a 4-layer, 128-wide GPT-2), tokenizer.json (BPE
                                                   trained on the corpus; <|endoftext|> is bos/eos/pad as in GPT-2,
                                                   ChatML's <|im_start|>/<|im_end|> are special tokens),
                                                   tokenizer_config.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SEED = 20261122
EOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VOCAB_SIZE = 1536

CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "resid_pdrop": 0.0,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_embd": 128,
    "n_head": 4,
    "n_inner": None,
    "n_layer": 4,
    "n_positions": 128,
    "scale_attn_by_inverse_layer_idx": False,
    "scale_attn_weights": True,
    "tie_word_embeddings": True,
}

# Small sets (24 names, 24 cities, 40 nouns, sums up to 9 + 9): a few minutes of pretraining sees each often.
NAMES = [
    "Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Ines", "Jack", "Karin", "Leo", "Maria",
    "Nina", "Oscar", "Paula", "Rosa", "Sam", "Tara", "Vera", "Yuki", "Zoe", "Omar", "Theo",
]
CITIES = [
    "Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Lisbon", "Dublin", "Oslo", "Prague", "Athens",
    "Warsaw", "Tokyo", "Cairo", "Lima", "Boston", "Chicago", "Toronto", "Sydney", "Mumbai", "Seoul", "Munich",
    "Milan", "Geneva",
]
JOBS = ["baker", "teacher", "doctor", "driver", "nurse", "farmer", "painter", "cook", "pilot", "writer"]
POSITIVE = [
    "great", "wonderful", "delicious", "lovely", "excellent", "friendly", "amazing", "perfect", "fantastic",
    "pleasant", "beautiful", "fresh", "brilliant", "superb", "charming", "tasty", "helpful", "cozy",
]
NEGATIVE = [
    "terrible", "awful", "horrible", "bad", "rude", "disgusting", "boring", "dirty", "cold", "stale", "noisy",
    "slow", "poor", "dreadful", "bland", "broken", "unpleasant", "greasy",
]
THINGS = ["food", "soup", "service", "room", "film", "book", "coffee", "staff", "hotel", "pizza", "show", "bread",
          "music", "bed", "tea", "cake", "game", "meal"]
PLACES = ["restaurant", "cafe", "hotel", "cinema", "shop", "bakery", "museum", "bar"]
# Nouns and their plurals (a few irregular ones too).
NOUNS = {
    "cat": "cats", "dog": "dogs", "apple": "apples", "house": "houses", "car": "cars", "tree": "trees",
    "book": "books", "bird": "birds", "chair": "chairs", "table": "tables", "cup": "cups", "door": "doors",
    "lamp": "lamps", "boat": "boats", "shoe": "shoes", "hat": "hats", "river": "rivers", "horse": "horses",
    "flower": "flowers", "garden": "gardens", "song": "songs", "star": "stars", "box": "boxes", "bus": "buses",
    "fox": "foxes", "glass": "glasses", "dish": "dishes", "city": "cities", "baby": "babies", "story": "stories",
    "party": "parties", "child": "children", "man": "men", "woman": "women", "mouse": "mice", "foot": "feet",
    "knife": "knives", "leaf": "leaves", "potato": "potatoes", "key": "keys",
}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve"]
MAX_ADDEND = 9


# ---------------------------------------------------------------------------------------------------------------
# Pretraining corpus
# ---------------------------------------------------------------------------------------------------------------

def review(rng: random.Random) -> tuple[str, str]:
    positive = rng.random() < 0.5
    words = POSITIVE if positive else NEGATIVE
    a, b = rng.sample(words, 2)
    t1, t2 = rng.sample(THINGS, 2)
    place = rng.choice(PLACES)
    if positive:
        end = rng.choice(["I will come back.", "I loved it.", "We were very happy.", "I recommend it to everyone."])
    else:
        end = rng.choice(["I will not come back.", "I hated it.", "We were very unhappy.", "Do not go there."])
    forms = [
        f"The {t1} was {a} and the {t2} was {b}. {end}",
        f"We went to a {place}. The {t1} was {a}. {end}",
        f"What a {a} {t1}! The {t2} was {b} too. {end}",
        f"The {place} was {a}. {end}",
    ]
    return rng.choice(forms), "positive" if positive else "negative"


def person_sentence(rng: random.Random) -> tuple[str, str, str]:
    name, city, job = rng.choice(NAMES), rng.choice(CITIES), rng.choice(JOBS)
    forms = [
        f"{name} lives in {city}.",
        f"{name} lives in {city} and works as a {job}.",
        f"{name} moved to {city} last year.",
        f"{name} is a {job} in {city}.",
        f"Last summer {name} visited {city}.",
        f"{name} was born in {city}.",
    ]
    return rng.choice(forms), name, city


def corpus_paragraph(rng: random.Random, held_out: set[str]) -> str:
    """A few sentences on one theme, one per line, often with a plainly worded question and its answer alone on
    the next line (the question before or after the text).

    A word at the start of a line is a different token from the same word after a space (byte-level BPE), and
    the instructions' inputs and answers start lines: so sentences also start with cities, sums, plurals and
    capitals, and answers stand alone on their line. The questions are worded differently from the instruction
    set's. A review or person sentence that is a held-out instruction's input is never used."""
    kind = rng.randrange(5)
    sentences: list[str] = []
    count = rng.randint(2, 4)

    def quiz(question: str, text: str, answer: str) -> str:
        return rng.choice([f"{text}\n{question}\n{answer}", f"{question}\n{text}\n{answer}"])

    while len(sentences) < count:
        if kind == 0:
            text, label = review(rng)
            if text in held_out:
                continue
            sentences.append(rng.choice([
                f"{text} It was a {label} review.",
                quiz("Was the review positive or negative?", text, label),
                quiz("Is this a positive or a negative review?", text, label),
            ]))
        elif kind == 1:
            text, name, city = person_sentence(rng)
            if text in held_out:
                continue
            sentences.append(rng.choice([
                f"{text}\n{city} is where {name} lives.",
                quiz("What city does the text name?", text, city),
                quiz("Name the city.", text, city),
                quiz("What is the name of the person?", text, name),
                quiz("Name the person.", text, name),
            ]))
        elif kind == 2:
            a, b = rng.randint(0, MAX_ADDEND), rng.randint(0, MAX_ADDEND)
            sentences.append(rng.choice([
                f"{a} plus {b} is {a + b}.",
                f"If you add {a} and {b}, you get {a + b}.",
                f"{NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]} is {a + b}.",
                f"{a + b} is {a} plus {b}.",
                f"How much is {a} plus {b}?\n{a + b}",
                quiz("Sum them up.", f"{a} + {b}", str(a + b)),
            ]))
        elif kind == 3:
            noun = rng.choice(list(NOUNS))
            sentences.append(rng.choice([
                f"The plural of {noun} is {NOUNS[noun]}.",
                f"{noun} becomes {NOUNS[noun]} in the plural.",
                f"{NOUNS[noun]} is the plural of {noun}.",
                quiz("What is the plural of this word?", noun, NOUNS[noun]),
                quiz("More than one:", noun, NOUNS[noun]),
            ]))
        else:
            noun = rng.choice(list(NOUNS) + rng.sample(NAMES, 3) + rng.sample(CITIES, 3))
            sentences.append(rng.choice([
                f"In capital letters, {noun} is written {noun.upper()}.",
                f"{noun} becomes {noun.upper()} in capital letters.",
                f"{noun.upper()} is {noun} in capital letters.",
                quiz("How is this word written in capital letters?", noun, noun.upper()),
                quiz("Shout it:", noun, noun.upper()),
            ]))
    return "\n".join(sentences)


# ---------------------------------------------------------------------------------------------------------------
# Instructions
# ---------------------------------------------------------------------------------------------------------------

def classification(rng: random.Random) -> dict:
    text, label = review(rng)
    instruction = rng.choice([
        "Is this review positive or negative?",
        "Classify the sentiment of the review as positive or negative.",
        "Answer positive or negative: how does the writer feel?",
    ])
    return {"instruction": instruction, "input": text, "output": label, "type": "classification"}


def extraction(rng: random.Random) -> dict:
    text, name, city = person_sentence(rng)
    if rng.random() < 0.5:
        instruction = rng.choice(["Which city is mentioned?", "Extract the city from the sentence."])
        output = city
    else:
        instruction = rng.choice(["Who is the sentence about?", "Extract the name of the person."])
        output = name
    return {"instruction": instruction, "input": text, "output": output, "type": "extraction"}


def rewriting(rng: random.Random) -> dict:
    noun = rng.choice(list(NOUNS))
    if rng.random() < 0.5:
        instruction = rng.choice(["Write the word in capital letters.", "Rewrite the word in uppercase."])
        output = noun.upper()
    else:
        instruction = rng.choice(["Give the plural of the word.", "Rewrite the word in the plural."])
        output = NOUNS[noun]
    return {"instruction": instruction, "input": noun, "output": output, "type": "rewriting"}


def arithmetic(rng: random.Random) -> dict:
    a, b = rng.randint(0, MAX_ADDEND), rng.randint(0, MAX_ADDEND)
    if rng.random() < 0.5:
        return {"instruction": f"What is {a} plus {b}?", "input": "", "output": str(a + b), "type": "arithmetic"}
    instruction = rng.choice(["Add the two numbers.", "Compute the sum."])
    return {"instruction": instruction, "input": f"{a} + {b}", "output": str(a + b), "type": "arithmetic"}


TASKS = [classification, extraction, rewriting, arithmetic]


def instruction_splits(rng: random.Random, sizes: dict[str, int]) -> dict[str, list[dict]]:
    """Draws each split in turn, one task type after another, skipping any (instruction, input) already drawn:
    a held-out item never appears in train."""
    seen: set[tuple[str, str]] = set()
    splits = {}
    for split, n in sizes.items():
        rows: list[dict] = []
        per_task = n // len(TASKS)
        for task in TASKS:
            drawn = 0
            while drawn < per_task:
                row = task(rng)
                key = (row["instruction"], row["input"])
                if key in seen:
                    continue
                seen.add(key)
                rows.append(row)
                drawn += 1
        rng.shuffle(rows)
        splits[split] = rows
    return splits


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer and model folder
# ---------------------------------------------------------------------------------------------------------------

def train_tokenizer(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id(EOS) == 0
    return tok


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {path} ({len(rows)} rows)")


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the fixtures directory (e.g. <workspace>/fixtures)")
    args, _unknown = ap.parse_known_args()  # `cargo xtask fixtures` passes the other scripts' flags too
    out = args.out.resolve()
    rng = random.Random(SEED)

    splits = instruction_splits(rng, {"train": 400, "valid": 60, "test": 100})
    for split, rows in splits.items():
        write_jsonl(out / f"data/instruct/{split}.jsonl", rows)
    held_out = {r["input"] for split in ("valid", "test") for r in splits[split] if r["input"]}

    corpus = [corpus_paragraph(rng, held_out) for _ in range(2800)]
    write_jsonl(out / "data/corpus/train.jsonl", [{"text": t} for t in corpus[:2600]])
    write_jsonl(out / "data/corpus/valid.jsonl", [{"text": t} for t in corpus[2600:]])

    # The tokenizer sees the corpus and the instruction texts (so the ChatML layout and the instructions'
    # own words get tokens of their own).
    instruct_texts = [
        f"{IM_START}user\n{r['instruction']}\n\n{r['input']}{IM_END}\n{IM_START}assistant\n{r['output']}{IM_END}\n"
        for r in splits["train"]
    ]
    tok = train_tokenizer(corpus[:2600] + instruct_texts)
    folder = out / "models/gpt2-small-init"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    print(f"wrote {folder / 'tokenizer.json'} (vocabulary {tok.get_vocab_size()})")
    eos_id = tok.token_to_id(EOS)
    config = dict(CONFIG, vocab_size=tok.get_vocab_size(), bos_token_id=eos_id, eos_token_id=eos_id,
                  pad_token_id=eos_id)
    write_json(folder / "config.json", dict(sorted(config.items())))
    write_json(folder / "tokenizer_config.json", {
        "bos_token": EOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": EOS,
        "additional_special_tokens": [IM_START, IM_END],
        "clean_up_tokenization_spaces": False,
        "model_max_length": CONFIG["n_positions"],
        "tokenizer_class": "GPT2Tokenizer",
    })


if __name__ == "__main__":
    main()
