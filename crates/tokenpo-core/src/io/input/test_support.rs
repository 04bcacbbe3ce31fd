//! Helpers shared by the input tests.

use std::path::Path;

use super::{ColumnMap, read_pairs};
use crate::error::Error;
use crate::pair::{Message, RawPair, RowOutcome, RowSource, Turns};

/// Every batch of `path` as input number 3.
pub(super) fn read_batches(
    path: &Path,
    map: &ColumnMap,
    batch_rows: usize,
) -> Vec<Vec<RowOutcome>> {
    read_pairs(path, 3, map, batch_rows).unwrap().collect::<Result<_, _>>().unwrap()
}

/// Every row of `path`, read with the identity map.
pub(super) fn read_rows(path: &Path) -> Vec<RowOutcome> {
    read_batches(path, &ColumnMap::identity(), 1000).into_iter().flatten().collect()
}

/// The file-level error of opening `path` with `map`.
pub(super) fn open_error(path: &Path, map: &ColumnMap) -> String {
    match read_pairs(path, 0, map, 10) {
        Err(Error::File { file, reason }) => {
            assert_eq!(file, path);
            reason
        }
        Err(other) => panic!("expected a file error, got {other:?}"),
        Ok(_) => panic!("{} opened", path.display()),
    }
}

/// `(row, field, reason)` of each quarantined row.
pub(super) fn quarantined(rows: &[RowOutcome]) -> Vec<(u64, Option<&str>, &str)> {
    rows.iter()
        .filter_map(|row| row.as_ref().err())
        .map(|record| (record.source.row, record.field.as_deref(), record.reason.as_str()))
        .collect()
}

/// The row numbers of the pairs read.
pub(super) fn pair_rows(rows: &[RowOutcome]) -> Vec<u64> {
    rows.iter().filter_map(|row| row.as_ref().ok()).map(|pair| pair.source.row).collect()
}

/// A text pair of input 3 with no id and no scores.
pub(super) fn text_pair(row: u64, prompt: Option<&str>, chosen: &str, rejected: &str) -> RawPair {
    RawPair {
        source: RowSource { file: 3, row },
        id: None,
        prompt: prompt.map(|text| Turns::Text(text.to_owned())),
        chosen: Turns::Text(chosen.to_owned()),
        rejected: Turns::Text(rejected.to_owned()),
        score_chosen: None,
        score_rejected: None,
    }
}

/// Messages from `(role, content)` pairs.
pub(super) fn messages(turns: &[(&str, &str)]) -> Turns {
    Turns::Messages(
        turns
            .iter()
            .map(|(role, content)| Message {
                role: (*role).to_owned(),
                content: (*content).to_owned(),
            })
            .collect(),
    )
}
