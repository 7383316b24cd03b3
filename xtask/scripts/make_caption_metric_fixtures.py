#!/usr/bin/env python3
"""Generate the caption and VQA metric reference fixtures with sacrebleu, pycocoevalcap and the VQA eval rules.

Run through `cargo xtask fixtures` (which runs every xtask/scripts/make_*.py), or directly:

    PY=$(../shared/tools/setup-reference-env.sh)
    $PY xtask/scripts/make_caption_metric_fixtures.py --out fixtures

Pinned versions: sacrebleu 2.6.0, pycocoevalcap 1.2 (Stanford CoreNLP 3.4.1 PTBTokenizer, needs `java` on PATH).
Everything is deterministic (no randomness; dictionaries are built in a fixed order). Output:

    <out>/reference/caption_metrics.json
        corpora:      for each small corpus, the raw hypotheses and references (`references[i]` are all the
                      references of hypothesis i; counts may differ), `sacrebleu.corpus_bleu` with its defaults
                      (13a, exp smoothing, mixed case) fed reference streams padded with None, the real
                      PTBTokenizer output of every hypothesis and reference as pycocoevalcap's `PTBTokenizer`
                      gives it (punctuation tokens removed), and pycocoevalcap `Cider().compute_score` on those
                      tokenized strings (corpus score and per-item scores)
        ptb_cases:    single captions and what pycocoevalcap's PTBTokenizer makes of them
        vqa_cases:    answers and their normalised form under the official VQA evaluation
                      (processPunctuation then processDigitArticle, transcribed below)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import sacrebleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

WRITTEN: list[Path] = []

# Each corpus: (name, hypotheses, references per hypothesis).
CORPORA: list[tuple[str, list[str], list[list[str]]]] = [
    (
        "shapes",
        [
            "a red circle on the left",
            "a blue square in the middle",
            "two green triangles at the top right",
            "a small yellow star below a big circle",
        ],
        [
            ["a red circle on the left side"],
            ["a blue square in the centre"],
            ["two green triangles in the top right corner"],
            ["a small yellow star under a big red circle"],
        ],
    ),
    (
        "multi_reference",
        [
            "a man riding a wave on a surfboard",
            "two dogs playing in the snow",
            "a plate of food with broccoli",
            "a cat sits on red sofa",
        ],
        [
            [
                "a man riding a wave on top of a surfboard",
                "a surfer rides a large wave",
                "a person on a surfboard in the ocean",
            ],
            ["two dogs play in the snow", "a pair of dogs running through snow"],
            [
                "a plate with broccoli and rice",
                "a plate of food",
                "some food on a white plate",
                "broccoli and chicken on a plate",
            ],
            # A 6-token hypothesis between references of 5 and 7 tokens: the tie goes to the shorter one.
            ["a cat on the sofa", "a cat sits on the red sofa", "the cat is on a red couch"],
        ],
    ),
    (
        "punctuation_capitals",
        [
            "A red circle, on the LEFT.",
            "Two dogs' bones and a cat's toy!",
            'It\'s a "big" (very big) box...',
            "The man can't go -- he won't; really?",
            "&quot;Quoted&quot; text &amp; more: 3,000 people at 3:30.",
        ],
        [
            ["A red circle on the left.", "a red circle, left side"],
            ["Two dogs' bones, and the cat's toy.", "two bones and a toy"],
            ["It's a big box.", 'A "very big" box (really).'],
            ["The man cannot go; he won't.", "He can't go -- really!"],
            ['"Quoted" text & more: 3,000 people at 3:30.'],
        ],
    ),
    (
        "no_higher_order_matches",
        # Unigrams match but no bigram does, so the exp smoothing sets every higher precision.
        ["circle red a left the on", "square blue middle the a in"],
        [["a red circle on the left"], ["a blue square in the middle"]],
    ),
    (
        "short_hypotheses",
        # No hypothesis has 4 tokens, so there are no 4-grams at all (sacrebleu stops at the first empty order).
        ["a red circle", "blue square"],
        [["a red circle on the left"], ["a blue square"]],
    ),
    (
        "brevity_penalty",
        ["a dog", "a cat on a mat"],
        [["a brown dog runs across the green field", "a dog in a big field"], ["a black cat sits on a mat"]],
    ),
    (
        "empty_hypothesis",
        ["", "a red circle on the left", "a blue square"],
        [["a green star"], ["a red circle on the left"], ["a blue square on the right"]],
    ),
    (
        "no_matches",
        ["zebra", "yak ox"],
        [["a red circle"], ["a blue square"]],
    ),
    (
        "single_item",
        ["a small red circle on the left side"],
        [["a red circle on the left", "a small circle to the left"]],
    ),
]

# Single captions for the PTB tokenizer: the cases `ptb_tokenize` covers.
PTB_CASES = [
    "A red circle on the left.",
    "Two dogs' bones, and a cat's toy!",
    "I can't believe it's not butter; they're \"great\" (really).",
    "The man cannot go -- he won't... Really?",
    "A T-shirt costs $5.50 & 3,000 people wear it at 3:30 p.m. in the U.S.",
    "Mr. Smith and Dr. Who met at St. Paul's colour centre.",
    "she's gonna wanna I'm we've you'll he'd gotta lemme gimme",
    "don't DON'T Don't isn't ain't shouldn't've can't've",
    "'quoted' `single` ``double'' hello-world well--done",
    "He said: \"Hi!\" ... [brackets] {braces} a < b",
    "e-mail 50% #1 a/b a+b a=b a_b a*b a|b ~x ^y",
    "A surfer rides a wave.. two dots. ?! a.b.c yes!!! no?? what?!",
    "café naïve résumé Ünïcödé",
    "10-15 minutes, 1990s, 80's kids, 5. .5 -5 +5 1,2",
    "mother-in-law re-enter -dash dash- a - b -x +x",
    "x. A. d. e a.m. u.s.a. e.g. etc. no. there.yes. co-op.",
    "it’s “quoted” ‘single’ a–b a—b wait…",
    "&quot;quoted&quot; text &amp; more &lt;b&gt; a&amp;b",
    "a,b a;b a:b well, ' '' \"\" ,, !. ?. ....",
    "o'clock ma'am dogs's abc'd people's it 'S",
    "mr. mrs. ms. dr. st. jr. sr. etc. vs. inc. co. ltd. mt. ave. ft. ok",
    "A sign that says \"STOP\".",
    "Two people (a man & a woman) walk down the street!",
    "\"he's here,\" she said.",
    "A man in a red shirt is holding a tennis racket .",
    "   ",
    "two  spaces\tand tab",
]

# Answers for the VQA normalisation.
VQA_CASES = [
    "Yes",
    "  two  ",
    "The dog.",
    "an apple",
    "a red, white and blue flag",
    "10,000",
    "3.5 feet",
    "1.5.",
    "dont know",
    "Im not sure",
    "isnt it",
    "cant",
    "somebody'd",
    "yes!",
    "left/right",
    "left / right",
    "hello-world",
    "it is (maybe) black & white",
    "none",
    "Zero",
    "ten dogs",
    "eleven",
    "u.s.a.",
    "what?!",
    "tennis_racket",
    "a@b",
    "\"quoted\"",
    "50%",
    "3:30",
    "1,000 (approx.)",
    "st. patrick's day",
    "line\nbreak\ttab",
    ". . . . . . . . . . . . . . . . . . . . . . . . . . . . . . . . . .",
    "",
]


# --------------------------------------------------------------------------------------------------------------
# The official VQA evaluation's answer normalisation, transcribed from VQAEval in
# https://github.com/GT-Vision-Lab/VQA/blob/master/PythonEvaluationTools/vqaEvaluation/vqaEval.py
# (`__init__` tables, `processPunctuation`, `processDigitArticle`, and the newline/tab/strip step of `evaluate`).
# --------------------------------------------------------------------------------------------------------------
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've",
    "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ["a", "an", "the"]
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]


def process_punctuation(in_text: str) -> str:
    out_text = in_text
    for p in PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (re.search(COMMA_STRIP, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    # The official script passes re.UNICODE (32) as the third argument, which `sub` takes as `count`.
    out_text = PERIOD_STRIP.sub("", out_text, re.UNICODE)
    return out_text


def process_digit_article(in_text: str) -> str:
    out_text = []
    for word in in_text.lower().split():
        word = MANUAL_MAP.get(word, word)
        if word not in ARTICLES:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in CONTRACTIONS:
            out_text[word_id] = CONTRACTIONS[word]
    return " ".join(out_text)


def normalize_vqa_answer(answer: str) -> str:
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


# --------------------------------------------------------------------------------------------------------------


def note(path: Path) -> None:
    WRITTEN.append(path)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    note(path)


def ptb(captions: list[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer over a list of captions, in order (one image id per caption)."""
    out = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    return [out[i][0] for i in range(len(captions))]


def bleu_reference(hyps: list[str], refs: list[list[str]]) -> dict:
    # sacrebleu takes reference *streams*; ragged reference lists are padded with None, which it drops.
    n_streams = max(len(r) for r in refs)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(n_streams)]
    b = sacrebleu.corpus_bleu(hyps, streams)
    return {
        "score": b.score,
        "precisions": list(b.precisions),
        "bp": b.bp,
        "sys_len": b.sys_len,
        "ref_len": b.ref_len,
        "counts": list(b.counts),
        "totals": list(b.totals),
    }


def corpus_reference(name: str, hyps: list[str], refs: list[list[str]]) -> dict:
    assert len(hyps) == len(refs)
    tok_hyps = ptb(hyps)
    flat_refs = [r for rs in refs for r in rs]
    tok_flat = ptb(flat_refs)
    tok_refs, k = [], 0
    for rs in refs:
        tok_refs.append(tok_flat[k : k + len(rs)])
        k += len(rs)
    gts = {i: tok_refs[i] for i in range(len(hyps))}
    res = {i: [tok_hyps[i]] for i in range(len(hyps))}
    score, scores = Cider().compute_score(gts, res)
    return {
        "name": name,
        "hypotheses": hyps,
        "references": refs,
        "bleu": bleu_reference(hyps, refs),
        "ptb_hypotheses": tok_hyps,
        "ptb_references": tok_refs,
        "cider": {"score": float(score), "per_item": [float(s) for s in scores]},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the fixtures directory (e.g. <workspace>/fixtures)")
    args, _unknown = ap.parse_known_args()  # `cargo xtask fixtures` passes the other script's flags too
    out = args.out.resolve()
    if shutil.which("java") is None:
        print("error: the PTB tokenizer needs `java` on PATH", file=sys.stderr)
        return 1
    print(f"sacrebleu {sacrebleu.__version__}, out {out}")

    corpora = [corpus_reference(name, h, r) for name, h, r in CORPORA]
    ptb_out = ptb(PTB_CASES)
    write_json(
        out / "reference" / "caption_metrics.json",
        {
            "versions": {"sacrebleu": sacrebleu.__version__, "corenlp": "3.4.1"},
            "corpora": corpora,
            "ptb_cases": [{"input": i, "output": o} for i, o in zip(PTB_CASES, ptb_out)],
            "vqa_cases": [{"input": i, "output": normalize_vqa_answer(i)} for i in VQA_CASES],
        },
    )

    print("wrote:")
    for p in WRITTEN:
        print(f"  {p.relative_to(out)!s:55s} {p.stat().st_size:>9,d} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
