//! Rows that another engine read and shipped as Arrow record batches (the Ray engine:
//! its read tasks slice the input files, its workers turn the slices back into rows).
//!
//! A shipped batch holds the file's own pair columns (parquet, Arrow IPC) or its raw
//! records (JSON: [`LINE_COLUMN`] or [`ELEMENT_COLUMN`], read by [`json_record_batches`]),
//! plus where each row is in its file ([`SOURCE_FILE_COLUMN`], [`SOURCE_ROW_COLUMN`]).
//! Rows are assembled by the very code the local readers use, so both engines keep and
//! quarantine the same rows.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{ArrayBuilder, LargeBinaryBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, GenericBinaryArray, OffsetSizeTrait, RecordBatch};
use arrow_schema::DataType;

use super::arrow_columns::{BatchColumns, Plan};
use super::columns::ColumnMap;
use super::json_records::{JsonLayout, JsonRecords};
use super::jsonl::parse_record;
use super::row::assemble;
use super::{InputFormat, file_error};
use crate::error::{Error, Location, Result};
use crate::pair::{RowOutcome, RowSource};

/// The index of the input file each row comes from (`uint32`).
pub const SOURCE_FILE_COLUMN: &str = "_tokenpo_source_file";
/// The row of each row in its file, counted as the local readers count (`uint64`).
pub const SOURCE_ROW_COLUMN: &str = "_tokenpo_source_row";
/// A line of JSON Lines, as raw bytes (`binary` or `large_binary`); blank lines may be
/// present and are skipped.
pub const LINE_COLUMN: &str = "_tokenpo_line";
/// An element of a JSON array, as raw bytes (`binary` or `large_binary`); blank ones
/// (`[1,,2]`) may be present and are skipped.
pub const ELEMENT_COLUMN: &str = "_tokenpo_element";

/// The rows of a shipped batch, in batch order; blank JSON records give none.
///
/// The batch must hold the two source columns; it holds [`LINE_COLUMN`] or
/// [`ELEMENT_COLUMN`] when it comes from a JSON file, else the pair columns that
/// `columns` names.
pub fn shipped_rows(batch: &RecordBatch, columns: &ColumnMap) -> Result<Vec<RowOutcome>> {
    let sources = sources(batch)?;
    for layout in [JsonLayout::Lines, JsonLayout::Array] {
        let name = record_column(layout);
        let Some(records) = batch.column_by_name(name) else { continue };
        return match records.data_type() {
            DataType::Binary => {
                Ok(parse_records(records.as_binary::<i32>(), &sources, layout, columns))
            }
            DataType::LargeBinary => {
                Ok(parse_records(records.as_binary::<i64>(), &sources, layout, columns))
            }
            other => Err(schema_error(name, "binary or large_binary", other)),
        };
    }
    let plan = Plan::new(&batch.schema(), columns).map_err(|reason| invalid_batch(&reason))?;
    let fields = BatchColumns::new(batch, &plan).map_err(|reason| invalid_batch(&reason))?;
    Ok(sources
        .iter()
        .enumerate()
        .map(|(index, &source)| assemble(source, &fields.row(index)))
        .collect())
}

/// The rows in shipped JSON records; a null record is a blank one.
fn parse_records<O: OffsetSizeTrait>(
    records: &GenericBinaryArray<O>,
    sources: &[RowSource],
    layout: JsonLayout,
    columns: &ColumnMap,
) -> Vec<RowOutcome> {
    sources
        .iter()
        .enumerate()
        .filter_map(|(index, &source)| {
            let record = if records.is_valid(index) { records.value(index) } else { b"" };
            parse_record(record, layout, source, columns)
        })
        .collect()
}

/// The column that ships the records of a JSON input of `layout`.
fn record_column(layout: JsonLayout) -> &'static str {
    match layout {
        JsonLayout::Lines => LINE_COLUMN,
        JsonLayout::Array => ELEMENT_COLUMN,
    }
}

/// Reads a JSON input (`.json`, `.jsonl`, `.ndjson`) for another engine to ship: its raw
/// records in batches of `batch_rows`, each a record batch of one `large_binary` column,
/// [`LINE_COLUMN`] or [`ELEMENT_COLUMN`] by the file's layout. Every record is there,
/// blank ones included, so the `n`th record of the file is row `n`, as the local reader
/// numbers it. The file is read as [`read_pairs`](super::read_pairs) reads it, one
/// record in memory at a time besides the batch.
pub fn json_record_batches(path: &Path, batch_rows: usize) -> Result<JsonRecordBatches> {
    if batch_rows == 0 {
        return Err(Error::Config {
            field: "batch_rows".into(),
            reason: "must be at least 1".into(),
        });
    }
    let format = InputFormat::of(path)?;
    if !matches!(format, InputFormat::Json | InputFormat::Jsonl) {
        return Err(file_error(path, "is not a JSON file (.json, .jsonl, .ndjson)".into()));
    }
    Ok(JsonRecordBatches { records: JsonRecords::open(path, format)?, batch_rows, done: false })
}

/// The record batches of [`json_record_batches`]; an error ends them.
pub struct JsonRecordBatches {
    records: JsonRecords,
    batch_rows: usize,
    done: bool,
}

impl JsonRecordBatches {
    /// How the file holds its rows.
    #[must_use]
    pub fn layout(&self) -> JsonLayout {
        self.records.layout()
    }
}

impl Iterator for JsonRecordBatches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // 64-bit offsets: a batch of long records may exceed 2 GiB.
        let mut records = LargeBinaryBuilder::new();
        while records.len() < self.batch_rows {
            match self.records.next_record() {
                Some(Ok((_, record))) => records.append_value(record),
                Some(Err(error)) => {
                    self.done = true;
                    return Some(Err(error));
                }
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        if records.is_empty() {
            return None;
        }
        let column: ArrayRef = Arc::new(records.finish());
        let name = record_column(self.records.layout());
        Some(
            RecordBatch::try_from_iter([(name, column)])
                .map_err(|source| Error::Arrow { location: Location::field(name), source }),
        )
    }
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
