//! Turning the fields of one row, whatever the file format, into a pair or the reason
//! it was set aside. Every format goes through [`assemble`], so the rules and the
//! quarantine reasons are the same for all of them.

use super::columns::Column;
use crate::pair::{Message, Quarantined, RawPair, RowOutcome, RowSource, Turns};

/// A field of one row as the file holds it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Slot<T> {
    /// The file has no such field (no column; a JSONL object without the key).
    Missing,
    /// The field is null.
    Null,
    /// The field's value.
    Value(T),
}

/// Why a field of a row cannot be used, in words that start with the field's name.
pub(super) type Reason = String;

/// The fields of one row, read from a record batch or a JSON object.
pub(super) trait RowFields {
    /// `prompt`, `chosen` or `rejected`: text or messages.
    fn turns(&self, column: Column) -> Result<Slot<Turns>, Reason>;
    /// `score_chosen` or `score_rejected`.
    fn score(&self, column: Column) -> Result<Slot<f64>, Reason>;
    /// `id`, as text.
    fn id(&self) -> Result<Slot<String>, Reason>;
}

/// The pair in `row`, or why it was set aside.
///
/// A null or missing prompt means the row has none. Accepted shapes: a text prompt (or
/// none) with text completions, a messages prompt (or none) with messages completions.
pub(super) fn assemble(source: RowSource, row: &impl RowFields) -> RowOutcome {
    let at =
        |column: Column| move |reason: Reason| Quarantined::field(source, column.name(), reason);
    let id = row.id().map_err(at(Column::Id))?.into_option();
    let prompt = row.turns(Column::Prompt).map_err(at(Column::Prompt))?.into_option();
    let chosen = completion(row, Column::Chosen).map_err(at(Column::Chosen))?;
    let rejected = completion(row, Column::Rejected).map_err(at(Column::Rejected))?;
    if is_messages(&chosen) != is_messages(&rejected) {
        return Err(Quarantined {
            source,
            field: None,
            reason: "chosen and rejected mix text and messages".into(),
        });
    }
    if prompt.as_ref().is_some_and(|prompt| is_messages(prompt) != is_messages(&chosen)) {
        return Err(at(Column::Prompt)("prompt and completions mix text and messages".into()));
    }
    let score_chosen = score(row, Column::ScoreChosen).map_err(at(Column::ScoreChosen))?;
    let score_rejected = score(row, Column::ScoreRejected).map_err(at(Column::ScoreRejected))?;
    Ok(RawPair { source, id, prompt, chosen, rejected, score_chosen, score_rejected })
}

/// `chosen` or `rejected`: present, non-null and non-empty.
fn completion(row: &impl RowFields, column: Column) -> Result<Turns, Reason> {
    let name = column.name();
    match row.turns(column)? {
        Slot::Missing => Err(format!("{name} is missing")),
        Slot::Null => Err(format!("{name} is null")),
        Slot::Value(Turns::Text(text)) if text.is_empty() => Err(format!("{name} is empty")),
        Slot::Value(Turns::Messages(messages)) if messages.is_empty() => {
            Err(format!("{name} is empty"))
        }
        Slot::Value(turns) => Ok(turns),
    }
}

fn score(row: &impl RowFields, column: Column) -> Result<Option<f64>, Reason> {
    match row.score(column)?.into_option() {
        Some(value) if !value.is_finite() => Err(format!("{} is not finite", column.name())),
        value => Ok(value),
    }
}

fn is_messages(turns: &Turns) -> bool {
    matches!(turns, Turns::Messages(_))
}

impl<T> Slot<T> {
    fn into_option(self) -> Option<T> {
        match self {
            Self::Value(value) => Some(value),
            Self::Missing | Self::Null => None,
        }
    }

    /// Applies `f` to the value, if any, keeping its error.
    pub(super) fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Slot<U>, E> {
        Ok(match self {
            Self::Value(value) => Slot::Value(f(value)?),
            Self::Missing => Slot::Missing,
            Self::Null => Slot::Null,
        })
    }

    /// Applies `f` to the value, if any.
    pub(super) fn map<U>(self, f: impl FnOnce(T) -> U) -> Slot<U> {
        match self {
            Self::Value(value) => Slot::Value(f(value)),
            Self::Missing => Slot::Missing,
            Self::Null => Slot::Null,
        }
    }
}

/// The reason for a message that is not `{role, content}` with both strings.
pub(super) fn malformed_message(column: Column) -> Reason {
    format!("{} has a message without a string role and content", column.name())
}

/// The reason for text that is not UTF-8.
pub(super) fn not_utf8(column: Column) -> Reason {
    format!("{} is not valid UTF-8", column.name())
}

/// Builds one message, or `None` when either part is absent.
pub(super) fn message(role: Option<&str>, content: Option<&str>) -> Option<Message> {
    Some(Message { role: role?.to_owned(), content: content?.to_owned() })
}
