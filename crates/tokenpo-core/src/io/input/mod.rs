//! Reading raw preference pairs from parquet, Arrow IPC and JSON files, streaming.
//!
//! The columns are TRL's: `prompt` (optional), `chosen` and `rejected`, each plain text
//! (the standard format) or a list of `{role, content}` messages (the conversational
//! format), and optionally `score_chosen`, `score_rejected` and `id`; a [`ColumnMap`]
//! renames them. Other columns are ignored.
//!
//! A file that cannot be used at all (unreadable, in another format, without `chosen` or
//! `rejected`, with a column of a type that cannot hold its values) is an
//! [`Error::File`] before any row is read. A row that cannot be used is quarantined with
//! a short reason and the run goes on; the reasons are:
//!
//! - `<field> is missing` (JSON: no such key), `<field> is null`, `<field> is empty`
//!   (an empty string or an empty list of messages), for `chosen` and `rejected`;
//! - `<field> is a number, expected a string or a list of messages` (JSON; also
//!   `a boolean`, `an object`), `<score> is a string, expected a number`,
//!   `id is a number, expected a string or an integer` (a non-integer number);
//! - `<field> has a message without a string role and content`;
//! - `<field> is not valid UTF-8` (binary Arrow columns), `<score> is not finite`;
//! - `chosen and rejected mix text and messages`, `prompt and completions mix text and
//!   messages`;
//! - JSON only, with no field: `line is not valid UTF-8`, `line is not valid JSON`,
//!   `line is not a JSON object`; for the elements of a JSON array (`.json`), the same
//!   with `element` for `line`.
//!
//! A null or missing `prompt` means the row has none; nulls in the optional columns are
//! `None`.

mod arrow_columns;
mod arrow_files;
mod columns;
mod glob;
mod json_records;
mod jsonl;
mod row;
mod shipped;

use std::path::{Path, PathBuf};

pub use columns::ColumnMap;
pub use glob::expand_inputs;
pub use json_records::JsonLayout;
pub use shipped::{
    ELEMENT_COLUMN, JsonRecordBatches, LINE_COLUMN, SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN,
    json_record_batches, shipped_rows,
};

use self::arrow_files::ArrowRows;
use self::jsonl::JsonRows;
use crate::error::{Error, Result};
use crate::io::shard::digest_file;
use crate::pair::RowOutcome;

/// The format of an input file, known from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputFormat {
    /// Apache Parquet (`.parquet`, `.pq`).
    Parquet,
    /// Arrow IPC, file or stream format (`.arrow`, `.feather`, `.ipc`, `.arrows`).
    Ipc,
    /// JSON Lines, one object per line (`.jsonl`, `.ndjson`).
    Jsonl,
    /// JSON (`.json`): one JSON array of row objects, as Hugging Face `datasets` reads
    /// `.json`, or else JSON Lines.
    Json,
}

impl InputFormat {
    /// Each accepted extension (lowercase, without the dot) and its format.
    const EXTENSIONS: [(&'static str, Self); 9] = [
        ("parquet", Self::Parquet),
        ("pq", Self::Parquet),
        ("arrow", Self::Ipc),
        ("feather", Self::Ipc),
        ("ipc", Self::Ipc),
        ("arrows", Self::Ipc),
        ("jsonl", Self::Jsonl),
        ("json", Self::Json),
        ("ndjson", Self::Jsonl),
    ];

    /// The format of `path`, from its extension (in any case). An unknown extension is an
    /// [`Error::File`] that lists the accepted ones.
    pub fn of(path: &Path) -> Result<Self> {
        let extension = path.extension().and_then(|extension| extension.to_str()).unwrap_or("");
        Self::EXTENSIONS
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(extension))
            .map(|(_, format)| *format)
            .ok_or_else(|| {
                let accepted: Vec<String> =
                    Self::EXTENSIONS.iter().map(|(known, _)| format!(".{known}")).collect();
                let found = if extension.is_empty() {
                    "no extension".to_owned()
                } else {
                    format!("unknown extension '.{extension}'")
                };
                file_error(path, format!("{found}; accepted: {}", accepted.join(", ")))
            })
    }
}

/// An input file as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// The path as given (after glob expansion).
    pub path: PathBuf,
    /// Its format.
    pub format: InputFormat,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its contents, lowercase hex.
    pub sha256: String,
}

/// The format, size and SHA-256 of `path` (read in 1 MiB blocks).
pub fn describe_input(path: &Path) -> Result<InputFile> {
    let format = InputFormat::of(path)?;
    let digest = digest_file(path)?;
    Ok(InputFile { path: path.to_owned(), format, bytes: digest.bytes, sha256: digest.sha256 })
}

/// Opens `path` (input number `file_index`) and checks its columns, then reads its pairs
/// in batches of at most `batch_rows` rows, in file order.
///
/// Each row is a [`RowOutcome`] whose source is `(file_index, row)`, the row counted from
/// 0 across the whole file (JSON Lines: the physical line, from 0, blank lines skipped but
/// counted; a JSON array: the element's index). Memory holds one batch: parquet is read
/// `batch_rows` rows at a time and only the pair columns, Arrow IPC one record batch at a
/// time, JSON line by line or element by element.
///
/// The iterator yields an error, and then ends, when the file cannot be read further.
pub fn read_pairs(
    path: &Path,
    file_index: u32,
    columns: &ColumnMap,
    batch_rows: usize,
) -> Result<PairBatches> {
    if batch_rows == 0 {
        return Err(Error::Config {
            field: "batch_rows".into(),
            reason: "must be at least 1".into(),
        });
    }
    let rows = match InputFormat::of(path)? {
        InputFormat::Parquet => {
            Rows::Arrow(ArrowRows::parquet(path, file_index, columns, batch_rows)?)
        }
        InputFormat::Ipc => Rows::Arrow(ArrowRows::ipc(path, file_index, columns)?),
        format @ (InputFormat::Jsonl | InputFormat::Json) => {
            Rows::Json(JsonRows::open(path, format, file_index, columns)?)
        }
    };
    Ok(PairBatches { rows, batch_rows, pending_error: None, finished: false })
}

/// Opens `path` as [`read_pairs`] does, so a file that cannot be used fails the same
/// way, and returns the names of the pair columns it holds: the columns another engine
/// must ship for [`shipped_rows`]. A JSON file has none (its records are shipped whole,
/// see [`json_record_batches`]).
pub fn input_columns(path: &Path, columns: &ColumnMap) -> Result<Vec<String>> {
    Ok(match read_pairs(path, 0, columns, 1)?.rows {
        Rows::Arrow(rows) => rows.column_names(),
        Rows::Json(_) => Vec::new(),
    })
}

/// The batches of rows of one input file; see [`read_pairs`].
pub struct PairBatches {
    rows: Rows,
    batch_rows: usize,
    /// An error met while filling the last batch, yielded after it.
    pending_error: Option<Error>,
    finished: bool,
}

enum Rows {
    Arrow(ArrowRows),
    Json(JsonRows),
}

impl Rows {
    fn next_row(&mut self) -> Option<Result<RowOutcome>> {
        match self {
            Self::Arrow(rows) => rows.next_row(),
            Self::Json(rows) => rows.next_row(),
        }
    }
}

impl Iterator for PairBatches {
    type Item = Result<Vec<RowOutcome>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.pending_error.take() {
            return Some(Err(error));
        }
        let mut batch = Vec::new();
        while !self.finished && batch.len() < self.batch_rows {
            match self.rows.next_row() {
                Some(Ok(row)) => batch.push(row),
                Some(Err(error)) => {
                    self.finished = true;
                    if batch.is_empty() {
                        return Some(Err(error));
                    }
                    self.pending_error = Some(error);
                }
                None => self.finished = true,
            }
        }
        (!batch.is_empty()).then_some(Ok(batch))
    }
}

/// A file-level error.
fn file_error(path: &Path, reason: String) -> Error {
    Error::File { file: path.to_owned(), reason }
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests_arrow;
#[cfg(test)]
mod tests_files;
#[cfg(test)]
mod tests_json;
#[cfg(test)]
mod tests_jsonl;
