//! The crate's one error type. Every variant says where the problem is: the file
//! (when there is one), the row and the field, so a user can find the bad input.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

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
    /// The run has no pair to write: the inputs hold no rows, or every row was set aside.
    /// The rows set aside are in the quarantine file, written before this error.
    #[error("{}", no_pairs(*rows_read, files, reasons, quarantine))]
    NoPairs {
        /// Rows read from the inputs, every one of them quarantined.
        rows_read: u64,
        /// The input files.
        files: Vec<PathBuf>,
        /// How many rows were set aside for each kind of reason.
        reasons: BTreeMap<String, u64>,
        /// The quarantine file, which lists each row with its reason.
        quarantine: PathBuf,
    },
    /// A list column of prepared pairs would hold more tokens than the 32-bit offsets of an
    /// Arrow list address (`i32::MAX`).
    #[error("{}", too_many_tokens(*shard, column, *tokens))]
    TooManyTokens {
        /// The shard being built; `None` for a batch of pass 1 shipped by another engine.
        shard: Option<usize>,
        /// The column.
        column: String,
        /// The tokens it would hold.
        tokens: usize,
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

/// Input files shown by name in a message before the rest are counted.
const FILES_NAMED: usize = 3;

fn no_pairs(
    rows_read: u64,
    files: &[PathBuf],
    reasons: &BTreeMap<String, u64>,
    quarantine: &Path,
) -> String {
    let mut names: Vec<String> =
        files.iter().take(FILES_NAMED).map(|file| file.display().to_string()).collect();
    if files.len() > FILES_NAMED {
        names.push(format!("{} more files", files.len() - FILES_NAMED));
    }
    let names = names.join(", ");
    if rows_read == 0 {
        return format!("no pairs to prepare: the input files hold no rows ({names})");
    }
    let mut counts: Vec<(&String, &u64)> = reasons.iter().collect();
    counts.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let counts: Vec<String> =
        counts.iter().map(|(reason, count)| format!("{reason}: {count}")).collect();
    format!(
        "no pairs to prepare: all {rows_read} rows read from {names} were quarantined ({}); \
         {} lists each row with its reason",
        counts.join("; "),
        quarantine.display()
    )
}

fn too_many_tokens(shard: Option<usize>, column: &str, tokens: usize) -> String {
    let (batch, option) = match shard {
        Some(index) => (format!("shard {index}"), "shard_rows (pairs per shard)"),
        None => ("a shipped batch".to_owned(), "batch_rows (rows processed together)"),
    };
    format!(
        "{batch}: column '{column}' would hold {tokens} tokens, more than the {} that the \
         32-bit offsets of an Arrow list address; lower {option}",
        i32::MAX
    )
}
