//! The input columns prep knows, and the map from their names to a file's names.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};

/// The option that carries the column map, named in configuration errors.
const OPTION: &str = "column_map";

/// A column prep reads, by its canonical (TRL) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Column {
    Prompt,
    Chosen,
    Rejected,
    ScoreChosen,
    ScoreRejected,
    Id,
}

impl Column {
    /// Every column.
    pub(super) const ALL: [Self; 6] = [
        Self::Prompt,
        Self::Chosen,
        Self::Rejected,
        Self::ScoreChosen,
        Self::ScoreRejected,
        Self::Id,
    ];

    /// The canonical name.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Prompt => "prompt",
            Self::Chosen => "chosen",
            Self::Rejected => "rejected",
            Self::ScoreChosen => "score_chosen",
            Self::ScoreRejected => "score_rejected",
            Self::Id => "id",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|column| column.name() == name)
    }

    /// Whether a file without this column cannot be read.
    pub(super) fn is_required(self) -> bool {
        matches!(self, Self::Chosen | Self::Rejected)
    }
}

/// Which column of a file holds each canonical column (`prompt`, `chosen`, `rejected`,
/// `score_chosen`, `score_rejected`, `id`). Columns not renamed keep their canonical name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnMap {
    renamed: BTreeMap<Column, String>,
}

impl ColumnMap {
    /// The map that renames nothing.
    #[must_use]
    pub fn identity() -> Self {
        Self::default()
    }

    /// Parses `canonical=actual` pairs separated by commas, as given to `--column-map`:
    /// `chosen=response_a,rejected=response_b`. Spaces around names are ignored.
    pub fn parse(spec: &str) -> Result<Self> {
        let pairs = spec.split(',').filter(|part| !part.trim().is_empty()).map(|part| {
            part.split_once('=')
                .map(|(canonical, actual)| (canonical.trim(), actual.trim()))
                .ok_or_else(|| {
                    config_error(format!("'{}' is not of the form canonical=actual", part.trim()))
                })
        });
        let mut map = Self::identity();
        for pair in pairs {
            let (canonical, actual) = pair?;
            map.insert(canonical, actual)?;
        }
        Ok(map)
    }

    /// Builds the map from canonical → actual pairs (as a config file holds them).
    pub fn from_pairs(pairs: &BTreeMap<String, String>) -> Result<Self> {
        let mut map = Self::identity();
        for (canonical, actual) in pairs {
            map.insert(canonical.trim(), actual.trim())?;
        }
        Ok(map)
    }

    /// The name in the file of the canonical column `canonical`, or `None` when
    /// `canonical` is not a column prep reads.
    #[must_use]
    pub fn actual(&self, canonical: &str) -> Option<&str> {
        Column::from_name(canonical).map(|column| self.name_of(column))
    }

    /// The name in the file of `column`.
    pub(super) fn name_of(&self, column: Column) -> &str {
        self.renamed.get(&column).map_or(column.name(), String::as_str)
    }

    /// How `column` is named in messages: `chosen`, or `'response_a' (chosen)` when renamed.
    pub(super) fn describe(&self, column: Column) -> String {
        match self.renamed.get(&column) {
            Some(actual) => format!("'{actual}' ({})", column.name()),
            None => format!("'{}'", column.name()),
        }
    }

    fn insert(&mut self, canonical: &str, actual: &str) -> Result<()> {
        let column = Column::from_name(canonical).ok_or_else(|| {
            let known: Vec<&str> = Column::ALL.iter().map(|column| column.name()).collect();
            config_error(format!(
                "unknown column '{canonical}' (expected one of: {})",
                known.join(", ")
            ))
        })?;
        if actual.is_empty() {
            return Err(config_error(format!("column '{canonical}' is mapped to an empty name")));
        }
        if self.renamed.insert(column, actual.to_owned()).is_some() {
            return Err(config_error(format!("column '{canonical}' is mapped twice")));
        }
        Ok(())
    }
}

/// Prints the renamed columns in the form [`ColumnMap::parse`] reads.
impl fmt::Display for ColumnMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self
            .renamed
            .iter()
            .map(|(column, actual)| format!("{}={actual}", column.name()))
            .collect();
        f.write_str(&pairs.join(","))
    }
}

fn config_error(reason: String) -> Error {
    Error::Config { field: OPTION.to_owned(), reason }
}
