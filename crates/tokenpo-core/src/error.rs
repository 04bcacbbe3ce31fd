//! The crate's one error type. Every variant says where the problem is: the file
//! (when there is one), the row and the field, so a user can find the bad input.

use std::fmt;
use std::path::PathBuf;

use arrow_schema::{ArrowError, DataType};

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in the input a problem was found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The input file, when the data came from one.
    pub file: Option<PathBuf>,
    /// The row, counted from 0 across all chunks of the input.
    pub row: Option<u64>,
    /// The column or argument name.
    pub field: Option<String>,
}

impl Error {
    /// A file-level error from an I/O error.
    #[must_use]
    pub fn io(file: &std::path::Path, error: &std::io::Error) -> Self {
        Self::File { file: file.to_owned(), reason: error.to_string() }
    }
}

impl Location {
    /// A location naming a field and a row of in-memory data.
    #[must_use]
    pub fn row(field: &str, row: usize) -> Self {
        Self { file: None, row: Some(row as u64), field: Some(field.to_owned()) }
    }

    /// A location naming only a field.
    #[must_use]
    pub fn field(field: &str) -> Self {
        Self { file: None, row: None, field: Some(field.to_owned()) }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::with_capacity(3);
        if let Some(file) = &self.file {
            parts.push(file.display().to_string());
        }
        if let Some(row) = self.row {
            parts.push(format!("row {row}"));
        }
        if let Some(field) = &self.field {
            parts.push(format!("field '{field}'"));
        }
        if parts.is_empty() { f.write_str("input") } else { f.write_str(&parts.join(", ")) }
    }
}

/// Everything that can go wrong in `tokenpo-core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One row holds a value the operation cannot use (a null, a negative token id, ...).
    #[error("{location}: {reason}")]
    InvalidRow {
        /// Where the row is.
        location: Location,
        /// What is wrong with it.
        reason: String,
    },
    /// A column has a type the operation does not accept.
    #[error("{location}: expected {expected}, found {found}")]
    Schema {
        /// The column.
        location: Location,
        /// What was expected, in words.
        expected: String,
        /// The type that was found.
        found: DataType,
    },
    /// Two columns that must be row-aligned have different lengths.
    #[error("'{left_field}' has {left_rows} rows but '{right_field}' has {right_rows}")]
    LengthMismatch {
        /// Name of the first column.
        left_field: String,
        /// Its row count.
        left_rows: usize,
        /// Name of the second column.
        right_field: String,
        /// Its row count.
        right_rows: usize,
    },
    /// A whole input or output file cannot be used: missing, unreadable, in an unknown
    /// format, or without the required columns. Stops the run.
    #[error("{}: {reason}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong, in words (for missing columns: which, and the columns found).
        reason: String,
    },
    /// The tokenizer (or its config) cannot be loaded or used.
    #[error("{}: {reason}", file.display())]
    Tokenizer {
        /// The tokenizer.json or model directory.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("{field}: {reason}")]
    Config {
        /// The option at fault.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// An Arrow kernel failed.
    #[error("{location}: {source}")]
    Arrow {
        /// Where.
        location: Location,
        /// The Arrow error.
        #[source]
        source: ArrowError,
    },
}
