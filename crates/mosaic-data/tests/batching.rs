mod common;

use std::collections::BTreeSet;

use common::{CLS, PAD, SEP, tokenizer};
use mosaic_data::{
    BatchIterator, BatchSampler, Collator, DataError, Dataset, EncodedExample, Encoder,
    IGNORE_INDEX, LabelSet, Position, Target, TextExample,
};

const X: i64 = IGNORE_INDEX;

fn class(ids: &[u32], label: i64) -> EncodedExample {
    EncodedExample {
        input_ids: ids.to_vec(),
        token_type_ids: vec![0; ids.len()],
        target: Target::Class(label),
    }
}

fn tokens(ids: &[u32], labels: &[i64]) -> EncodedExample {
    EncodedExample {
        input_ids: ids.to_vec(),
        token_type_ids: vec![0; ids.len()],
        target: Target::Tokens(labels.to_vec()),
    }
}

#[test]
fn pads_to_longest_with_masks() {
    let c = Collator::new(PAD);
    let ex = [
        class(&[CLS, 10, 11, SEP], 1),
        class(&[CLS, SEP], 0),
        class(&[CLS, 12, SEP], 1),
    ];
    let b = c.collate(&ex).unwrap();
    assert_eq!((b.batch_size, b.seq_len), (3, 4));
    assert_eq!(
        b.input_ids,
        [CLS, 10, 11, SEP, CLS, SEP, PAD, PAD, CLS, 12, SEP, PAD]
    );
    assert_eq!(b.attention_mask, [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0]);
    assert_eq!(b.token_type_ids, [0; 12]);
    assert_eq!(b.labels, [1, 0, 1]);

    let c = Collator {
        pad_id: 9,
        pad_type_id: 1,
        pad_to_multiple_of: Some(8),
    };
    let b = c.collate([&ex[1]]).unwrap();
    assert_eq!(b.seq_len, 8);
    assert_eq!(b.input_ids, [CLS, SEP, 9, 9, 9, 9, 9, 9]);
    assert_eq!(b.token_type_ids, [0, 0, 1, 1, 1, 1, 1, 1]);
}

#[test]
fn token_labels_are_ignored_on_padding() {
    let ex = [
        tokens(&[CLS, 5, 6, SEP], &[X, 2, X, X]),
        tokens(&[CLS, 7, SEP], &[X, 1, X]),
    ];
    let b = Collator::new(PAD).collate(&ex).unwrap();
    assert_eq!(b.labels, [X, 2, X, X, X, 1, X, X]);
    assert_eq!(b.labels.len(), b.batch_size * b.seq_len);
    assert_eq!(b.attention_mask, [1, 1, 1, 1, 1, 1, 1, 0]);
}

#[test]
fn collate_errors() {
    let c = Collator::new(PAD);
    let e = c.collate(&[] as &[EncodedExample]).unwrap_err();
    assert!(matches!(e, DataError::Batch(_)));
    let e = c
        .collate(&[class(&[1], 0), tokens(&[1], &[0])])
        .unwrap_err();
    assert!(e.to_string().contains("mix"), "{e}");
}

#[test]
fn sampler_is_seeded_and_covers_each_epoch() {
    let s = BatchSampler::new(10, 3, 1).unwrap();
    assert_eq!(s.batches_per_epoch(), 4);
    let run: Vec<_> = s.clone().take(8).collect();
    assert_eq!(
        run,
        BatchSampler::new(10, 3, 1)
            .unwrap()
            .take(8)
            .collect::<Vec<_>>()
    );
    for epoch in 0..2 {
        let batches: Vec<_> = run.iter().filter(|(p, _)| p.epoch == epoch).collect();
        assert_eq!(batches.len(), 4);
        assert_eq!(
            batches.iter().map(|(p, _)| p.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            batches.iter().map(|(_, b)| b.len()).collect::<Vec<_>>(),
            vec![3, 3, 3, 1]
        );
        let all: BTreeSet<usize> = batches
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect();
        assert_eq!(all.len(), 10);
    }
    // Epochs differ from one another and from other seeds.
    assert_ne!(s.epoch_order(0), s.epoch_order(1));
    assert_ne!(
        s.epoch_order(0),
        BatchSampler::new(10, 3, 2).unwrap().epoch_order(0)
    );
    // Without shuffling, data order.
    let s = BatchSampler::new(5, 2, 1).unwrap().with_shuffle(false);
    assert_eq!(
        s.take(3).map(|(_, b)| b).collect::<Vec<_>>(),
        vec![vec![0, 1], vec![2, 3], vec![4]]
    );
}

#[test]
fn sampler_resumes_exactly() {
    let mut a = BatchSampler::new(17, 4, 99).unwrap();
    let reference: Vec<_> = a.clone().take(20).collect();
    for k in 0..20 {
        let mut s = a.clone();
        let _ = s.by_ref().take(k).count();
        let saved = s.position();
        let resumed = BatchSampler::new(17, 4, 99)
            .unwrap()
            .with_position(saved)
            .unwrap();
        assert_eq!(resumed.take(20 - k).collect::<Vec<_>>(), reference[k..]);
    }
    // An index equal to batches per epoch is the next epoch's start.
    let s = BatchSampler::new(17, 4, 99).unwrap();
    let s = s.with_position(Position { epoch: 2, index: 5 }).unwrap();
    assert_eq!(s.position(), Position { epoch: 3, index: 0 });
    assert!(
        BatchSampler::new(17, 4, 99)
            .unwrap()
            .with_position(Position { epoch: 0, index: 6 })
            .is_err()
    );
    let (p, b) = a.next_batch();
    assert_eq!(p, Position { epoch: 0, index: 0 });
    assert_eq!(b, a.batch_at(p));
    // The position is serializable for checkpoints.
    let json = serde_json::to_string(&a.position()).unwrap();
    assert_eq!(json, r#"{"epoch":0,"index":1}"#);
}

#[test]
fn sampler_settings_and_errors() {
    assert!(BatchSampler::new(0, 4, 0).is_err());
    assert!(BatchSampler::new(4, 0, 0).is_err());
    let s = BatchSampler::new(10, 4, 0)
        .unwrap()
        .with_drop_last(true)
        .unwrap();
    assert_eq!(s.batches_per_epoch(), 2);
    assert!(s.take(6).all(|(_, b)| b.len() == 4));
    assert!(
        BatchSampler::new(3, 4, 0)
            .unwrap()
            .with_drop_last(true)
            .is_err()
    );
}

#[test]
fn batch_iterator_over_encoded_data_resumes() {
    let enc = Encoder::new(tokenizer()).unwrap();
    let texts = [
        "the movie",
        "great",
        "it was bad",
        "a b c d e f",
        "john",
        "new york",
        "play",
    ];
    let data = Dataset::new(
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| TextExample {
                text: t.to_string(),
                label: i % 2,
            })
            .collect(),
        LabelSet::new(["a", "b"]).unwrap(),
    );
    let encoded = enc.encode_text_dataset(&data, 32).unwrap();
    let sampler = BatchSampler::new(encoded.len(), 3, 5).unwrap();
    let mut it = BatchIterator::new(&encoded, enc.collator(), sampler.clone()).unwrap();
    let first: Vec<_> = it.by_ref().take(4).map(Result::unwrap).collect();
    assert_eq!(first[0].position, Position { epoch: 0, index: 0 });
    assert_eq!(first[3].position, Position { epoch: 1, index: 0 });
    for b in &first {
        assert_eq!(b.batch.batch_size, b.indices.len());
        assert_eq!(
            b.batch.labels,
            b.indices.iter().map(|i| (i % 2) as i64).collect::<Vec<_>>()
        );
        let longest = b
            .indices
            .iter()
            .map(|&i| encoded.examples[i].input_ids.len())
            .max()
            .unwrap();
        assert_eq!(b.batch.seq_len, longest);
    }
    let saved = it.position();
    let next = it.next().unwrap().unwrap();
    let mut resumed = BatchIterator::new(
        &encoded,
        enc.collator(),
        sampler.with_position(saved).unwrap(),
    )
    .unwrap();
    assert_eq!(resumed.next().unwrap().unwrap(), next);

    let wrong = BatchSampler::new(3, 1, 0).unwrap();
    assert!(BatchIterator::new(&encoded, enc.collator(), wrong).is_err());
}
