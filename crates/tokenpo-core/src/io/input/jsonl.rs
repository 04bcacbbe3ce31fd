//! JSONL files (one JSON object per line) as streams of rows, read line by line.
//!
//! Rows are numbered by physical line from 0, blank lines included (they are skipped,
//! not rows), so row `r` of a quarantine record is line `r + 1` in an editor.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::columns::{Column, ColumnMap};
use super::file_error;
use super::row::{Reason, RowFields, Slot, assemble, malformed_message, message};
use crate::error::{Error, Result};
use crate::pair::{Message, Quarantined, RowOutcome, RowSource, Turns};

/// The UTF-8 byte order mark some editors write at the start of a file.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";
/// Read buffer: lines are read from it one at a time.
const BUFFER_BYTES: usize = 1 << 16;
/// How many objects at the start of a file are checked for the required columns.
const PEEKED_OBJECTS: usize = 100;

/// The rows of a JSONL file, one line in memory at a time.
pub(super) struct JsonlRows {
    path: PathBuf,
    map: ColumnMap,
    reader: BufReader<File>,
    line: Vec<u8>,
    /// Where the next line is in the file.
    next: RowSource,
}

impl JsonlRows {
    /// Opens a JSONL file. A file whose first character is `[` (one JSON array, not one
    /// object per line) is an error, and so is one whose first objects all lack a required
    /// column (a wrong column map, most likely): see [`check_required_columns`].
    pub(super) fn open(path: &Path, file_index: u32, map: &ColumnMap) -> Result<Self> {
        check_required_columns(path, map)?;
        let file = File::open(path).map_err(|error| Error::io(path, &error))?;
        let mut reader = BufReader::with_capacity(BUFFER_BYTES, file);
        let start = reader.fill_buf().map_err(|error| Error::io(path, &error))?;
        let bom = if start.starts_with(BYTE_ORDER_MARK) { BYTE_ORDER_MARK.len() } else { 0 };
        if start[bom..].iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[') {
            return Err(file_error(
                path,
                "holds a JSON array; expected JSON Lines, one object per line".into(),
            ));
        }
        reader.consume(bom);
        Ok(Self {
            path: path.to_owned(),
            map: map.clone(),
            reader,
            line: Vec::new(),
            next: RowSource { file: file_index, row: 0 },
        })
    }

    /// The next row, `None` at the end, or an error when the file cannot be read further.
    pub(super) fn next_row(&mut self) -> Option<Result<RowOutcome>> {
        loop {
            self.line.clear();
            match self.reader.read_until(b'\n', &mut self.line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) => return Some(Err(Error::io(&self.path, &error))),
            }
            let source = self.next;
            self.next.row += 1;
            if let Some(outcome) = parse_line(&self.line, source, &self.map) {
                return Some(Ok(outcome));
            }
        }
    }
}

/// Fails when none of the first [`PEEKED_OBJECTS`] objects of the file has a required
/// column, naming the column and listing the keys found, as the Arrow readers do from
/// the schema. A row that lacks one while others have it is only quarantined.
fn check_required_columns(path: &Path, map: &ColumnMap) -> Result<()> {
    let file = File::open(path).map_err(|error| Error::io(path, &error))?;
    let objects: Vec<Map<String, Value>> = BufReader::with_capacity(BUFFER_BYTES, file)
        .split(b'\n')
        .map_while(std::result::Result::ok)
        .filter_map(|line| {
            let line = line.strip_prefix(BYTE_ORDER_MARK).unwrap_or(&line);
            match serde_json::from_slice(line) {
                Ok(Value::Object(object)) => Some(object),
                _ => None,
            }
        })
        .take(PEEKED_OBJECTS)
        .collect();
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

/// The row on one line, or `None` for a blank line.
pub(super) fn parse_line(line: &[u8], source: RowSource, map: &ColumnMap) -> Option<RowOutcome> {
    let quarantine = |reason: &str| Quarantined { source, field: None, reason: reason.to_owned() };
    let Ok(text) = std::str::from_utf8(line) else {
        return Some(Err(quarantine("line is not valid UTF-8")));
    };
    // Only JSON's whitespace makes a line blank: a line of other whitespace (a no-break
    // space, a line separator) is not JSON, and set aside rather than lost.
    if text.bytes().all(|byte| matches!(byte, b' ' | b'\t' | b'\r' | b'\n')) {
        return None;
    }
    Some(match serde_json::from_str(text) {
        Ok(Value::Object(object)) => assemble(source, &JsonRow { object: &object, map }),
        Ok(_) => Err(quarantine("line is not a JSON object")),
        Err(_) => Err(quarantine("line is not valid JSON")),
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
