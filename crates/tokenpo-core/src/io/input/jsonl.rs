//! JSON inputs as streams of rows: each record of [`JsonRecords`] (a line of JSON Lines,
//! or an element of a JSON array) parsed into a row, one record in memory at a time.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value};

use super::InputFormat;
use super::columns::{Column, ColumnMap};
use super::file_error;
use super::json_records::{JsonLayout, JsonRecords, is_json_whitespace};
use super::row::{Reason, RowFields, Slot, assemble, malformed_message, message};
use crate::error::Result;
use crate::pair::{Message, Quarantined, RowOutcome, RowSource, Turns};

/// How many objects at the start of a file are checked for the required columns.
const PEEKED_OBJECTS: usize = 100;

/// The rows of a JSON input.
pub(super) struct JsonRows {
    records: JsonRecords,
    map: ColumnMap,
    file_index: u32,
}

impl JsonRows {
    /// Opens a JSON input of `format` (see [`JsonRecords::open`]). One whose first objects
    /// all lack a required column (a wrong column map, most likely) is an error: see
    /// [`check_required_columns`].
    pub(super) fn open(
        path: &Path,
        format: InputFormat,
        file_index: u32,
        map: &ColumnMap,
    ) -> Result<Self> {
        check_required_columns(path, format, map)?;
        Ok(Self { records: JsonRecords::open(path, format)?, map: map.clone(), file_index })
    }

    /// The next row, `None` at the end, or an error when the file cannot be read further.
    pub(super) fn next_row(&mut self) -> Option<Result<RowOutcome>> {
        let layout = self.records.layout();
        loop {
            let (row, record) = match self.records.next_record()? {
                Ok(record) => record,
                Err(error) => return Some(Err(error)),
            };
            let source = RowSource { file: self.file_index, row };
            if let Some(outcome) = parse_record(record, layout, source, &self.map) {
                return Some(Ok(outcome));
            }
        }
    }
}

/// Fails when none of the first [`PEEKED_OBJECTS`] objects of the file has a required
/// column, naming the column and listing the keys found, as the Arrow readers do from
/// the schema. A row that lacks one while others have it is only quarantined.
fn check_required_columns(path: &Path, format: InputFormat, map: &ColumnMap) -> Result<()> {
    let mut records = JsonRecords::open(path, format)?;
    let mut objects: Vec<Map<String, Value>> = Vec::new();
    // A record that cannot be read ends the peek: reading the rows reports it.
    while let Some(Ok((_, record))) = records.next_record() {
        if let Ok(Value::Object(object)) = serde_json::from_slice(record) {
            objects.push(object);
            if objects.len() == PEEKED_OBJECTS {
                break;
            }
        }
    }
    if objects.is_empty() {
        return Ok(());
    }
    for column in Column::ALL.into_iter().filter(|column| column.is_required()) {
        let name = map.name_of(column);
        if objects.iter().all(|object| !object.contains_key(name)) {
            let found: BTreeSet<&str> =
                objects.iter().flat_map(|object| object.keys().map(String::as_str)).collect();
            let found: Vec<&str> = found.into_iter().collect();
            return Err(file_error(
                path,
                format!(
                    "required column {} missing from the first {} objects (keys found: {})",
                    map.describe(column),
                    objects.len(),
                    found.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The row in one record (a line or an array element, by `layout`), or `None` for a blank
/// one. A record that is not a JSON object is set aside, the reason naming the record.
pub(super) fn parse_record(
    record: &[u8],
    layout: JsonLayout,
    source: RowSource,
    map: &ColumnMap,
) -> Option<RowOutcome> {
    let quarantine = |problem: &str| Quarantined {
        source,
        field: None,
        reason: format!("{} is {problem}", layout.record_name()),
    };
    let Ok(text) = std::str::from_utf8(record) else {
        return Some(Err(quarantine("not valid UTF-8")));
    };
    // Only JSON's whitespace makes a record blank: a line of other whitespace (a no-break
    // space, a line separator) is not JSON, and set aside rather than lost.
    if text.bytes().all(is_json_whitespace) {
        return None;
    }
    Some(match serde_json::from_str(text) {
        Ok(Value::Object(object)) => assemble(source, &JsonRow { object: &object, map }),
        Ok(_) => Err(quarantine("not a JSON object")),
        Err(_) => Err(quarantine("not valid JSON")),
    })
}

/// One JSON object, read through the column map.
struct JsonRow<'a> {
    object: &'a Map<String, Value>,
    map: &'a ColumnMap,
}

impl JsonRow<'_> {
    fn get(&self, column: Column) -> Slot<&Value> {
        match self.object.get(self.map.name_of(column)) {
            None => Slot::Missing,
            Some(Value::Null) => Slot::Null,
            Some(value) => Slot::Value(value),
        }
    }
}

impl RowFields for JsonRow<'_> {
    fn turns(&self, column: Column) -> Result<Slot<Turns>, Reason> {
        self.get(column).try_map(|value| match value {
            Value::String(text) => Ok(Turns::Text(text.clone())),
            Value::Array(items) => items
                .iter()
                .map(|item| json_message(item).ok_or_else(|| malformed_message(column)))
                .collect::<Result<_, _>>()
                .map(Turns::Messages),
            other => Err(wrong_kind(column, other, "a string or a list of messages")),
        })
    }

    fn score(&self, column: Column) -> Result<Slot<f64>, Reason> {
        self.get(column)
            .try_map(|value| value.as_f64().ok_or_else(|| wrong_kind(column, value, "a number")))
    }

    fn id(&self) -> Result<Slot<String>, Reason> {
        self.get(Column::Id).try_map(|value| match value {
            Value::String(text) => Ok(text.clone()),
            Value::Number(number) if number.is_i64() || number.is_u64() => Ok(number.to_string()),
            other => Err(wrong_kind(Column::Id, other, "a string or an integer")),
        })
    }
}

/// `{"role": "...", "content": "..."}`; other keys are ignored.
fn json_message(item: &Value) -> Option<Message> {
    let object = item.as_object()?;
    message(
        object.get("role").and_then(Value::as_str),
        object.get("content").and_then(Value::as_str),
    )
}

fn wrong_kind(column: Column, value: &Value, expected: &str) -> Reason {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    format!("{} is {kind}, expected {expected}", column.name())
}
