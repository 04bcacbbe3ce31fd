//! A raw preference pair as read from an input file, before tokenization, and the
//! record of a row that could not be used.

use serde::{Deserialize, Serialize};

/// One chat message of a conversational row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The message text.
    pub content: String,
}

/// A prompt or a completion: plain text (TRL's standard format) or messages (TRL's
/// conversational format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turns {
    /// Plain text.
    Text(String),
    /// A list of `{role, content}` messages.
    Messages(Vec<Message>),
}

/// Where a row came from: the input file (its index in the run's list of inputs) and
/// the row number in that file, counted from 0.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct RowSource {
    /// Index of the file in the sorted list of inputs.
    pub file: u32,
    /// Row in that file, from 0.
    pub row: u64,
}

/// One preference pair as read, validated for presence and type but not yet tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPair {
    /// Where the row came from.
    pub source: RowSource,
    /// The `id` column when present and non-null.
    pub id: Option<String>,
    /// The prompt; `None` when the input has no prompt column (conversational rows then
    /// take the longest common message prefix of chosen and rejected as the prompt).
    pub prompt: Option<Turns>,
    /// The chosen completion.
    pub chosen: Turns,
    /// The rejected completion.
    pub rejected: Turns,
    /// `score_chosen` when present and non-null.
    pub score_chosen: Option<f64>,
    /// `score_rejected` when present and non-null.
    pub score_rejected: Option<f64>,
}

/// A row that was set aside, with the reason; written to `quarantine.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// Where the row came from.
    pub source: RowSource,
    /// The field at fault, when one is.
    pub field: Option<String>,
    /// Why the row was set aside, in words.
    pub reason: String,
}

impl Quarantined {
    /// A quarantine record naming a field.
    #[must_use]
    pub fn field(source: RowSource, field: &str, reason: impl Into<String>) -> Self {
        Self { source, field: Some(field.to_owned()), reason: reason.into() }
    }
}

/// What reading one row gives: a pair, or the reason it was set aside.
pub type RowOutcome = Result<RawPair, Quarantined>;
