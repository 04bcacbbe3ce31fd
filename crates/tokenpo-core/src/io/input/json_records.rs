//! The raw records of a JSON input, one in memory at a time: the lines of JSON Lines, or
//! the elements of a document that is one JSON array. Each record is a row's bytes, not
//! yet parsed, so that the local reader and another engine's workers parse them alike.
//!
//! `.json` is read as Hugging Face `datasets` reads it: a document whose first character
//! is `[` is one JSON array of rows; any other is JSON Lines. `.jsonl` and `.ndjson` are
//! always JSON Lines.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::{InputFormat, file_error};
use crate::error::{Error, Result};

/// The UTF-8 byte order mark some editors write at the start of a file.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";
/// Read buffer: records are read from it one at a time.
const BUFFER_BYTES: usize = 1 << 16;

/// How a JSON input holds its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonLayout {
    /// One JSON value per line; rows are numbered by physical line from 0, blank lines
    /// included (they are skipped, not rows), so row `r` is line `r + 1` in an editor.
    Lines,
    /// One JSON array; each element is a row, numbered by its index in the array.
    Array,
}

impl JsonLayout {
    /// What one record is called in quarantine reasons: `line` or `element`.
    #[must_use]
    pub fn record_name(self) -> &'static str {
        match self {
            Self::Lines => "line",
            Self::Array => "element",
        }
    }
}

/// The records of one JSON input, in order.
pub(super) struct JsonRecords {
    path: PathBuf,
    layout: JsonLayout,
    reader: BufReader<File>,
    record: Vec<u8>,
    /// The number of the next record.
    next: u64,
    /// An array's closing bracket has been read.
    closed: bool,
}

impl JsonRecords {
    /// Opens a JSON input of `format` ([`InputFormat::Json`] or [`InputFormat::Jsonl`]) and
    /// finds its layout. A `.jsonl` or `.ndjson` file holding a JSON array is an error.
    pub(super) fn open(path: &Path, format: InputFormat) -> Result<Self> {
        let file = File::open(path).map_err(|error| Error::io(path, &error))?;
        let mut reader = BufReader::with_capacity(BUFFER_BYTES, file);
        let start = reader.fill_buf().map_err(|error| Error::io(path, &error))?;
        let bom = if start.starts_with(BYTE_ORDER_MARK) { BYTE_ORDER_MARK.len() } else { 0 };
        let bracket = start[bom..]
            .iter()
            .position(|byte| !is_json_whitespace(*byte))
            .filter(|&at| start[bom + at] == b'[');
        let layout = match (bracket, format) {
            (Some(at), InputFormat::Json) => {
                reader.consume(bom + at + 1);
                JsonLayout::Array
            }
            (Some(_), _) => {
                return Err(file_error(
                    path,
                    "holds a JSON array; expected JSON Lines, one object per line (a .json \
                     file may hold an array of rows)"
                        .into(),
                ));
            }
            (None, _) => {
                reader.consume(bom);
                JsonLayout::Lines
            }
        };
        Ok(Self {
            path: path.to_owned(),
            layout,
            reader,
            record: Vec::new(),
            next: 0,
            closed: false,
        })
    }

    /// How the input holds its rows.
    pub(super) fn layout(&self) -> JsonLayout {
        self.layout
    }

    /// The next record and its row number; `None` at the end; an error when the file
    /// cannot be read further (an array that is not closed, or holds more after it closes).
    pub(super) fn next_record(&mut self) -> Option<Result<(u64, &[u8])>> {
        let more = match self.layout {
            JsonLayout::Lines => self.read_line(),
            JsonLayout::Array => self.read_element(),
        };
        match more {
            Ok(true) => {
                self.next += 1;
                Some(Ok((self.next - 1, &self.record)))
            }
            Ok(false) => None,
            Err(error) => Some(Err(error)),
        }
    }

    fn read_line(&mut self) -> Result<bool> {
        self.record.clear();
        let read = self.reader.read_until(b'\n', &mut self.record);
        Ok(read.map_err(|error| Error::io(&self.path, &error))? > 0)
    }

    /// Reads up to the `,` or `]` that ends the next element at the array's top level.
    /// Only strings and brackets are followed, not the JSON grammar: an element that is not
    /// valid JSON is its row's problem, and the next element is found all the same.
    fn read_element(&mut self) -> Result<bool> {
        if self.closed {
            return self.check_nothing_follows().map(|()| false);
        }
        self.record.clear();
        let (mut depth, mut in_string, mut escaped) = (0_usize, false, false);
        loop {
            let buffer = self.reader.fill_buf().map_err(|error| Error::io(&self.path, &error))?;
            if buffer.is_empty() {
                let place = if in_string { ", inside a string" } else { "" };
                return Err(file_error(
                    &self.path,
                    format!(
                        "the JSON array is not closed: the file ends in element {}{place}",
                        self.next
                    ),
                ));
            }
            let mut end = None;
            for (at, &byte) in buffer.iter().enumerate() {
                if in_string {
                    match byte {
                        _ if escaped => escaped = false,
                        b'\\' => escaped = true,
                        b'"' => in_string = false,
                        _ => {}
                    }
                    continue;
                }
                match byte {
                    b'"' => in_string = true,
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' if depth > 0 => depth -= 1,
                    b',' | b']' if depth == 0 => {
                        end = Some((at, byte == b']'));
                        break;
                    }
                    _ => {}
                }
            }
            let Some((at, closes)) = end else {
                let read = buffer.len();
                self.record.extend_from_slice(buffer);
                self.reader.consume(read);
                continue;
            };
            self.record.extend_from_slice(&buffer[..at]);
            self.reader.consume(at + 1);
            if closes {
                self.closed = true;
                // `[]`, or a comma before the bracket: no element after the last comma.
                if self.record.iter().all(|&byte| is_json_whitespace(byte)) {
                    return self.check_nothing_follows().map(|()| false);
                }
            }
            return Ok(true);
        }
    }

    /// After the array's closing bracket, only whitespace may follow.
    fn check_nothing_follows(&mut self) -> Result<()> {
        loop {
            let buffer = self.reader.fill_buf().map_err(|error| Error::io(&self.path, &error))?;
            if buffer.is_empty() {
                return Ok(());
            }
            if !buffer.iter().all(|&byte| is_json_whitespace(byte)) {
                return Err(file_error(
                    &self.path,
                    format!(
                        "holds more after its JSON array of {} elements closes; expected one \
                         array of rows, or JSON Lines",
                        self.next
                    ),
                ));
            }
            let read = buffer.len();
            self.reader.consume(read);
        }
    }
}

/// The whitespace of the JSON grammar (a no-break space, say, is not).
pub(super) fn is_json_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}
