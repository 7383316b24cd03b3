//! Classification report (scikit-learn) and entity scores (seqeval):
//! hand-checked cases, and the reference fixtures generated with the
//! Python libraries.

use std::path::PathBuf;

use mosaic_train::metrics::{
    ClassificationReport, Entity, EntityReport, accuracy, exact_match, get_entities,
    get_entities_nested, token_accuracy,
};
use serde_json::Value;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
}

#[test]
fn classification_report_hand_checked() {
    let labels = s(&["a", "b", "c"]);
    let y_true = s(&["a", "a", "b", "c", "c", "c"]);
    let y_pred = s(&["a", "b", "b", "c", "a", "c"]);
    let r = ClassificationReport::from_strings(Some(&labels), &y_true, &y_pred).unwrap();
    let a = r.class("a").unwrap();
    close(a.precision, 0.5);
    close(a.recall, 0.5);
    close(a.f1, 0.5);
    assert_eq!(a.support, 2);
    let b = r.class("b").unwrap();
    close(b.precision, 0.5);
    close(b.recall, 1.0);
    close(b.f1, 2.0 / 3.0);
    let c = r.class("c").unwrap();
    close(c.precision, 1.0);
    close(c.recall, 2.0 / 3.0);
    close(c.f1, 0.8);
    assert_eq!(c.support, 3);
    assert_eq!(r.accuracy(), Some(4.0 / 6.0));
    close(r.macro_avg.precision, 2.0 / 3.0);
    close(r.macro_avg.recall, (0.5 + 1.0 + 2.0 / 3.0) / 3.0);
    close(r.macro_avg.f1, (0.5 + 2.0 / 3.0 + 0.8) / 3.0);
    close(r.weighted_avg.precision, 0.75);
    close(r.weighted_avg.recall, 4.0 / 6.0);
    close(r.weighted_avg.f1, (1.0 + 2.0 / 3.0 + 2.4) / 6.0);
    assert_eq!(r.weighted_avg.support, 6);

    // Index-based entry point gives the same.
    let idx =
        ClassificationReport::compute(&labels, &[0, 0, 1, 2, 2, 2], &[0, 1, 1, 2, 0, 2]).unwrap();
    assert_eq!(idx, r);
    // Sorted labels when none are given.
    assert_eq!(
        ClassificationReport::from_strings(None, &y_true, &y_pred).unwrap(),
        r
    );

    let expected_text = "              precision    recall  f1-score   support

           a     0.5000    0.5000    0.5000         2
           b     0.5000    1.0000    0.6667         1
           c     1.0000    0.6667    0.8000         3

    accuracy                         0.6667         6
   macro avg     0.6667    0.7222    0.6556         6
weighted avg     0.7500    0.6667    0.6778         6
";
    assert_eq!(r.to_string(), expected_text);

    let json = r.to_json();
    close(json["accuracy"].as_f64().unwrap(), 4.0 / 6.0);
    close(json["b"]["f1-score"].as_f64().unwrap(), 2.0 / 3.0);
    assert_eq!(json["weighted avg"]["support"].as_u64(), Some(6));
    let text = serde_json::to_string(&r).unwrap();
    let keys = [
        "\"a\"",
        "\"b\"",
        "\"c\"",
        "\"accuracy\"",
        "\"macro avg\"",
        "\"weighted avg\"",
    ];
    let pos: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "sklearn key order: {text}"
    );
}

#[test]
fn classification_report_label_subset_shows_micro_avg() {
    let labels = s(&["a", "b"]);
    let y_true = s(&["a", "a", "b", "c", "c", "c"]);
    let y_pred = s(&["a", "b", "b", "c", "a", "c"]);
    let r = ClassificationReport::from_strings(Some(&labels), &y_true, &y_pred).unwrap();
    assert_eq!(r.accuracy(), None);
    // tp = 1 + 1, predicted = 3 + 2... a: predicted twice, b: twice; true: 2 + 1.
    close(r.micro_avg.precision, 0.5);
    close(r.micro_avg.recall, 2.0 / 3.0);
    close(r.micro_avg.f1, 4.0 / 7.0);
    assert_eq!(r.micro_avg.support, 3);
    let json = r.to_json();
    assert!(json.get("accuracy").is_none());
    close(json["micro avg"]["f1-score"].as_f64().unwrap(), 4.0 / 7.0);
    assert!(
        r.to_string()
            .contains("   micro avg     0.5000    0.6667    0.5714         3\n")
    );
}

#[test]
fn classification_report_zero_division_is_zero() {
    // `d` never occurs; `b` is never predicted.
    let labels = s(&["a", "b", "d"]);
    let r = ClassificationReport::from_strings(Some(&labels), &s(&["a", "b"]), &s(&["a", "a"]))
        .unwrap();
    let b = r.class("b").unwrap();
    assert_eq!((b.precision, b.recall, b.f1, b.support), (0.0, 0.0, 0.0, 1));
    let d = r.class("d").unwrap();
    assert_eq!((d.precision, d.recall, d.f1, d.support), (0.0, 0.0, 0.0, 0));
    assert_eq!(r.accuracy(), Some(0.5));
    close(r.macro_avg.precision, 0.5 / 3.0);
    close(r.weighted_avg.recall, 0.5);
    assert!(ClassificationReport::compute(&labels, &[0], &[0, 1]).is_err());
}

#[test]
fn accuracy_and_exact_match() {
    assert_eq!(accuracy(&[1, 2, 3, 4], &[1, 2, 0, 4]).unwrap(), 0.75);
    assert_eq!(accuracy::<u8>(&[], &[]).unwrap(), 0.0);
    assert!(accuracy(&[1], &[1, 2]).is_err());
    let t = vec![s(&["O", "B-PER"]), s(&["O"]), s(&["B-LOC", "I-LOC", "O"])];
    let p = vec![
        s(&["O", "B-PER"]),
        s(&["B-LOC"]),
        s(&["B-LOC", "I-LOC", "I-LOC"]),
    ];
    assert_eq!(exact_match(&t, &p).unwrap(), 1.0 / 3.0);
    assert_eq!(token_accuracy(&t, &p).unwrap(), 4.0 / 6.0);
}

fn ent(kind: &str, start: usize, end: usize) -> Entity {
    Entity {
        kind: kind.into(),
        start,
        end,
    }
}

#[test]
fn entities_non_strict_semantics() {
    // An I- after O, or after another type, starts an entity.
    let e = get_entities(&["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-MISC", "I-LOC"]);
    assert_eq!(
        e,
        vec![
            ent("PER", 0, 1),
            ent("LOC", 3, 3),
            ent("LOC", 4, 4),
            ent("MISC", 5, 5),
            ent("LOC", 6, 6)
        ]
    );
    // B after B splits; IOBES.
    assert_eq!(
        get_entities(&["B-PER", "B-PER", "I-PER"]),
        vec![ent("PER", 0, 0), ent("PER", 1, 2)]
    );
    assert_eq!(
        get_entities(&["S-PER", "B-LOC", "E-LOC", "O", "E-ORG"]),
        vec![ent("PER", 0, 0), ent("LOC", 1, 2), ent("ORG", 4, 4)]
    );
    // Types containing dashes, untyped tags.
    assert_eq!(
        get_entities(&["B-ORG-X", "I-ORG-X"]),
        vec![ent("ORG-X", 0, 1)]
    );
    assert_eq!(get_entities(&["B", "I", "O"]), vec![ent("_", 0, 1)]);
    // Sentences are joined with an O in between.
    let nested = get_entities_nested(&[s(&["B-PER"]), s(&["I-PER", "O"])]);
    assert_eq!(nested, vec![ent("PER", 0, 0), ent("PER", 2, 2)]);
}

#[test]
fn entity_report_seqeval_readme_example() {
    let y_true = vec![
        s(&["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"]),
        s(&["B-PER", "I-PER", "O"]),
    ];
    let y_pred = vec![
        s(&["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"]),
        s(&["B-PER", "I-PER", "O"]),
    ];
    let r = EntityReport::compute(&y_true, &y_pred).unwrap();
    assert_eq!(r.types, s(&["MISC", "PER"]));
    let misc = r.get("MISC").unwrap();
    assert_eq!(
        (misc.precision, misc.recall, misc.f1, misc.support),
        (0.0, 0.0, 0.0, 1)
    );
    let per = r.get("PER").unwrap();
    assert_eq!(
        (per.precision, per.recall, per.f1, per.support),
        (1.0, 1.0, 1.0, 1)
    );
    for avg in [r.micro_avg, r.macro_avg, r.weighted_avg] {
        assert_eq!(
            (avg.precision, avg.recall, avg.f1, avg.support),
            (0.5, 0.5, 0.5, 2)
        );
    }
    let json = r.to_json();
    assert_eq!(json["micro avg"]["f1-score"].as_f64(), Some(0.5));
    assert_eq!(json["PER"]["support"].as_u64(), Some(1));
    assert!(
        r.to_string()
            .contains("   micro avg     0.5000    0.5000    0.5000         2\n")
    );
}

#[test]
fn entity_report_f1_is_harmonic_mean_of_rounded_p_r() {
    // PER: 2 true, 3 predicted, 1 right: P = 1/3, R = 1/2, F1 = 0.4.
    let y_true = vec![s(&["B-PER", "O", "B-PER", "O", "O"])];
    let y_pred = vec![s(&["B-PER", "O", "B-PER", "I-PER", "B-PER"])];
    let r = EntityReport::compute(&y_true, &y_pred).unwrap();
    let per = r.get("PER").unwrap();
    close(per.precision, 1.0 / 3.0);
    close(per.recall, 0.5);
    close(per.f1, 2.0 * (1.0 / 3.0) * 0.5 / (1.0 / 3.0 + 0.5));
    // No entities at all: micro and weighted are 0, macro is NaN (numpy mean of nothing).
    let r = EntityReport::compute(&[s(&["O"])], &[s(&["O"])]).unwrap();
    assert_eq!(r.micro_avg.f1, 0.0);
    assert_eq!(r.weighted_avg.f1, 0.0);
    assert!(r.macro_avg.f1.is_nan());
}

#[test]
fn entity_report_strict_iob2() {
    // Strict: I- without B- is no entity; a type switch inside ends it.
    let y_true = vec![s(&["B-PER", "I-PER", "O", "B-LOC"])];
    let y_pred = vec![s(&["I-PER", "I-PER", "O", "B-LOC"])];
    let r = EntityReport::compute_strict_iob2(&y_true, &y_pred).unwrap();
    let per = r.get("PER").unwrap();
    assert_eq!((per.precision, per.recall, per.support), (0.0, 0.0, 1));
    assert_eq!(r.get("LOC").unwrap().f1, 1.0);
    let lenient = EntityReport::compute(&y_true, &y_pred).unwrap();
    assert_eq!(lenient.get("PER").unwrap().f1, 1.0);
    let r = EntityReport::compute_strict_iob2(&[s(&["B-PER", "I-LOC"])], &[s(&["B-PER", "O"])])
        .unwrap();
    assert_eq!(r.get("PER").unwrap().f1, 1.0);
    assert!(r.get("LOC").is_none());
    assert!(EntityReport::compute_strict_iob2(&[s(&["E-PER"])], &[s(&["O"])]).is_err());
}

// --- reference fixtures -------------------------------------------------------

fn fixture(name: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/reference")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reference fixture {} is missing ({e}); it is generated with scikit-learn / seqeval \
             (see fixtures/README.md) and must be committed",
            path.display()
        )
    });
    // Python's json writes NaN for numpy's mean of nothing.
    let text = text.replace(": NaN", ": null");
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match v {
        Value::Array(cases) => cases,
        Value::Object(mut o) => match o.remove("cases") {
            Some(Value::Array(cases)) => cases,
            _ => panic!("{}: expected a list of cases", path.display()),
        },
        _ => panic!("{}: expected a list of cases", path.display()),
    }
}

fn label_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(label_str)
        .collect()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9
}

/// Compares our JSON report with the reference one, key by key.
fn compare_reports(case: usize, ours: &Value, reference: &Value) {
    let ours = ours.as_object().unwrap();
    let reference = reference
        .as_object()
        .unwrap_or_else(|| panic!("case {case}: report is not an object"));
    let mut ok: Vec<&String> = ours.keys().collect();
    let mut rk: Vec<&String> = reference.keys().collect();
    ok.sort();
    rk.sort();
    assert_eq!(ok, rk, "case {case}: report keys differ");
    for (key, rv) in reference {
        let ov = &ours[key];
        if let Some(robj) = rv.as_object() {
            for field in ["precision", "recall", "f1-score", "support"] {
                let (a, b) = (num(&ov[field]), num(&robj[field]));
                assert!(
                    same(a, b),
                    "case {case}: `{key}`.{field}: ours {a}, reference {b}"
                );
            }
        } else {
            let (a, b) = (num(ov), num(rv));
            assert!(same(a, b), "case {case}: `{key}`: ours {a}, reference {b}");
        }
    }
}

#[test]
fn classification_report_matches_sklearn_reference() {
    let cases = fixture("classification_report.json");
    assert!(!cases.is_empty());
    for (i, case) in cases.iter().enumerate() {
        let labels = case.get("labels").filter(|l| !l.is_null()).map(strings);
        let y_true = strings(&case["y_true"]);
        let y_pred = strings(&case["y_pred"]);
        let r = ClassificationReport::from_strings(labels.as_deref(), &y_true, &y_pred).unwrap();
        compare_reports(i, &r.to_json(), &case["report"]);
        if let Some(acc) = case.get("accuracy").and_then(Value::as_f64) {
            let ours = accuracy(&y_true, &y_pred).unwrap();
            assert!(
                same(ours, acc),
                "case {i}: accuracy: ours {ours}, reference {acc}"
            );
        }
    }
}

#[test]
fn entity_report_matches_seqeval_reference() {
    let cases = fixture("seqeval.json");
    assert!(!cases.is_empty());
    let mut strict_cases = 0;
    for (i, case) in cases.iter().enumerate() {
        let seqs = |v: &Value| -> Vec<Vec<String>> {
            v.as_array().expect("a list").iter().map(strings).collect()
        };
        let y_true = seqs(&case["y_true"]);
        let y_pred = seqs(&case["y_pred"]);
        let check_micro = |what: &str, r: &EntityReport, expected: &Value| {
            let micro = r.micro_avg;
            for (key, ours) in [
                ("precision", micro.precision),
                ("recall", micro.recall),
                ("f1", micro.f1),
            ] {
                if let Some(v) = expected.get(key).and_then(Value::as_f64) {
                    assert!(
                        same(ours, v),
                        "case {i} ({what}): {key}: ours {ours}, reference {v}"
                    );
                }
            }
        };
        let r = EntityReport::compute(&y_true, &y_pred).unwrap();
        compare_reports(i, &r.to_json(), &case["report"]);
        check_micro("default", &r, case);
        if let Some(v) = case.get("accuracy").and_then(Value::as_f64) {
            let ours = token_accuracy(&y_true, &y_pred).unwrap();
            assert!(
                same(ours, v),
                "case {i}: accuracy: ours {ours}, reference {v}"
            );
        }
        if let Some(strict) = case.get("strict_iob2") {
            let r = EntityReport::compute_strict_iob2(&y_true, &y_pred).unwrap();
            compare_reports(i, &r.to_json(), &strict["report"]);
            check_micro("strict IOB2", &r, strict);
            strict_cases += 1;
        }
    }
    assert!(strict_cases > 0, "no strict_iob2 cases in the fixture");
}
