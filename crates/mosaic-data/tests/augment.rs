use mosaic_data::{Augmentation, DataError, Dataset, LabelSet, TextExample, TokenExample};

fn words(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i}")).collect()
}

#[test]
fn zero_probabilities_change_nothing() {
    let aug = Augmentation::default();
    assert!(aug.is_noop());
    assert_eq!(aug.text("a  b c", 3), "a b c");
    assert_eq!(aug.words(&words(5), 0), words(5));
}

#[test]
fn deterministic_by_seed_and_stream() {
    let aug = Augmentation {
        mask_prob: 0.3,
        delete_prob: 0.2,
        swap_prob: 0.2,
        seed: 4,
        ..Augmentation::default()
    };
    let w = words(40);
    assert_eq!(aug.words(&w, 1), aug.words(&w, 1));
    assert_ne!(aug.words(&w, 1), aug.words(&w, 2));
    let other = Augmentation {
        seed: 5,
        ..aug.clone()
    };
    assert_ne!(aug.words(&w, 1), other.words(&w, 1));
}

#[test]
fn each_operation() {
    let w = words(6);
    let mask = Augmentation {
        mask_prob: 1.0,
        mask_token: "<mask>".into(),
        ..Default::default()
    };
    assert_eq!(mask.words(&w, 0), vec!["<mask>"; 6]);

    let delete = Augmentation {
        delete_prob: 1.0,
        ..Default::default()
    };
    let out = delete.words(&w, 0);
    assert_eq!(out, vec!["w0"]); // never every word

    let swap = Augmentation {
        swap_prob: 1.0,
        ..Default::default()
    };
    assert_eq!(swap.words(&w, 0), vec!["w1", "w0", "w3", "w2", "w5", "w4"]);

    let some = Augmentation {
        mask_prob: 0.5,
        seed: 1,
        ..Default::default()
    };
    let out = some.words(&words(200), 0);
    let masked = out.iter().filter(|w| *w == "[MASK]").count();
    assert!((60..140).contains(&masked), "{masked}");
    assert!(some.words(&Vec::<String>::new(), 0).is_empty());
}

#[test]
fn tagged_keeps_entities() {
    // tags: 0 = B-PER, 1 = O
    let w = words(6);
    let tags = [0, 1, 1, 0, 1, 1];
    let aug = Augmentation {
        delete_prob: 1.0,
        ..Default::default()
    };
    let (out_w, out_t) = aug.tagged(&w, &tags, Some(1), 0);
    assert_eq!(out_w, vec!["w0", "w3"]);
    assert_eq!(out_t, vec![0, 0]);
    let swap = Augmentation {
        swap_prob: 1.0,
        ..Default::default()
    };
    let (out_w, out_t) = swap.tagged(&w, &tags, Some(1), 0);
    assert_eq!(out_w, vec!["w0", "w2", "w1", "w3", "w5", "w4"]);
    assert_eq!(out_t, tags);
    // Without an outside tag only masking applies.
    let all = Augmentation {
        delete_prob: 1.0,
        swap_prob: 1.0,
        mask_prob: 1.0,
        ..Default::default()
    };
    let (out_w, out_t) = all.tagged(&w, &tags, None, 0);
    assert_eq!(out_w, vec!["[MASK]"; 6]);
    assert_eq!(out_t, tags);
}

#[test]
fn invalid_probability() {
    let aug = Augmentation {
        swap_prob: 1.5,
        ..Default::default()
    };
    assert!(matches!(aug.validate(), Err(DataError::Augmentation(_))));
    let data = Dataset::new(
        vec![TextExample {
            text: "a".into(),
            label: 0,
        }],
        LabelSet::new(["x"]).unwrap(),
    );
    assert!(data.augmented(&aug, 0).is_err());
}

#[test]
fn datasets_augment_per_epoch() {
    let aug = Augmentation {
        mask_prob: 0.3,
        delete_prob: 0.1,
        swap_prob: 0.1,
        seed: 9,
        ..Default::default()
    };
    let text = (0..30)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let data = Dataset::new(
        (0..20)
            .map(|i| TextExample {
                text: text.clone(),
                label: i % 2,
            })
            .collect(),
        LabelSet::new(["a", "b"]).unwrap(),
    );
    let e0 = data.augmented(&aug, 0).unwrap();
    assert_eq!(e0, data.augmented(&aug, 0).unwrap());
    assert_ne!(e0, data.augmented(&aug, 1).unwrap());
    // Different examples get different changes.
    assert_ne!(e0.examples[0].text, e0.examples[1].text);
    assert_eq!(
        e0.examples.iter().map(|e| e.label).collect::<Vec<_>>(),
        data.examples.iter().map(|e| e.label).collect::<Vec<_>>()
    );

    let tokens = Dataset::new(
        vec![TokenExample {
            tokens: words(10),
            tags: vec![0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        }],
        LabelSet::new(["B-PER", "O"]).unwrap(),
    );
    let del = Augmentation {
        delete_prob: 1.0,
        ..Default::default()
    };
    let out = tokens.augmented(&del, 0).unwrap();
    assert_eq!(out.examples[0].tokens, vec!["w0"]);
    assert_eq!(out.examples[0].tags, vec![0]);
}
