use std::collections::{BTreeMap, HashMap};

use mosaic_prompt::{
    Answer, FewShot, LabelDescriptions, PromptError, Template, Verbalizer, render_demonstration,
};

#[test]
fn parse_slots_mask_and_escapes() {
    let t = Template::parse("{{literal}} {premise} ? {mask} , {hypothesis} {premise}}}").unwrap();
    assert_eq!(t.slots(), vec!["premise", "hypothesis"]);
    assert!(t.has_mask());
    assert_eq!(t.mask_count(), 1);
    let values = HashMap::from([("premise", "P"), ("hypothesis", "H"), ("extra", "ignored")]);
    assert_eq!(t.render(&values).unwrap(), "{literal} P ? [MASK] , H P}");
    let t = t.with_mask_token("<mask>");
    assert_eq!(t.render(&values).unwrap(), "{literal} P ? <mask> , H P}");
    assert_eq!(
        t.render_filled(&values, "Yes").unwrap(),
        "{literal} P ? Yes , H P}"
    );
}

#[test]
fn no_mask_and_plain_text() {
    let t = Template::parse("just text").unwrap();
    assert!(!t.has_mask());
    assert!(t.slots().is_empty());
    assert_eq!(
        t.render(&HashMap::<&str, &str>::new()).unwrap(),
        "just text"
    );
    assert_eq!(t.to_string(), "just text");
}

#[test]
fn parse_errors() {
    for (src, needle) in [
        ("Review: {text", "never closed"),
        ("Review: text}", "without a matching"),
        ("Review: {}", "empty slot"),
        ("Review: {te xt}", "invalid character"),
        ("{a{b}", "invalid character"),
    ] {
        let err = Template::parse(src).unwrap_err();
        assert!(matches!(err, PromptError::Parse { .. }), "{src}: {err:?}");
        assert!(err.to_string().contains(needle), "{src}: {err}");
    }
    let err = Template::parse("abc }").unwrap_err();
    assert!(
        matches!(err, PromptError::Parse { position: 4, .. }),
        "{err:?}"
    );
}

#[test]
fn missing_slot_names_slot_and_available() {
    let t = Template::parse("{text} It was {mask}.").unwrap();
    let values = BTreeMap::from([
        ("sentence".to_string(), "x".to_string()),
        ("id".into(), "1".into()),
    ]);
    let err = t.render(&values).unwrap_err();
    assert_eq!(
        err,
        PromptError::MissingSlot {
            slot: "text".into(),
            available: vec!["id".into(), "sentence".into()],
        }
    );
    assert_eq!(
        err.to_string(),
        "template slot `{text}` has no value (available: id, sentence)"
    );
    // A function source has no list of names.
    let err = t.render_with(|_: &str| None::<&str>).unwrap_err();
    assert_eq!(
        err.to_string(),
        "template slot `{text}` has no value (none available)"
    );
}

#[test]
fn check_slots_reports_unknown() {
    let t = Template::parse("{text} / {title} {mask}").unwrap();
    t.check_slots(&["title", "text", "label"]).unwrap();
    let err = t.check_slots(&["text", "label"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "template slot `{title}` is unknown (available: text, label)"
    );
}

#[test]
fn render_from_pairs_and_function() {
    let t = Template::parse("{a}-{b}").unwrap();
    assert_eq!(t.render(&[("a", "1"), ("b", "2")]).unwrap(), "1-2");
    assert_eq!(
        t.render(&vec![("a", "1".to_string()), ("b", "2".into())])
            .unwrap(),
        "1-2"
    );
    let owned: HashMap<String, String> =
        HashMap::from([("a".into(), "x".into()), ("b".into(), "y".into())]);
    assert_eq!(t.render(&owned).unwrap(), "x-y");
    let s = t.render_with(|n: &str| owned.get(n)).unwrap();
    assert_eq!(s, "x-y");
    let parsed: Template = "{a}".parse().unwrap();
    assert_eq!(parsed.source(), "{a}");
}

#[test]
fn verbalizer_basics() {
    let v = Verbalizer::new([("pos", vec!["great", "good"]), ("neg", vec!["bad"])]).unwrap();
    assert_eq!(v.labels(), vec!["neg", "pos"]);
    assert_eq!(v.words("pos").unwrap(), ["great", "good"]);
    assert_eq!(v.first_word("pos").unwrap(), "great");
    assert_eq!(v.label_of("good"), Some("pos"));
    assert_eq!(v.label_of("meh"), None);
    assert!(v.words("neutral").is_none());
    let err = v.try_words("neutral").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown label `neutral` (available: neg, pos)"
    );
    assert_eq!(v.len(), 2);
}

#[test]
fn verbalizer_errors() {
    let err = Verbalizer::new([("pos", Vec::<String>::new())]).unwrap_err();
    assert_eq!(
        err,
        PromptError::LabelWithoutWords {
            label: "pos".into()
        }
    );
    assert_eq!(err.to_string(), "label `pos` has no words");
    let err = Verbalizer::new([("pos", vec![" "])]).unwrap_err();
    assert_eq!(
        err,
        PromptError::EmptyWord {
            label: "pos".into()
        }
    );
    let err = Verbalizer::new([("a", vec!["x"]), ("b", vec!["x"])]).unwrap_err();
    assert!(matches!(err, PromptError::DuplicateWord { .. }), "{err:?}");
    let err = Verbalizer::new([("a", vec!["x"]), ("a", vec!["y"])]).unwrap_err();
    assert_eq!(err, PromptError::DuplicateLabel { label: "a".into() });
    let err = Verbalizer::new(Vec::<(String, Vec<String>)>::new()).unwrap_err();
    assert_eq!(err.to_string(), "verbalizer has no labels");
}

#[test]
fn verbalizer_aligned_to_label_set() {
    let v = Verbalizer::new([("pos", vec!["great"]), ("neg", vec!["bad"])]).unwrap();
    let words = v.aligned(&["pos", "neg"]).unwrap();
    assert_eq!(words[0], ["great"]);
    assert_eq!(words[1], ["bad"]);
    let err = v.aligned(&["neg", "neutral", "pos"]).unwrap_err();
    assert_eq!(err.to_string(), "label `neutral` has no words");
    let err = v.aligned(&["neg"]).unwrap_err();
    assert!(matches!(err, PromptError::UnknownLabel { ref label, .. } if label == "pos"));
}

#[test]
fn verbalizer_deserializes_string_or_list() {
    let v: Verbalizer =
        serde_json::from_str(r#"{"positive": ["great", "good"], "negative": "terrible"}"#).unwrap();
    assert_eq!(v.words("negative").unwrap(), ["terrible"]);
    assert_eq!(v.words("positive").unwrap(), ["great", "good"]);

    #[derive(serde::Deserialize)]
    struct Config {
        verbalizer: Verbalizer,
        descriptions: LabelDescriptions,
    }
    let c: Config = toml::from_str(
        r#"
        [verbalizer]
        positive = ["great", "good"]
        negative = "terrible"
        [descriptions]
        positive = "This text expresses a positive opinion."
        negative = "This text expresses a negative opinion."
        "#,
    )
    .unwrap();
    assert_eq!(c.verbalizer.labels(), vec!["negative", "positive"]);
    assert_eq!(
        c.descriptions.description("positive"),
        Some("This text expresses a positive opinion.")
    );

    let err = serde_json::from_str::<Verbalizer>(r#"{"positive": []}"#).unwrap_err();
    assert!(
        err.to_string().contains("label `positive` has no words"),
        "{err}"
    );
    let err = serde_json::from_str::<Verbalizer>(r#"{"positive": 3}"#).unwrap_err();
    assert!(err.is_data(), "{err}");

    // Round trip: serializes as lists.
    let json = serde_json::to_string(&v).unwrap();
    assert_eq!(
        json,
        r#"{"negative":["terrible"],"positive":["great","good"]}"#
    );
}

#[test]
fn label_descriptions() {
    let d = LabelDescriptions::new([
        ("positive", "This text expresses a positive opinion."),
        ("negative", "This text expresses a negative opinion."),
    ])
    .unwrap();
    assert_eq!(d.labels(), vec!["negative", "positive"]);
    assert_eq!(
        d.aligned(&["positive", "negative"]).unwrap()[0],
        "This text expresses a positive opinion."
    );
    let err = d.aligned(&["negative", "neutral", "positive"]).unwrap_err();
    assert_eq!(err.to_string(), "label `neutral` has no description");
    let err = LabelDescriptions::new([("positive", "  ")]).unwrap_err();
    assert_eq!(
        err,
        PromptError::EmptyDescription {
            label: "positive".into()
        }
    );
    let err = LabelDescriptions::new(Vec::<(String, String)>::new()).unwrap_err();
    assert_eq!(err.to_string(), "label descriptions has no labels");
    let err = serde_json::from_str::<LabelDescriptions>(r#"{"a": ""}"#).unwrap_err();
    assert!(err.to_string().contains("empty description"), "{err}");
    let err = d.try_description("neutral").unwrap_err();
    assert!(matches!(err, PromptError::UnknownLabel { .. }));
}

fn train() -> (Vec<&'static str>, Vec<&'static str>) {
    let texts = vec!["p0", "n0", "p1", "n1", "p2", "n2", "p3", "u0"];
    let labels = vec!["pos", "neg", "pos", "neg", "pos", "neg", "pos", "neu"];
    (texts, labels)
}

#[test]
fn few_shot_selection_is_deterministic_and_balanced() {
    let (_, labels) = train();
    let fs = FewShot::new(2, 7);
    let a = fs.select(&labels, None).unwrap();
    let b = fs.select(&labels, None).unwrap();
    assert_eq!(a, b);
    // 2 pos, 2 neg, and the single neu example.
    assert_eq!(a.len(), 5);
    for label in ["pos", "neg"] {
        assert_eq!(a.iter().filter(|&&i| labels[i] == label).count(), 2);
    }
    assert_eq!(a.iter().filter(|&&i| labels[i] == "neu").count(), 1);
    let mut unique = a.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), a.len());

    // Some other seed gives another choice or order.
    let differs = (0..20u64).any(|s| FewShot::new(2, s).select(&labels, None).unwrap() != a);
    assert!(differs);

    // Excluding the query.
    for _ in 0..3 {
        let sel = FewShot::new(10, 3).select(&labels, Some(7)).unwrap();
        assert!(!sel.contains(&7));
        assert_eq!(sel.len(), 7);
    }
    assert!(FewShot::new(1, 0).select(&labels, Some(8)).is_err());
    assert!(FewShot::new(0, 0).select(&labels, None).unwrap().is_empty());
}

#[test]
fn few_shot_prompt_with_verbalizer_and_descriptions() {
    let (texts, labels) = train();
    let template = Template::parse("{text} It was {mask}.").unwrap();
    let verbalizer = Verbalizer::new([
        ("pos", vec!["great", "good"]),
        ("neg", vec!["bad"]),
        ("neu", vec!["okay"]),
    ])
    .unwrap();
    let fs = FewShot::new(1, 1).with_separator(" | ");
    let chosen = fs.select(&labels, None).unwrap();
    let demos: Vec<(HashMap<&str, &str>, &str)> = chosen
        .iter()
        .map(|&i| (HashMap::from([("text", texts[i])]), labels[i]))
        .collect();
    let query = HashMap::from([("text", "q")]);
    let prompt = fs
        .prompt(&template, &query, &demos, Answer::Verbalizer(&verbalizer))
        .unwrap();
    let parts: Vec<&str> = prompt.split(" | ").collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[3], "q It was [MASK].");
    for (part, &i) in parts.iter().zip(&chosen) {
        let word = verbalizer.first_word(labels[i]).unwrap();
        assert_eq!(*part, format!("{} It was {word}.", texts[i]));
    }

    // Descriptions, template without a mask: appended.
    let plain = Template::parse("{text}").unwrap();
    let descriptions =
        LabelDescriptions::new([("pos", "Positive."), ("neg", "Negative.")]).unwrap();
    let s = render_demonstration(
        &plain,
        &HashMap::from([("text", "Fine film.")]),
        "pos",
        Answer::Description(&descriptions),
    )
    .unwrap();
    assert_eq!(s, "Fine film. Positive.");
    // With a mask: replaced.
    let s = render_demonstration(
        &template,
        &HashMap::from([("text", "Dull.")]),
        "neg",
        Answer::Description(&descriptions),
    )
    .unwrap();
    assert_eq!(s, "Dull. It was Negative..");

    // A demonstration label the verbalizer does not know.
    let err = fs
        .prompt(
            &template,
            &query,
            &[(HashMap::from([("text", "x")]), "other")],
            Answer::Verbalizer(&verbalizer),
        )
        .unwrap_err();
    assert!(matches!(err, PromptError::UnknownLabel { ref label, .. } if label == "other"));

    // No demonstrations: the query alone.
    let empty: [(HashMap<&str, &str>, &str); 0] = [];
    assert_eq!(
        fs.prompt(&template, &query, &empty, Answer::Verbalizer(&verbalizer))
            .unwrap(),
        "q It was [MASK]."
    );
}
