mod common;

use common::{CLS, MASK, PAD, SEP, UNK, id, tokenizer, tokenizer_json};
use mosaic_data::{
    DataError, Dataset, Encoder, IGNORE_INDEX, LabelSet, Target, TextDataset, TextExample,
    TokenDataset, TokenExample, align_labels, mask_position, mask_positions, pad_id,
    word_token_ids,
};

const X: i64 = IGNORE_INDEX;

fn text_data(texts: &[&str]) -> TextDataset {
    Dataset::new(
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| TextExample {
                text: t.to_string(),
                label: i % 2,
            })
            .collect(),
        LabelSet::new(["neg", "pos"]).unwrap(),
    )
}

fn token_data(rows: &[(&[&str], &[usize])]) -> TokenDataset {
    Dataset::new(
        rows.iter()
            .map(|(w, t)| TokenExample {
                tokens: w.iter().map(|s| s.to_string()).collect(),
                tags: t.to_vec(),
            })
            .collect(),
        LabelSet::new(["B-LOC", "B-PER", "I-LOC", "O"]).unwrap(),
    )
}

#[test]
fn load_from_file_and_error_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, tokenizer_json().to_string()).unwrap();
    let enc = Encoder::from_file(&path).unwrap();
    assert_eq!(enc.source(), Some(path.as_path()));
    assert_eq!(enc.pad_id(), PAD);
    assert_eq!(enc.special_tokens(), 2);
    assert_eq!(enc.token_id("[MASK]").unwrap(), MASK);
    assert!(matches!(
        enc.token_id("<mask>"),
        Err(DataError::UnknownToken(_))
    ));

    let missing = dir.path().join("nope/tokenizer.json");
    let e = Encoder::from_file(&missing).unwrap_err();
    assert!(matches!(&e, DataError::TokenizerLoad { path, .. } if *path == missing));
    assert!(e.to_string().contains("nope/tokenizer.json"), "{e}");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    let e = Encoder::from_file(&bad).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot load tokenizer", bad.display()))
    );
}

#[test]
fn encode_text_dataset_with_special_tokens_and_truncation() {
    let enc = Encoder::new(tokenizer()).unwrap();
    let data = text_data(&[
        "The movie was great.",
        "it was bad",
        "the the the the the the the",
    ]);
    let out = enc.encode_text_dataset(&data, 6).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out.max_len, 6);
    let the = id("the");
    assert_eq!(
        out.examples[0].input_ids,
        vec![CLS, the, id("movie"), id("was"), id("great"), SEP]
    );
    assert_eq!(
        out.examples[1].input_ids,
        vec![CLS, id("it"), id("was"), id("bad"), SEP]
    );
    assert_eq!(
        out.examples[2].input_ids,
        vec![CLS, the, the, the, the, SEP]
    );
    // The first one (".") and the third are cut.
    assert_eq!(out.truncated, 2);
    assert_eq!(out.examples[0].target, Target::Class(0));
    assert_eq!(out.examples[1].target, Target::Class(1));
    assert_eq!(out.examples[1].token_type_ids, vec![0; 5]);
    assert_eq!(out.lengths(), vec![6, 5, 6]);

    let out = enc.encode_text_dataset(&data, 512).unwrap();
    assert_eq!(out.truncated, 0);
    assert_eq!(out.examples[0].input_ids.len(), 7);

    let e = enc.encode_text_dataset(&data, 2).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::InvalidMaxLen {
                max_len: 2,
                special: 2
            }
        ),
        "{e:?}"
    );
}

#[test]
fn parallel_batch_encoding_matches_one_by_one() {
    let enc = Encoder::new(tokenizer()).unwrap();
    let words = [
        "the",
        "movie",
        "playing",
        "john",
        "unbelievable",
        "zzz",
        "new",
        "york",
        ".",
    ];
    let texts: Vec<String> = (0..500)
        .map(|i| {
            (0..(i % 13 + 1))
                .map(|j| words[(i * 7 + j * 3) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let (batch, truncated) = enc.encode_texts(&texts, 10).unwrap();
    let t = enc.tokenizer();
    let mut expected_truncated = 0;
    for (text, e) in texts.iter().zip(&batch) {
        let full = t.encode(text.as_str(), true).unwrap();
        if full.len() > 10 {
            expected_truncated += 1;
            assert_eq!(e.len(), 10);
            assert_eq!(&e.get_ids()[..9], &full.get_ids()[..9]);
            assert_eq!(e.get_ids()[9], SEP);
        } else {
            assert_eq!(e.get_ids(), full.get_ids());
        }
    }
    assert_eq!(truncated, expected_truncated);
    assert!(truncated > 0);
}

#[test]
fn subword_tags_are_aligned_with_ignore_index() {
    let enc = Encoder::new(tokenizer()).unwrap();
    // John(B-PER) playing(O) unbelievable(O) in(O) New(B-LOC) Yorker(I-LOC)
    let data = token_data(&[(
        &["John", "playing", "unbelievable", "in", "New", "Yorker"],
        &[1, 3, 3, 3, 0, 2],
    )]);
    let out = enc.encode_token_dataset(&data, 64).unwrap();
    let e = &out.examples[0];
    assert_eq!(
        e.input_ids,
        vec![
            CLS,
            id("john"),
            id("play"),
            id("##ing"),
            id("un"),
            id("##believ"),
            id("##able"),
            id("in"),
            id("new"),
            id("york"),
            id("##er"),
            SEP
        ]
    );
    assert_eq!(
        e.target,
        Target::Tokens(vec![X, 1, 3, X, 3, X, X, 3, 0, 2, X, X])
    );
    assert_eq!(out.truncated, 0);

    // Truncated: the tags of words cut off disappear, alignment stays.
    let out = enc.encode_token_dataset(&data, 6).unwrap();
    assert_eq!(out.truncated, 1);
    let e = &out.examples[0];
    assert_eq!(
        e.input_ids,
        vec![CLS, id("john"), id("play"), id("##ing"), id("un"), SEP]
    );
    assert_eq!(e.target, Target::Tokens(vec![X, 1, 3, X, 3, X]));

    // An unknown word is one [UNK] token that still carries its tag.
    let data = token_data(&[(&["zzz", "York"], &[1, 2])]);
    let e = &enc.encode_token_dataset(&data, 16).unwrap().examples[0];
    assert_eq!(e.input_ids, vec![CLS, UNK, id("york"), SEP]);
    assert_eq!(e.target, Target::Tokens(vec![X, 1, 2, X]));
}

#[test]
fn align_labels_directly() {
    assert_eq!(
        align_labels(
            &[
                None,
                Some(0),
                Some(0),
                Some(1),
                Some(2),
                Some(2),
                None,
                None
            ],
            &[5, 6, 7]
        ),
        vec![X, 5, X, 6, 7, X, X, X]
    );
    // A word index beyond the tags (should not happen) is ignored, not a panic.
    assert_eq!(align_labels(&[Some(3)], &[1]), vec![X]);
}

#[test]
fn mask_position_in_prompt() {
    let enc = Encoder::new(tokenizer()).unwrap();
    let data = text_data(&[
        "Review: the movie was bad. It was [MASK].",
        "the the the the [MASK]",
    ]);
    let out = enc.encode_text_dataset(&data, 64).unwrap();
    let ids = &out.examples[0].input_ids;
    let pos = mask_position(ids, MASK).unwrap();
    assert_eq!(ids[pos], MASK);
    assert_eq!(pos, ids.len() - 3); // [MASK] . [SEP]

    // Truncated away.
    let out = enc.encode_text_dataset(&data, 5).unwrap();
    let e = mask_position(&out.examples[1].input_ids, MASK).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::MaskNotFound {
                mask_id: MASK,
                len: 5
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("truncated"));

    let e = mask_position(&[CLS, MASK, MASK, SEP], MASK).unwrap_err();
    assert!(matches!(&e, DataError::MultipleMasks { positions, .. } if *positions == [1, 2]));
    assert_eq!(mask_positions(&[MASK, 9, MASK], MASK), vec![0, 2]);
}

#[test]
fn word_token_ids_tells_single_from_split_words() {
    let t = tokenizer();
    assert_eq!(word_token_ids(&t, "great").unwrap(), vec![id("great")]);
    assert_eq!(word_token_ids(&t, "Good").unwrap(), vec![id("good")]);
    assert_eq!(
        word_token_ids(&t, "playing").unwrap(),
        vec![id("play"), id("##ing")]
    );
    assert_eq!(word_token_ids(&t, "zzz").unwrap(), vec![UNK]);
    assert!(matches!(
        word_token_ids(&t, " "),
        Err(DataError::EmptyEncoding(_))
    ));
    let enc = Encoder::new(t).unwrap();
    assert_eq!(
        enc.word_token_ids("terrible").unwrap(),
        vec![id("terrible")]
    );
}

#[test]
fn tokenizer_padding_and_truncation_settings_are_neutralized() {
    let mut json = tokenizer_json();
    json["padding"] = serde_json::json!({
        "strategy": {"Fixed": 32}, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 7, "pad_type_id": 1, "pad_token": "the"
    });
    json["truncation"] = serde_json::json!({
        "direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0
    });
    let t: mosaic_data::Tokenizer = json.to_string().parse().unwrap();
    assert_eq!(pad_id(&t), 7);
    // The word is not padded to 32 nor cut to 3.
    assert_eq!(word_token_ids(&t, "unbelievable").unwrap().len(), 3);
    assert_eq!(word_token_ids(&t, "great").unwrap().len(), 1);
    let enc = Encoder::new(t).unwrap();
    assert_eq!(enc.pad_id(), 7);
    assert_eq!(enc.collator().pad_type_id, 1);
    assert_eq!(enc.special_tokens(), 2);
    let out = enc
        .encode_text_dataset(&text_data(&["the movie was great"]), 100)
        .unwrap();
    assert_eq!(out.examples[0].input_ids.len(), 6);
    assert_eq!(out.truncated, 0);

    // Without padding settings, [PAD] is used; without it, 0.
    assert_eq!(pad_id(&tokenizer()), PAD);
}
