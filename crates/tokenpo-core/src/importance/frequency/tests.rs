//! Document frequencies: hand counts, splitting and merging, serde, stamp wrap-around.

use proptest::prelude::*;

use super::DocumentFrequency;

fn count_all(pairs: &[(Vec<u32>, Vec<u32>)], vocab_size: usize) -> DocumentFrequency {
    let mut frequencies = DocumentFrequency::new(vocab_size);
    for (chosen, rejected) in pairs {
        frequencies.add_pair(chosen, rejected);
    }
    frequencies
}

#[test]
fn a_token_counts_once_per_pair() {
    let frequencies =
        count_all(&[(vec![1, 2, 2, 3], vec![3, 1]), (vec![2], vec![]), (vec![], vec![7, 7])], 4);
    assert_eq!(frequencies.documents(), 3);
    let counts: Vec<u32> = (0..9).map(|token| frequencies.document_frequency(token)).collect();
    assert_eq!(counts, [0, 1, 2, 1, 0, 0, 0, 1, 0], "ids past vocab_size grow the table");
    // idf = ln((N + 1) / (df + 1)) + 1.
    assert!((frequencies.idf(2) - ((4.0f32 / 3.0).ln() + 1.0)).abs() < 1e-6);
    assert!((frequencies.idf(0) - (4.0f32.ln() + 1.0)).abs() < 1e-6);
    assert!((frequencies.idf(u32::MAX) - (4.0f32.ln() + 1.0)).abs() < 1e-6);
    assert!((DocumentFrequency::default().idf(5) - 1.0).abs() < f32::EPSILON);
}

#[test]
fn serializes_compactly_and_checks_on_the_way_in() {
    let mut frequencies = count_all(&[(vec![0, 2], vec![2])], 3);
    let json = serde_json::to_string(&frequencies).expect("serializes");
    assert_eq!(json, r#"{"documents":1,"counts":[1,0,1]}"#);
    let mut restored: DocumentFrequency = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(restored, frequencies);
    // A restored count has no stamps yet and keeps counting correctly.
    restored.add_pair(&[2, 5, 5], &[]);
    frequencies.add_pair(&[2, 5, 5], &[]);
    assert_eq!(restored, frequencies);
    assert_eq!(restored.document_frequency(2), 2);

    let error = serde_json::from_str::<DocumentFrequency>(r#"{"documents":1,"counts":[0,2]}"#)
        .expect_err("a count above the document count");
    assert!(error.to_string().contains("token 1 is counted in 2 documents but only 1"), "{error}");
    assert!(serde_json::from_str::<DocumentFrequency>(r#"{"documents":1}"#).is_err());
}

#[test]
fn equality_ignores_trailing_zero_counts() {
    let small = count_all(&[(vec![1], vec![])], 2);
    let large = count_all(&[(vec![1], vec![])], 1000);
    assert_eq!(small, large);
    assert_ne!(small, count_all(&[(vec![0], vec![])], 2));
}

#[test]
fn stamps_wrap_around() {
    let mut frequencies = DocumentFrequency::new(3);
    frequencies.add_pair(&[0], &[]);
    frequencies.stamp = u32::MAX - 1;
    // Stamp u32::MAX, then the wrap: every stamp is forgotten and counting restarts at 1.
    frequencies.add_pair(&[1, 1], &[]);
    frequencies.add_pair(&[1, 0], &[0]);
    frequencies.add_pair(&[0], &[2]);
    assert_eq!(frequencies.stamp, 2);
    let counts: Vec<u32> = (0..3).map(|token| frequencies.document_frequency(token)).collect();
    assert_eq!(counts, [3, 2, 1]);
}

fn pairs() -> impl Strategy<Value = Vec<(Vec<u32>, Vec<u32>)>> {
    let tokens = || prop::collection::vec(0u32..40, 0..12);
    prop::collection::vec((tokens(), tokens()), 0..30)
}

proptest! {
    #[test]
    fn merging_split_counts_equals_counting_at_once(
        pairs in pairs(),
        split in any::<prop::sample::Index>(),
        vocab_sizes in (0usize..50, 0usize..50),
    ) {
        let at = split.index(pairs.len() + 1);
        let mut merged = count_all(&pairs[..at], vocab_sizes.0);
        merged.merge(&count_all(&pairs[at..], vocab_sizes.1));
        let all = count_all(&pairs, 10);
        prop_assert_eq!(&merged, &all);
        for token in 0..45 {
            prop_assert_eq!(merged.document_frequency(token), all.document_frequency(token));
        }
    }

    #[test]
    fn a_token_in_every_pair_has_idf_one(pairs in pairs(), token in 0u32..40, side in any::<bool>()) {
        let mut frequencies = DocumentFrequency::new(40);
        for (mut chosen, mut rejected) in pairs {
            if side { chosen.push(token) } else { rejected.push(token) }
            frequencies.add_pair(&chosen, &rejected);
        }
        prop_assert!((frequencies.idf(token) - 1.0).abs() < 1e-6);
        for other in 0..45 {
            prop_assert!(frequencies.idf(other) >= 1.0);
        }
    }
}
