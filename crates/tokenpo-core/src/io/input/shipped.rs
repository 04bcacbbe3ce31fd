//! Rows that another engine read and shipped as Arrow record batches (the Ray engine:
//! its read tasks slice the input files, its workers turn the slices back into rows).
//!
//! A shipped batch holds the file's own pair columns (parquet, Arrow IPC) or its raw
//! lines ([`LINE_COLUMN`], JSONL), plus where each row is in its file
//! ([`SOURCE_FILE_COLUMN`], [`SOURCE_ROW_COLUMN`]). Rows are assembled by the very code
//! the local readers use, so both engines keep and quarantine the same rows.

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use super::arrow_columns::{BatchColumns, Plan};
use super::columns::ColumnMap;
use super::jsonl::parse_line;
use super::row::assemble;
use crate::error::{Error, Location, Result};
use crate::pair::{RowOutcome, RowSource};

/// The index of the input file each row comes from (`uint32`).
pub const SOURCE_FILE_COLUMN: &str = "_tokenpo_source_file";
/// The row of each row in its file, counted as the local readers count (`uint64`).
pub const SOURCE_ROW_COLUMN: &str = "_tokenpo_source_row";
/// A JSONL line, as raw bytes (`binary`); blank lines may be present and are skipped.
pub const LINE_COLUMN: &str = "_tokenpo_line";

/// The rows of a shipped batch, in batch order; blank JSONL lines give none.
///
/// The batch must hold the two source columns; it holds [`LINE_COLUMN`] when it comes
/// from a JSONL file, else the pair columns that `columns` names.
pub fn shipped_rows(batch: &RecordBatch, columns: &ColumnMap) -> Result<Vec<RowOutcome>> {
    let sources = sources(batch)?;
    if let Some(lines) = batch.column_by_name(LINE_COLUMN) {
        let lines = lines
            .as_binary_opt::<i32>()
            .ok_or_else(|| schema_error(LINE_COLUMN, "binary", lines.data_type()))?;
        return Ok(sources
            .iter()
            .enumerate()
            .filter_map(|(index, &source)| {
                let line = if lines.is_valid(index) { lines.value(index) } else { b"" };
                parse_line(line, source, columns)
            })
            .collect());
    }
    let plan = Plan::new(&batch.schema(), columns).map_err(|reason| invalid_batch(&reason))?;
    let fields = BatchColumns::new(batch, &plan).map_err(|reason| invalid_batch(&reason))?;
    Ok(sources
        .iter()
        .enumerate()
        .map(|(index, &source)| assemble(source, &fields.row(index)))
        .collect())
}

fn sources(batch: &RecordBatch) -> Result<Vec<RowSource>> {
    let column = |name: &str, expected: &str| {
        batch.column_by_name(name).ok_or_else(|| Error::Schema {
            location: Location::field(name),
            expected: format!("a {expected} column"),
            found: DataType::Null,
        })
    };
    let files = column(SOURCE_FILE_COLUMN, "uint32")?;
    let rows = column(SOURCE_ROW_COLUMN, "uint64")?;
    let files = files
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| schema_error(SOURCE_FILE_COLUMN, "uint32", files.data_type()))?;
    let rows = rows
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| schema_error(SOURCE_ROW_COLUMN, "uint64", rows.data_type()))?;
    Ok(files
        .values()
        .iter()
        .zip(rows.values().iter())
        .map(|(&file, &row)| RowSource { file, row })
        .collect())
}

fn schema_error(field: &str, expected: &str, found: &DataType) -> Error {
    Error::Schema {
        location: Location::field(field),
        expected: format!("a {expected} column"),
        found: found.clone(),
    }
}

fn invalid_batch(reason: &str) -> Error {
    Error::InvalidRow { location: Location::default(), reason: format!("shipped batch: {reason}") }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, BinaryArray, StringArray, UInt32Array, UInt64Array};

    use super::*;
    use crate::pair::Turns;

    fn batch(columns: Vec<(&str, ArrayRef)>, rows: &[u64]) -> RecordBatch {
        let mut columns = columns;
        columns.push((SOURCE_FILE_COLUMN, Arc::new(UInt32Array::from(vec![2; rows.len()]))));
        columns.push((SOURCE_ROW_COLUMN, Arc::new(UInt64Array::from(rows.to_vec()))));
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn jsonl_lines_keep_their_row_numbers_and_skip_blank_lines() {
        let lines: Vec<&[u8]> =
            vec![b"{\"chosen\": \"a\", \"rejected\": \"b\"}\n", b"\n", b"{not json\n"];
        let shipped = batch(vec![(LINE_COLUMN, Arc::new(BinaryArray::from(lines)))], &[5, 6, 7]);
        let rows = shipped_rows(&shipped, &ColumnMap::identity()).unwrap();
        assert_eq!(rows.len(), 2);
        let pair = rows[0].as_ref().unwrap();
        assert_eq!(
            (pair.source, &pair.chosen),
            (RowSource { file: 2, row: 5 }, &Turns::Text("a".into()))
        );
        let quarantined = rows[1].as_ref().unwrap_err();
        assert_eq!(
            (quarantined.source.row, quarantined.reason.as_str()),
            (7, "line is not valid JSON")
        );
    }

    #[test]
    fn arrow_columns_are_read_through_the_column_map() {
        let text = |values: Vec<Option<&str>>| -> ArrayRef { Arc::new(StringArray::from(values)) };
        let shipped = batch(
            vec![("good", text(vec![Some("a"), None])), ("bad", text(vec![Some("b"), Some("c")]))],
            &[0, 1],
        );
        let map = ColumnMap::parse("chosen=good,rejected=bad").unwrap();
        let rows = shipped_rows(&shipped, &map).unwrap();
        assert_eq!(rows[0].as_ref().unwrap().rejected, Turns::Text("b".into()));
        assert_eq!(rows[1].as_ref().unwrap_err().reason, "chosen is null");
    }

    #[test]
    fn a_batch_without_its_sources_is_a_schema_error() {
        let lines: ArrayRef = Arc::new(BinaryArray::from(vec![b"{}".as_slice()]));
        let shipped = RecordBatch::try_from_iter(vec![(LINE_COLUMN, lines)]).unwrap();
        let error = shipped_rows(&shipped, &ColumnMap::identity()).unwrap_err().to_string();
        assert!(error.contains(SOURCE_FILE_COLUMN), "{error}");
    }
}
