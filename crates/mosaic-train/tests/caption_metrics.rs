//! Caption and VQA metrics against the reference implementations: sacrebleu's corpus BLEU, pycocoevalcap's
//! PTB tokenizer and CIDEr-D, and the official VQA answer normalisation, as written to
//! fixtures/reference/caption_metrics.json by xtask/scripts/make_caption_metric_fixtures.py.

use mosaic_train::metrics::bleu::corpus_bleu;
use mosaic_train::metrics::cider::{cider_d, ptb_tokenize};
use mosaic_train::metrics::vqa::normalize_vqa_answer;
use serde_json::Value;

const TOL: f64 = 1e-6;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/reference/caption_metrics.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn assert_close(actual: f64, expected: f64, tol: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tol,
        "{what}: {actual} vs {expected}"
    );
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

fn nested(v: &Value) -> Vec<Vec<&str>> {
    v.as_array().unwrap().iter().map(strs).collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn corpora(fx: &Value) -> &Vec<Value> {
    let corpora = fx["corpora"].as_array().unwrap();
    assert!(corpora.len() >= 8);
    corpora
}

#[test]
fn bleu_matches_sacrebleu() {
    let fx = fixture();
    for c in corpora(&fx) {
        let name = c["name"].as_str().unwrap();
        let want = &c["bleu"];
        let got = corpus_bleu(&strs(&c["hypotheses"]), &nested(&c["references"])).unwrap();
        assert_close(
            got.score,
            want["score"].as_f64().unwrap(),
            TOL,
            &format!("{name} score"),
        );
        for (n, (g, w)) in got
            .precisions
            .iter()
            .zip(f64s(&want["precisions"]))
            .enumerate()
        {
            assert_close(*g, w, TOL, &format!("{name} precision {}", n + 1));
        }
        assert_close(
            got.brevity_penalty,
            want["bp"].as_f64().unwrap(),
            TOL,
            &format!("{name} bp"),
        );
        assert_eq!(
            got.hyp_len as u64,
            want["sys_len"].as_u64().unwrap(),
            "{name} sys_len"
        );
        assert_eq!(
            got.ref_len as u64,
            want["ref_len"].as_u64().unwrap(),
            "{name} ref_len"
        );
    }
}

#[test]
fn ptb_tokenize_matches_the_stanford_tokenizer_on_the_corpora() {
    let fx = fixture();
    for c in corpora(&fx) {
        let name = c["name"].as_str().unwrap();
        for (raw, want) in strs(&c["hypotheses"])
            .iter()
            .zip(strs(&c["ptb_hypotheses"]))
        {
            assert_eq!(ptb_tokenize(raw), want, "{name}: {raw:?}");
        }
        for (raws, wants) in nested(&c["references"])
            .iter()
            .zip(nested(&c["ptb_references"]))
        {
            for (raw, want) in raws.iter().zip(wants) {
                assert_eq!(ptb_tokenize(raw), want, "{name}: {raw:?}");
            }
        }
    }
}

#[test]
fn ptb_tokenize_matches_the_stanford_tokenizer_on_single_cases() {
    let fx = fixture();
    let cases = fx["ptb_cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let input = case["input"].as_str().unwrap();
        assert_eq!(
            ptb_tokenize(input),
            case["output"].as_str().unwrap(),
            "{input:?}"
        );
    }
}

#[test]
fn cider_d_matches_pycocoevalcap() {
    let fx = fixture();
    for c in corpora(&fx) {
        let name = c["name"].as_str().unwrap();
        let want = &c["cider"];
        let got = cider_d(&strs(&c["ptb_hypotheses"]), &nested(&c["ptb_references"])).unwrap();
        assert_close(
            got.score,
            want["score"].as_f64().unwrap(),
            TOL,
            &format!("{name} CIDEr-D"),
        );
        let per_item = f64s(&want["per_item"]);
        assert_eq!(got.per_item.len(), per_item.len(), "{name}");
        for (i, (g, w)) in got.per_item.iter().zip(per_item).enumerate() {
            assert_close(*g, w, TOL, &format!("{name} CIDEr-D item {i}"));
        }
    }
}

#[test]
fn cider_d_on_our_own_tokenization_matches_pycocoevalcap() {
    // The whole caption pipeline in Rust: raw captions through `ptb_tokenize`, then CIDEr-D.
    let fx = fixture();
    for c in corpora(&fx) {
        let name = c["name"].as_str().unwrap();
        let hyps: Vec<String> = strs(&c["hypotheses"])
            .into_iter()
            .map(ptb_tokenize)
            .collect();
        let refs: Vec<Vec<String>> = nested(&c["references"])
            .into_iter()
            .map(|rs| rs.into_iter().map(ptb_tokenize).collect())
            .collect();
        let hyps: Vec<&str> = hyps.iter().map(String::as_str).collect();
        let refs: Vec<Vec<&str>> = refs
            .iter()
            .map(|rs| rs.iter().map(String::as_str).collect())
            .collect();
        let got = cider_d(&hyps, &refs).unwrap();
        assert_close(got.score, c["cider"]["score"].as_f64().unwrap(), TOL, name);
    }
}

#[test]
fn vqa_normalisation_matches_the_official_script() {
    let fx = fixture();
    let cases = fx["vqa_cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let input = case["input"].as_str().unwrap();
        assert_eq!(
            normalize_vqa_answer(input),
            case["output"].as_str().unwrap(),
            "{input:?}"
        );
    }
}
