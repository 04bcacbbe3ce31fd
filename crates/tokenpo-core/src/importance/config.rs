//! The coefficients of the importance weights and their two presets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FIRST_KEYED_VALUE, KEY, SCAFFOLDING, TEXT};
use crate::{Error, Result};

/// How much each signal counts in a token's importance weight (see [`super::token_weights`]).
///
/// Recorded in the manifest. Missing fields take the values of [`ImportanceConfig::default`];
/// unknown fields are an error, so a misspelt option does not pass silently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportanceConfig {
    /// Weight of class [`TEXT`]: tokens of a completion that holds no JSON, or of the text
    /// around the JSON.
    pub text: f64,
    /// Weight of class [`SCAFFOLDING`]: JSON punctuation, layout and empty-span tokens.
    pub scaffolding: f64,
    /// Weight of class [`KEY`]: the characters of object keys.
    pub key: f64,
    /// Weight of class [`VALUE`](super::VALUE): values whose innermost key is not in `value_keys`.
    pub value: f64,
    /// Weights of values under particular keys (innermost enclosing object key, matched
    /// exactly after unescaping). Kept sorted by name: class `FIRST_KEYED_VALUE + i` is the
    /// i-th key in this order.
    pub value_keys: BTreeMap<String, f64>,
    /// How strongly rare tokens are favoured: the class weight is multiplied by
    /// `1 + rarity · (idf − 1)`, where `idf ≥ 1` is 1 for a token found in every pair.
    /// 0 turns rarity off.
    pub rarity: f64,
    /// Factor on tokens outside the LCS of chosen and rejected (the diff mask); 1 turns it off.
    pub diff_factor: f64,
}

impl Default for ImportanceConfig {
    /// The general preset, for JSON or text completions of any schema.
    ///
    /// - `value` 1.5, `text` 1.0: values carry the answer, and what separates a chosen from
    ///   a rejected structured completion is almost always a value; prose is neutral.
    /// - `key` 0.8: keys are mostly fixed by the schema, but which keys appear (a field
    ///   present or missing) still matters, so they keep most of their weight.
    /// - `scaffolding` 0.5: braces, quotes and commas are near-certain given the schema and
    ///   an SFT model already predicts them well; half weight moves the budget to content
    ///   while keeping a gradient on them (one lost brace breaks the parse).
    /// - `rarity` 0.1: idf runs from 1 (a token in every pair) to about 15 (one pair in
    ///   millions), so the rarest tokens (names, codes, numbers) get up to ~2.4× the
    ///   commonest: a nudge, not enough for rare noise to dominate.
    /// - `diff_factor` 1.5: the tokens where the completions differ are where the preference
    ///   signal is. Stronger than TAB-PO's 1.2 because the LCS diff marks only the tokens
    ///   that really differ, where a positional comparison marks everything after the first
    ///   insertion.
    fn default() -> Self {
        Self {
            text: 1.0,
            scaffolding: 0.5,
            key: 0.8,
            value: 1.5,
            value_keys: BTreeMap::new(),
            rarity: 0.1,
            diff_factor: 1.5,
        }
    }
}

impl ImportanceConfig {
    /// The token classes of the TAB-PO authors' `train_dpo.py` (arXiv 2603.00025): values
    /// under `code` 1.1, under `subcode` 1.2, under `span` 1.1, every other token 1.0, and
    /// ×1.2 on tokens that differ from the other completion (the authors compare by
    /// position; prep uses the LCS diff); no rarity term. [`super::token_weights`] then
    /// normalises to mean 1, as the authors' loss does.
    #[must_use]
    pub fn tabpo_authors() -> Self {
        Self {
            text: 1.0,
            scaffolding: 1.0,
            key: 1.0,
            value: 1.0,
            value_keys: BTreeMap::from([
                ("code".to_owned(), 1.1),
                ("span".to_owned(), 1.1),
                ("subcode".to_owned(), 1.2),
            ]),
            rarity: 0.0,
            diff_factor: 1.2,
        }
    }

    /// Checks that every coefficient is finite and non-negative, that `diff_factor` is
    /// positive, and that the value keys fit the class numbering.
    pub fn validate(&self) -> Result<()> {
        let coefficients = [
            ("text", self.text),
            ("scaffolding", self.scaffolding),
            ("key", self.key),
            ("value", self.value),
            ("rarity", self.rarity),
        ];
        for (field, coefficient) in coefficients {
            check_non_negative(field, coefficient)?;
        }
        for (name, weight) in &self.value_keys {
            check_non_negative(&format!("value_keys.{name}"), *weight)?;
        }
        if !(self.diff_factor.is_finite() && self.diff_factor > 0.0) {
            return Err(config_error(
                "diff_factor",
                format!("must be finite and > 0, got {}", self.diff_factor),
            ));
        }
        let max_keys = usize::from(u8::MAX - FIRST_KEYED_VALUE) + 1;
        if self.value_keys.len() > max_keys {
            return Err(config_error(
                "value_keys",
                format!("at most {max_keys} keys can be weighted, got {}", self.value_keys.len()),
            ));
        }
        Ok(())
    }

    /// The names of the value keys in class order, as [`super::classify_tokens`] takes them.
    #[must_use]
    pub fn value_key_names(&self) -> Vec<String> {
        self.value_keys.keys().cloned().collect()
    }

    /// The weight of every possible class, indexed by class. Classes beyond the configured
    /// value keys weigh as [`VALUE`](super::VALUE).
    pub(super) fn class_weights(&self) -> [f64; 256] {
        let mut weights = [self.value; 256];
        weights[usize::from(TEXT)] = self.text;
        weights[usize::from(SCAFFOLDING)] = self.scaffolding;
        weights[usize::from(KEY)] = self.key;
        let keyed = &mut weights[usize::from(FIRST_KEYED_VALUE)..];
        for (slot, weight) in keyed.iter_mut().zip(self.value_keys.values()) {
            *slot = *weight;
        }
        weights
    }
}

fn check_non_negative(field: &str, coefficient: f64) -> Result<()> {
    if coefficient.is_finite() && coefficient >= 0.0 {
        Ok(())
    } else {
        Err(config_error(field, format!("must be finite and >= 0, got {coefficient}")))
    }
}

fn config_error(field: &str, reason: String) -> Error {
    Error::Config { field: format!("importance.{field}"), reason }
}
