//! Weights, configs and class names.

use proptest::prelude::*;

use super::{
    DocumentFrequency, FIRST_KEYED_VALUE, ImportanceConfig, KEY, SCAFFOLDING, TEXT, VALUE,
    class_name, classify_tokens, token_weights,
};
use crate::Error;

#[expect(clippy::cast_precision_loss, reason = "test completions are short")]
fn mean(weights: &[f32]) -> f64 {
    weights.iter().map(|&weight| f64::from(weight)).sum::<f64>() / weights.len() as f64
}

/// Weights for tokens `0..n` with no corpus statistics.
fn weights_without_rarity(classes: &[u8], diff_mask: &[u8], config: &ImportanceConfig) -> Vec<f32> {
    let ids: Vec<u32> = (0..classes.len() as u32).collect();
    token_weights(classes, &ids, diff_mask, &DocumentFrequency::default(), config)
}

fn assert_close(actual: &[f32], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len());
    for (index, (&actual, &expected)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (f64::from(actual) - expected).abs() < 1e-6,
            "token {index}: {actual} != {expected}"
        );
    }
}

#[test]
fn tabpo_preset_reproduces_the_authors_weights() {
    let config = ImportanceConfig::tabpo_authors();
    config.validate().expect("the preset is valid");
    let [code, span, subcode] = [0, 1, 2].map(|index| FIRST_KEYED_VALUE + index);
    assert_eq!(config.value_key_names(), ["code", "span", "subcode"]);
    let classes = [SCAFFOLDING, KEY, code, subcode, span, VALUE, TEXT, SCAFFOLDING];
    let diff = [0, 0, 1, 1, 0, 0, 0, 1];
    // The authors' raw weights: 1.1 / 1.2 / 1.1 on the three values, 1 elsewhere, ×1.2 on
    // diff tokens; then mean 1.
    let raw = [1.0, 1.0, 1.1 * 1.2, 1.2 * 1.2, 1.1, 1.0, 1.0, 1.2];
    let total: f64 = raw.iter().sum();
    let expected: Vec<f64> = raw.iter().map(|weight| weight * 8.0 / total).collect();
    assert_close(&weights_without_rarity(&classes, &diff, &config), &expected);
}

#[test]
fn default_preset_orders_classes() {
    let config = ImportanceConfig::default();
    config.validate().expect("the preset is valid");
    let weights = weights_without_rarity(&[SCAFFOLDING, KEY, TEXT, VALUE], &[0; 4], &config);
    assert!(weights.windows(2).all(|pair| pair[0] < pair[1]), "{weights:?}");
    assert!((mean(&weights) - 1.0).abs() < 1e-6);
}

#[test]
fn rare_tokens_weigh_more() {
    let mut frequencies = DocumentFrequency::new(3);
    for _ in 0..99 {
        frequencies.add_pair(&[0], &[]);
    }
    frequencies.add_pair(&[0, 1], &[]);
    let config = ImportanceConfig { rarity: 1.0, ..ImportanceConfig::default() };
    let weights = token_weights(&[VALUE; 3], &[0, 1, 2], &[0; 3], &frequencies, &config);
    // idf: token 0 in every pair → 1; token 1 in one of 100; token 2 in none.
    let idf = [1.0, (101.0f64 / 2.0).ln() + 1.0, 101.0f64.ln() + 1.0];
    let total: f64 = idf.iter().sum();
    assert_close(&weights, &idf.map(|value| value * 3.0 / total));
}

#[test]
fn edge_cases_have_mean_one() {
    let config = ImportanceConfig::default();
    assert!(weights_without_rarity(&[], &[], &config).is_empty());
    let silent = ImportanceConfig { text: 0.0, scaffolding: 0.0, ..config.clone() };
    assert_eq!(weights_without_rarity(&[TEXT, SCAFFOLDING], &[1, 0], &silent), [1.0, 1.0]);
    // A token with weight 0 stays at 0; the others carry the mean.
    assert_eq!(weights_without_rarity(&[TEXT, VALUE], &[0, 0], &silent), [0.0, 2.0]);
    // Classes beyond the configured keys weigh as values.
    let weights = weights_without_rarity(&[VALUE, FIRST_KEYED_VALUE + 7, TEXT], &[0; 3], &config);
    assert_eq!(weights[0].to_bits(), weights[1].to_bits());
}

#[test]
fn invalid_configs_give_harmless_weights() {
    let broken = ImportanceConfig {
        value: f64::NAN,
        key: -3.0,
        scaffolding: f64::INFINITY,
        ..ImportanceConfig::default()
    };
    let classes = [VALUE, KEY, TEXT];
    assert_eq!(weights_without_rarity(&classes, &[0; 3], &broken), [0.0, 0.0, 3.0]);
    assert_eq!(weights_without_rarity(&[SCAFFOLDING, TEXT], &[0; 2], &broken), [1.0, 1.0]);
}

#[test]
fn validate_names_the_field() {
    let cases = [
        (
            ImportanceConfig { text: -0.5, ..ImportanceConfig::default() },
            "importance.text",
            "got -0.5",
        ),
        (
            ImportanceConfig { rarity: f64::NAN, ..ImportanceConfig::default() },
            "importance.rarity",
            "got NaN",
        ),
        (
            ImportanceConfig { diff_factor: 0.0, ..ImportanceConfig::default() },
            "importance.diff_factor",
            "must be finite and > 0, got 0",
        ),
        (
            ImportanceConfig { diff_factor: f64::INFINITY, ..ImportanceConfig::default() },
            "importance.diff_factor",
            "got inf",
        ),
        (
            ImportanceConfig {
                value_keys: [("span".to_owned(), f64::NEG_INFINITY)].into(),
                ..ImportanceConfig::default()
            },
            "importance.value_keys.span",
            "must be finite and >= 0, got -inf",
        ),
        (
            ImportanceConfig {
                value_keys: (0..253).map(|index| (format!("k{index}"), 1.0)).collect(),
                ..ImportanceConfig::default()
            },
            "importance.value_keys",
            "at most 252 keys can be weighted, got 253",
        ),
    ];
    for (config, expected_field, expected_reason) in cases {
        match config.validate() {
            Err(Error::Config { field, reason }) => {
                assert_eq!(field, expected_field);
                assert!(reason.contains(expected_reason), "{field}: {reason}");
            }
            other => panic!("{expected_field}: expected a config error, got {other:?}"),
        }
    }
    let zeros = ImportanceConfig {
        text: 0.0,
        scaffolding: 0.0,
        key: 0.0,
        value: 0.0,
        rarity: 0.0,
        ..ImportanceConfig::default()
    };
    zeros.validate().expect("zero class weights are allowed");
}

#[test]
fn config_round_trips_through_json() {
    for config in [ImportanceConfig::default(), ImportanceConfig::tabpo_authors()] {
        let json = serde_json::to_string(&config).expect("serializes");
        assert_eq!(serde_json::from_str::<ImportanceConfig>(&json).expect("deserializes"), config);
    }
    let json = serde_json::to_string(&ImportanceConfig::tabpo_authors()).expect("serializes");
    assert!(json.contains(r#""value_keys":{"code":1.1,"span":1.1,"subcode":1.2}"#), "{json}");
    // Missing fields take the defaults; unknown fields are refused.
    let partial: ImportanceConfig =
        serde_json::from_str(r#"{"diff_factor": 2.0}"#).expect("a partial config");
    assert_eq!(partial, ImportanceConfig { diff_factor: 2.0, ..ImportanceConfig::default() });
    let error = serde_json::from_str::<ImportanceConfig>(r#"{"diff_facter": 2.0}"#)
        .expect_err("a misspelt field");
    assert!(error.to_string().contains("unknown field `diff_facter`"), "{error}");
}

#[test]
fn class_names() {
    let config = ImportanceConfig::tabpo_authors();
    let names: Vec<String> = (0..9).map(|class| class_name(class, &config)).collect();
    assert_eq!(
        names,
        [
            "text",
            "scaffolding",
            "key",
            "value",
            "value:code",
            "value:span",
            "value:subcode",
            "value:#3",
            "value:#4"
        ]
    );
}

#[test]
fn classes_feed_weights_end_to_end() {
    let config = ImportanceConfig::tabpo_authors();
    let text = r#"{"code": "x", "note": "y"}"#;
    // `{"` `code` `": "` `x` `", "` `note` `": "` `y` `"}` and an empty-span EOS.
    let offsets = [
        (0, 2),
        (2, 6),
        (6, 10),
        (10, 11),
        (11, 15),
        (15, 19),
        (19, 23),
        (23, 24),
        (24, 26),
        (26, 26),
    ];
    let classes = classify_tokens(text, &offsets, &config.value_key_names());
    let names: Vec<String> = classes.iter().map(|&class| class_name(class, &config)).collect();
    assert_eq!(
        names,
        [
            "scaffolding",
            "key",
            "scaffolding",
            "value:code",
            "scaffolding",
            "key",
            "scaffolding",
            "value",
            "scaffolding",
            "scaffolding"
        ]
    );
    let weights = weights_without_rarity(&classes, &[0; 10], &config);
    assert!(weights[3] > weights[7]);
    assert_eq!(weights[7].to_bits(), weights[0].to_bits());
}

fn any_config() -> impl Strategy<Value = ImportanceConfig> {
    let coefficient = || prop_oneof![Just(0.0), 0.0..5.0];
    (
        (coefficient(), coefficient(), coefficient(), coefficient()),
        prop::collection::btree_map("[a-z]{1,6}", coefficient(), 0..4),
        coefficient(),
        0.01..10.0,
    )
        .prop_map(|((text, scaffolding, key, value), value_keys, rarity, diff_factor)| {
            ImportanceConfig { text, scaffolding, key, value, value_keys, rarity, diff_factor }
        })
}

fn completion() -> impl Strategy<Value = (Vec<u8>, Vec<u32>, Vec<u8>)> {
    (0usize..40).prop_flat_map(|len| {
        (
            prop::collection::vec(0u8..10, len),
            prop::collection::vec(0u32..60, len),
            prop::collection::vec(0u8..2, len),
        )
    })
}

fn frequencies() -> impl Strategy<Value = DocumentFrequency> {
    prop::collection::vec(prop::collection::vec(0u32..50, 0..10), 0..20).prop_map(|pairs| {
        let mut frequencies = DocumentFrequency::new(50);
        for pair in &pairs {
            frequencies.add_pair(pair, &[]);
        }
        frequencies
    })
}

proptest! {
    #[test]
    fn weights_have_mean_one_and_are_not_negative(
        (classes, ids, diff) in completion(),
        frequencies in frequencies(),
        config in any_config(),
    ) {
        prop_assert!(config.validate().is_ok());
        let weights = token_weights(&classes, &ids, &diff, &frequencies, &config);
        prop_assert_eq!(weights.len(), classes.len());
        prop_assert!(weights.iter().all(|&weight| weight.is_finite() && weight >= 0.0), "{:?}", weights);
        if !weights.is_empty() {
            prop_assert!((mean(&weights) - 1.0).abs() < 1e-4, "{:?}", weights);
        }
    }

    #[test]
    fn a_larger_diff_factor_moves_weight_to_diff_tokens(
        (classes, ids, diff) in completion(),
        frequencies in frequencies(),
        config in any_config(),
        extra in 0.1..5.0,
    ) {
        let share = |config: &ImportanceConfig| {
            let weights = token_weights(&classes, &ids, &diff, &frequencies, config);
            weights.iter().zip(&diff).filter(|(_, diff)| **diff == 1).map(|(weight, _)| f64::from(*weight)).sum::<f64>()
        };
        let stronger = ImportanceConfig { diff_factor: config.diff_factor + extra, ..config.clone() };
        let (before, after) = (share(&config), share(&stronger));
        prop_assert!(after >= before - 1e-4, "{} -> {}", before, after);
        // Strictly, when some class weight is positive both on and off the diff.
        let class_weights = config.class_weights();
        let weighted = |on_diff: u8| {
            classes.iter().zip(&diff).any(|(&class, &diff)| diff == on_diff && class_weights[usize::from(class)] > 0.0)
        };
        if weighted(1) && weighted(0) {
            prop_assert!(after > before, "{} -> {}", before, after);
        }
    }
}
