//! Per-token importance weights.
//!
//! Prep gives every completion token a weight, mean 1 over the completion, that the
//! token-level losses multiply into their per-token terms. Three signals make it:
//! - [`classify_tokens`]: what the token is in the completion's JSON (scaffolding, key,
//!   value, a value under a named key) or plain text, from the tokenizer's byte offsets;
//! - [`DocumentFrequency`]: how rare the token is across the corpus (inverse document
//!   frequency, counted in a first pass);
//! - the token diff: whether the token lies outside the LCS of chosen and rejected.
//!
//! [`token_weights`] combines them as [`ImportanceConfig`] says:
//! `w_t = class_weight(class_t) · (1 + rarity · (idf_t − 1)) · (diff_t ? diff_factor : 1)`,
//! then divides by the mean so that the weights average exactly 1.

mod config;
mod frequency;
mod json;

pub use config::ImportanceConfig;
pub use frequency::DocumentFrequency;
pub use json::{MAX_DEPTH, classify_bytes, classify_tokens, token_classes};

/// Class of a token outside any JSON: the completion holds no JSON, or the token lies in
/// the text around it (a chat template's end marker, a sentence before the JSON).
pub const TEXT: u8 = 0;
/// Class of JSON punctuation and layout: braces, brackets, quotes, commas, colons, the
/// whitespace between them, and tokens with an empty span (an appended EOS).
pub const SCAFFOLDING: u8 = 1;
/// Class of the characters of an object key, inside its quotes.
pub const KEY: u8 = 2;
/// Class of a value (string contents inside the quotes, a number, `true`, `false`, `null`)
/// whose innermost enclosing key is not one of the configured value keys.
pub const VALUE: u8 = 3;
/// Class of a value under the first configured value key; the i-th key gives
/// `FIRST_KEYED_VALUE + i`, so at most `256 − FIRST_KEYED_VALUE` keys can be named.
pub const FIRST_KEYED_VALUE: u8 = 4;

/// The display name of a class: `"text"`, `"scaffolding"`, `"key"`, `"value"`, or
/// `"value:NAME"` for a value under the configured key NAME (`"value:#i"` when the config
/// has fewer keys than the class implies).
#[must_use]
pub fn class_name(class: u8, config: &ImportanceConfig) -> String {
    match class {
        TEXT => "text".to_owned(),
        SCAFFOLDING => "scaffolding".to_owned(),
        KEY => "key".to_owned(),
        VALUE => "value".to_owned(),
        keyed => {
            let index = usize::from(keyed - FIRST_KEYED_VALUE);
            match config.value_keys.keys().nth(index) {
                Some(name) => format!("value:{name}"),
                None => format!("value:#{index}"),
            }
        }
    }
}

/// The importance weight of each token of one completion, mean exactly 1 (up to f32
/// rounding).
///
/// `classes` come from [`classify_tokens`], `diff_mask` from the token diff (1 = outside the
/// LCS), `frequencies` from the first pass over the corpus. The three slices must have one
/// entry per token; if they do not (a caller bug), the weights cover the shortest of them.
/// An empty completion gives an empty vector. If every raw weight is 0 (every class
/// weighted 0), or one overflows f32, every weight is 1. Weights are never negative
/// or NaN, even for a config that [`ImportanceConfig::validate`] would reject.
#[must_use]
#[expect(clippy::cast_precision_loss, reason = "a completion has far fewer than 2^52 tokens")]
pub fn token_weights(
    classes: &[u8],
    token_ids: &[u32],
    diff_mask: &[u8],
    frequencies: &DocumentFrequency,
    config: &ImportanceConfig,
) -> Vec<f32> {
    debug_assert!(
        classes.len() == token_ids.len() && token_ids.len() == diff_mask.len(),
        "classes, token_ids and diff_mask must have one entry per token"
    );
    let class_weights = config.class_weights();
    let ImportanceConfig { rarity, diff_factor, .. } = *config;
    let mut weights: Vec<f32> = classes
        .iter()
        .zip(token_ids)
        .zip(diff_mask)
        .map(|((&class, &token), &diff)| {
            let class_weight = class_weights[usize::from(class)];
            let rarity_factor = 1.0 + rarity * (f64::from(frequencies.idf(token)) - 1.0);
            let diff_factor = if diff == 0 { 1.0 } else { diff_factor };
            // `max` also maps NaN to 0: an invalid config cannot poison the column.
            (class_weight * rarity_factor * diff_factor).max(0.0) as f32
        })
        .collect();
    let total: f64 = weights.iter().copied().map(f64::from).sum();
    if !(total.is_finite() && total > 0.0) {
        weights.fill(1.0);
        return weights;
    }
    let scale = weights.len() as f64 / total;
    for weight in &mut weights {
        *weight = (f64::from(*weight) * scale) as f32;
    }
    weights
}

#[cfg(test)]
mod tests;
