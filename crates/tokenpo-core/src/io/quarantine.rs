//! Quarantine records: as Arrow columns (how the Ray engine ships them back to the
//! driver) and as `quarantine.jsonl`, one record per line, in input order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::error::{Error, Location, Result};
use crate::io::manifest::{FileRecord, ShardRecord, write_text_atomically};
use crate::io::shard::{digest_file, prepared_column};
use crate::pair::{Quarantined, RowSource};

/// The columns of quarantine records; the source columns are named as in prepared pairs.
#[must_use]
pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source_file", DataType::UInt32, false),
        Field::new("source_row", DataType::UInt64, false),
        Field::new("quarantine_field", DataType::Utf8, true),
        Field::new("quarantine_reason", DataType::Utf8, false),
    ]))
}

/// Quarantine records as one record batch of the [`quarantine_schema`].
pub fn quarantine_batch(records: &[Quarantined]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(records.iter().map(|r| r.source.file))),
        Arc::new(UInt64Array::from_iter_values(records.iter().map(|r| r.source.row))),
        Arc::new(records.iter().map(|r| r.field.as_deref()).collect::<StringArray>()),
        Arc::new(records.iter().map(|r| Some(r.reason.as_str())).collect::<StringArray>()),
    ];
    RecordBatch::try_new(quarantine_schema(), columns)
        .map_err(|source| Error::Arrow { location: Location::default(), source })
}

/// The records of a batch of the [`quarantine_schema`] (nullable fields accepted).
pub fn quarantined_rows(batch: &RecordBatch) -> Result<Vec<Quarantined>> {
    let typed = |name: &str, data_type: &DataType| -> Result<&ArrayRef> {
        let column = prepared_column(batch, name)?;
        if column.data_type() == data_type {
            Ok(column)
        } else {
            Err(Error::Schema {
                location: Location::field(name),
                expected: format!("{data_type}"),
                found: column.data_type().clone(),
            })
        }
    };
    let files = typed("source_file", &DataType::UInt32)?.as_primitive::<UInt32Type>();
    let rows = typed("source_row", &DataType::UInt64)?.as_primitive::<UInt64Type>();
    let fields = typed("quarantine_field", &DataType::Utf8)?.as_string::<i32>();
    let reasons = typed("quarantine_reason", &DataType::Utf8)?.as_string::<i32>();
    Ok((0..batch.num_rows())
        .map(|index| Quarantined {
            source: RowSource { file: files.value(index), row: rows.value(index) },
            field: fields.is_valid(index).then(|| fields.value(index).to_owned()),
            reason: reasons.value(index).to_owned(),
        })
        .collect())
}

/// Writes `records` (in input order) to `out/quarantine.jsonl`, each line naming the
/// file, row, field and reason.
pub fn write_quarantine(
    records: &[Quarantined],
    out: &Path,
    inputs: &[FileRecord],
) -> Result<ShardRecord> {
    let name = PathBuf::from("quarantine.jsonl");
    let mut text = String::new();
    for record in records {
        let file =
            inputs.get(record.source.file as usize).map(|input| input.path.display().to_string());
        let line = serde_json::json!({
            "file": file,
            "row": record.source.row,
            "field": record.field,
            "reason": record.reason,
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let path = out.join(&name);
    write_text_atomically(&path, &text)?;
    Ok(ShardRecord { path: name, rows: records.len() as u64, digest: digest_file(&path)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_the_round_trip_through_arrow() {
        let records = vec![
            Quarantined::field(RowSource { file: 1, row: 7 }, "chosen", "chosen is null"),
            Quarantined { source: RowSource { file: 0, row: 2 }, field: None, reason: "x".into() },
        ];
        let batch = quarantine_batch(&records).unwrap();
        assert_eq!(quarantined_rows(&batch).unwrap(), records);
    }
}
