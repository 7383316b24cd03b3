mod common;

use std::path::Path;

use common::write;
use mosaic_data::{
    DataError, Format, LabelSet, SplitFiles, SplitFractions, TextConfig, TextDataset, TokenConfig,
    TokenDataset,
};

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn text_cfg() -> TextConfig {
    TextConfig::default()
}

#[test]
fn jsonl_text_with_sorted_labels() {
    let d = dir();
    let p = write(
        &d,
        "train.jsonl",
        "{\"text\": \"good\", \"label\": \"pos\"}\n\n{\"text\": \"bad\", \"label\": \"neg\", \"id\": 3}\n{\"text\": \"ok\", \"label\": \"neu\"}\n",
    );
    let data = TextDataset::load(&p, &text_cfg()).unwrap();
    assert_eq!(data.labels.names(), ["neg", "neu", "pos"]);
    assert_eq!(data.len(), 3);
    assert_eq!(data.examples[0].text, "good");
    assert_eq!(data.examples[0].label, 2);
    assert_eq!(data.examples[1].label, 0);
    assert_eq!(data.label_counts(), vec![1, 1, 1]);
}

#[test]
fn custom_fields_explicit_labels_and_integer_labels() {
    let d = dir();
    let p = write(
        &d,
        "x.ndjson",
        "\u{feff}{\"sentence\": \"a\", \"y\": 1}\n{\"sentence\": \"b\", \"y\": 0}\n",
    );
    let cfg = TextConfig {
        text_field: "sentence".into(),
        label_field: "y".into(),
        labels: Some(vec!["1".into(), "0".into()]),
        format: None,
    };
    let data = TextDataset::load(&p, &cfg).unwrap();
    assert_eq!(data.labels.names(), ["1", "0"]);
    assert_eq!(data.examples[0].label, 0);
    assert_eq!(data.examples[1].label, 1);
}

fn err_text(content: &str, cfg: &TextConfig) -> (DataError, std::path::PathBuf, tempfile::TempDir) {
    let d = dir();
    let p = write(&d, "data.jsonl", content);
    let e = TextDataset::load(&p, cfg).unwrap_err();
    (e, p, d)
}

#[test]
fn bad_json_line_names_file_and_line() {
    let (e, p, _d) = err_text(
        "{\"text\": \"a\", \"label\": \"x\"}\n\n{\"text\": \"b\", \"label\": \n",
        &text_cfg(),
    );
    match &e {
        DataError::InvalidJson { path, line, .. } => {
            assert_eq!(path, &p);
            assert_eq!(*line, 3);
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{}:3: not valid JSON", p.display())),
        "{msg}"
    );
}

#[test]
fn non_object_line() {
    let (e, _, _d) = err_text("[1, 2]\n", &text_cfg());
    assert!(
        matches!(
            e,
            DataError::NotAnObject {
                line: 1,
                found: "an array",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn missing_field_names_field_and_line() {
    let (e, p, _d) = err_text(
        "{\"text\": \"a\", \"label\": \"x\"}\n{\"txt\": \"b\", \"label\": \"x\"}\n",
        &text_cfg(),
    );
    assert!(
        matches!(&e, DataError::MissingField { line: 2, field, .. } if field == "text"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("{}:2: missing field `text`", p.display())
    );
}

#[test]
fn wrong_type_names_field_and_line() {
    let (e, p, _d) = err_text("{\"text\": 5, \"label\": \"x\"}\n", &text_cfg());
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1: field `text` should be a string, found a number",
            p.display()
        )
    );
    let (e, _, _d) = err_text("{\"text\": \"a\", \"label\": [\"x\"]}\n", &text_cfg());
    assert!(
        matches!(&e, DataError::WrongType { field, found: "an array", .. } if field == "label"),
        "{e:?}"
    );
    let (e, _, _d) = err_text("{\"text\": \"a\", \"label\": 0.5}\n", &text_cfg());
    assert!(
        matches!(
            &e,
            DataError::WrongType {
                found: "a number",
                ..
            }
        ),
        "{e:?}"
    );
    let (e, _, _d) = err_text("{\"text\": \"a\", \"label\": \"\"}\n", &text_cfg());
    assert!(matches!(&e, DataError::EmptyValue { line: 1, .. }), "{e:?}");
}

#[test]
fn unknown_label_in_explicit_set() {
    let cfg = TextConfig {
        labels: Some(vec!["neg".into(), "pos".into()]),
        ..text_cfg()
    };
    let (e, p, _d) = err_text(
        "{\"text\": \"a\", \"label\": \"pos\"}\n{\"text\": \"b\", \"label\": \"meh\"}\n",
        &cfg,
    );
    assert_eq!(
        e.to_string(),
        format!("{}:2: unknown label `meh` (known: neg, pos)", p.display())
    );
    assert!(matches!(&e, DataError::UnknownLabel { line: 2, label, .. } if label == "meh"));
}

#[test]
fn invalid_explicit_label_set() {
    let cfg = TextConfig {
        labels: Some(vec!["a".into(), "a".into()]),
        ..text_cfg()
    };
    let (e, _, _d) = err_text("{\"text\": \"a\", \"label\": \"a\"}\n", &cfg);
    assert!(matches!(e, DataError::InvalidLabels(_)), "{e:?}");
    assert!(LabelSet::new(Vec::<String>::new()).is_err());
}

#[test]
fn empty_files() {
    for content in ["", "\n  \n\n"] {
        let (e, p, _d) = err_text(content, &text_cfg());
        assert!(
            matches!(&e, DataError::EmptyDataset { path } if *path == p),
            "{e:?}"
        );
        assert!(e.to_string().contains("empty data set"));
    }
    let d = dir();
    let p = write(&d, "h.csv", "text,label\n");
    let e = TextDataset::load(&p, &text_cfg()).unwrap_err();
    assert!(matches!(e, DataError::EmptyDataset { .. }), "{e:?}");
    let p = write(&d, "e.csv", "");
    let e = TextDataset::load(&p, &text_cfg()).unwrap_err();
    assert!(matches!(e, DataError::EmptyDataset { .. }), "{e:?}");
}

#[test]
fn io_and_format_errors_name_the_path() {
    let e = TextDataset::load("/nonexistent/dir/train.jsonl", &text_cfg()).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    assert!(
        e.to_string().contains("/nonexistent/dir/train.jsonl"),
        "{e}"
    );
    let e = TextDataset::load("data.parquet", &text_cfg()).unwrap_err();
    assert!(matches!(e, DataError::UnknownFormat { .. }), "{e:?}");
    assert_eq!(Format::from_path(Path::new("a.TSV")).unwrap(), Format::Tsv);
}

#[test]
fn explicit_format_overrides_extension() {
    let d = dir();
    let p = write(&d, "data.txt", "text,label\nhello,a\n");
    let cfg = TextConfig {
        format: Some(Format::Csv),
        ..text_cfg()
    };
    assert_eq!(TextDataset::load(&p, &cfg).unwrap().len(), 1);
}

#[test]
fn csv_text_with_quotes_and_multiline_fields() {
    let d = dir();
    let p = write(
        &d,
        "train.csv",
        "id,text,label\n1,\"hello, world\",pos\n2,\"two\nlines\",neg\n3,plain,pos\n",
    );
    let data = TextDataset::load(&p, &text_cfg()).unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data.examples[0].text, "hello, world");
    assert_eq!(data.examples[1].text, "two\nlines");
    assert_eq!(data.labels.names(), ["neg", "pos"]);

    // Line numbers count the lines of multi-line fields.
    let cfg = TextConfig {
        labels: Some(vec!["neg".into()]),
        ..text_cfg()
    };
    let p2 = write(
        &d,
        "t2.csv",
        "id,text,label\n1,\"two\nlines\",neg\n2,x,pos\n",
    );
    let e = TextDataset::load(&p2, &cfg).unwrap_err();
    assert!(
        matches!(&e, DataError::UnknownLabel { line: 4, .. }),
        "{e:?}"
    );
}

#[test]
fn csv_errors() {
    let d = dir();
    let p = write(&d, "a.csv", "text,lbl\nx,y\n");
    let e = TextDataset::load(&p, &text_cfg()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:1: missing field `label`", p.display())
    );
    let p = write(&d, "b.csv", "text,label\nx,y\nz\n");
    let e = TextDataset::load(&p, &text_cfg()).unwrap_err();
    assert!(matches!(&e, DataError::Csv { line: Some(3), .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}:3: invalid CSV", p.display())),
        "{e}"
    );
    let p = write(&d, "c.csv", "text,label\nx,\n");
    let e = TextDataset::load(&p, &text_cfg()).unwrap_err();
    assert!(matches!(&e, DataError::EmptyValue { line: 2, .. }), "{e:?}");
}

#[test]
fn tsv_with_bom() {
    let d = dir();
    let p = write(&d, "a.tsv", "\u{feff}text\tlabel\nhello, there\tx\n");
    let data = TextDataset::load(&p, &text_cfg()).unwrap();
    assert_eq!(data.examples[0].text, "hello, there");
}

#[test]
fn token_classification_jsonl_and_csv() {
    let d = dir();
    let p = write(
        &d,
        "ner.jsonl",
        r#"{"tokens": ["John", "lives", "in", "New", "York"], "tags": ["B-PER", "O", "O", "B-LOC", "I-LOC"]}
{"tokens": ["it"], "tags": ["O"]}
"#,
    );
    let data = TokenDataset::load(&p, &TokenConfig::default()).unwrap();
    assert_eq!(data.labels.names(), ["B-LOC", "B-PER", "I-LOC", "O"]);
    assert_eq!(data.examples[0].tags, vec![1, 3, 3, 0, 2]);
    assert_eq!(data.outside_id(), Some(3));

    let p = write(
        &d,
        "ner.csv",
        "words,ner\n\"John lives\",\"B-PER O\"\n\"[\"\"New York\"\"]\",\"[\"\"B-LOC\"\"]\"\n",
    );
    let cfg = TokenConfig {
        tokens_field: "words".into(),
        tags_field: "ner".into(),
        ..TokenConfig::default()
    };
    let data = TokenDataset::load(&p, &cfg).unwrap();
    assert_eq!(data.examples[0].tokens, ["John", "lives"]);
    assert_eq!(data.examples[1].tokens, ["New York"]);
    assert_eq!(data.labels.names(), ["B-LOC", "B-PER", "O"]);
}

#[test]
fn token_classification_errors() {
    let d = dir();
    let cfg = TokenConfig::default();
    let cases = [
        (
            r#"{"tokens": ["a", "b"], "tags": ["O"]}"#,
            "has 2 entries but `tags` has 1",
        ),
        (
            r#"{"tokens": "a b", "tags": ["O"]}"#,
            "field `tokens` should be a list of strings, found a string",
        ),
        (
            r#"{"tokens": ["a", 1], "tags": ["O", "O"]}"#,
            "found a number",
        ),
        (r#"{"tokens": [], "tags": []}"#, "field `tokens` is empty"),
        (r#"{"tokens": ["a"]}"#, "missing field `tags`"),
    ];
    for (i, (line, expected)) in cases.iter().enumerate() {
        let p = write(
            &d,
            &format!("c{i}.jsonl"),
            &format!("{{\"tokens\": [\"x\"], \"tags\": [\"O\"]}}\n{line}\n"),
        );
        let e = TokenDataset::load(&p, &cfg).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{}:2: ", p.display())), "{msg}");
        assert!(msg.contains(expected), "{msg}");
    }
    let p = write(
        &d,
        "u.jsonl",
        "{\"tokens\": [\"x\", \"y\"], \"tags\": [\"O\", \"B-MISC\"]}\n",
    );
    let cfg = TokenConfig {
        labels: Some(vec!["O".into(), "B-PER".into()]),
        ..TokenConfig::default()
    };
    let e = TokenDataset::load(&p, &cfg).unwrap_err();
    assert!(
        matches!(&e, DataError::UnknownLabel { line: 1, label, .. } if label == "B-MISC"),
        "{e:?}"
    );
}

#[test]
fn load_all_shares_the_label_set() {
    let d = dir();
    let a = write(&d, "a.jsonl", "{\"text\": \"x\", \"label\": \"b\"}\n");
    let b = write(&d, "b.jsonl", "{\"text\": \"y\", \"label\": \"a\"}\n");
    let sets = TextDataset::load_all(&[&a, &b], &text_cfg()).unwrap();
    assert_eq!(sets[0].labels, sets[1].labels);
    assert_eq!(sets[0].labels.names(), ["a", "b"]);
    assert_eq!(sets[0].examples[0].label, 1);
    assert_eq!(sets[1].examples[0].label, 0);
}

fn many_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"text\": \"t{i}\", \"label\": \"{}\"}}\n",
                ["a", "b", "c"][i % 3]
            )
        })
        .collect()
}

#[test]
fn shuffle_is_deterministic() {
    let d = dir();
    let p = write(&d, "a.jsonl", &many_lines(50));
    let data = TextDataset::load(&p, &text_cfg()).unwrap();
    let mut a = data.clone();
    let mut b = data.clone();
    a.shuffle(11);
    b.shuffle(11);
    assert_eq!(a, b);
    assert_ne!(a.examples, data.examples);
    let mut c = data.clone();
    c.shuffle(12);
    assert_ne!(a.examples, c.examples);
    let mut sorted: Vec<_> = a.examples.iter().map(|e| e.text.clone()).collect();
    sorted.sort();
    let mut orig: Vec<_> = data.examples.iter().map(|e| e.text.clone()).collect();
    orig.sort();
    assert_eq!(sorted, orig);
}

#[test]
fn split_is_deterministic_and_partitions() {
    let d = dir();
    let p = write(&d, "a.jsonl", &many_lines(100));
    let data = TextDataset::load(&p, &text_cfg()).unwrap();
    let f = SplitFractions {
        valid: 0.1,
        test: 0.2,
    };
    let s1 = data.clone().split(f, 5).unwrap();
    let s2 = data.clone().split(f, 5).unwrap();
    assert_eq!(s1, s2);
    assert_eq!(
        (s1.train.len(), s1.valid.len(), s1.test.len()),
        (70, 10, 20)
    );
    let mut all: Vec<String> = [&s1.train, &s1.valid, &s1.test]
        .iter()
        .flat_map(|s| s.examples.iter().map(|e| e.text.clone()))
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 100);
    let s3 = data.clone().split(f, 6).unwrap();
    assert_ne!(s1.valid.examples, s3.valid.examples);
    assert_eq!(s1.train.labels, data.labels);

    // Small data: a non-zero fraction gives at least one example.
    let tiny = TextDataset::load(write(&d, "t.jsonl", &many_lines(3)), &text_cfg()).unwrap();
    let s = tiny
        .clone()
        .split(
            SplitFractions {
                valid: 0.01,
                test: 0.0,
            },
            0,
        )
        .unwrap();
    assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (2, 1, 0));
    assert!(
        tiny.clone()
            .split(
                SplitFractions {
                    valid: 0.5,
                    test: 0.45
                },
                0
            )
            .is_err()
    );
    for bad in [(0.5, 0.5), (-0.1, 0.0), (1.0, 0.0), (f64::NAN, 0.0)] {
        let e = tiny
            .clone()
            .split(
                SplitFractions {
                    valid: bad.0,
                    test: bad.1,
                },
                0,
            )
            .unwrap_err();
        assert!(matches!(e, DataError::InvalidSplit(_)), "{bad:?}: {e:?}");
    }
}

#[test]
fn load_splits_carves_only_missing_files() {
    let d = dir();
    let train = write(&d, "train.jsonl", &many_lines(20));
    let valid = write(&d, "valid.jsonl", "{\"text\": \"v\", \"label\": \"z\"}\n");
    let f = SplitFractions {
        valid: 0.25,
        test: 0.25,
    };

    let only = SplitFiles {
        train: train.clone(),
        valid: None,
        test: None,
    };
    let s = TextDataset::load_splits(&only, &text_cfg(), f, 1).unwrap();
    assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (10, 5, 5));
    assert_eq!(
        s,
        TextDataset::load_splits(&only, &text_cfg(), f, 1).unwrap()
    );

    let with_valid = SplitFiles {
        train: train.clone(),
        valid: Some(valid),
        test: None,
    };
    let s = TextDataset::load_splits(&with_valid, &text_cfg(), f, 1).unwrap();
    assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (15, 1, 5));
    // Labels are the union over all files.
    assert_eq!(s.train.labels.names(), ["a", "b", "c", "z"]);
    assert_eq!(s.valid.examples[0].label, 3);

    let none = SplitFiles {
        train,
        valid: None,
        test: None,
    };
    let s = TextDataset::load_splits(
        &none,
        &text_cfg(),
        SplitFractions {
            valid: 0.0,
            test: 0.0,
        },
        1,
    )
    .unwrap();
    assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (20, 0, 0));
    // Without a split, the training file keeps its order.
    assert_eq!(s.train.examples[0].text, "t0");
}

#[test]
fn configs_deserialize_with_defaults() {
    let cfg: TextConfig =
        serde_json::from_str(r#"{"text_field": "sentence", "format": "csv"}"#).unwrap();
    assert_eq!(cfg.text_field, "sentence");
    assert_eq!(cfg.label_field, "label");
    assert_eq!(cfg.format, Some(Format::Csv));
    let labels: LabelSet = serde_json::from_str(r#"["b", "a"]"#).unwrap();
    assert_eq!(labels.id("a"), Some(1));
    assert!(serde_json::from_str::<LabelSet>(r#"["a", "a"]"#).is_err());
}
