//! Prepared shards: the Arrow columns of prepared pairs, written as parquet or Arrow IPC
//! under a temporary name and renamed when complete.

use std::fs::{self, File};
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{ArrowPrimitiveType, UInt8Type, UInt32Type};
use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, ListArray, PrimitiveArray, RecordBatch,
    StringArray, UInt8Array, UInt32Array, UInt64Array,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use arrow_select::concat::concat_batches;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::io::checksum::to_hex;
use crate::prepare::PreparedPair;

/// The file format of prepared shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ShardFormat {
    /// Parquet, zstd-compressed: small on disk.
    #[default]
    Parquet,
    /// Arrow IPC file, uncompressed: memory-mappable by the trainer.
    Ipc,
}

impl ShardFormat {
    /// The file extension, without the dot.
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Ipc => "arrow",
        }
    }
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

/// Columns of prepared pairs as the tokenize pass writes them (before weights and ranks).
#[must_use]
pub fn prepared_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pair_id", DataType::Utf8, false),
        Field::new("prompt_ids", list_of(DataType::UInt32), false),
        Field::new("chosen_ids", list_of(DataType::UInt32), false),
        Field::new("rejected_ids", list_of(DataType::UInt32), false),
        Field::new("chosen_diff", list_of(DataType::UInt8), false),
        Field::new("rejected_diff", list_of(DataType::UInt8), false),
        Field::new("chosen_class", list_of(DataType::UInt8), false),
        Field::new("rejected_class", list_of(DataType::UInt8), false),
        Field::new("edit_distance", DataType::UInt32, false),
        Field::new("lcs_len", DataType::UInt32, false),
        Field::new("shared_prefix_len", DataType::UInt32, false),
        Field::new("unaligned", DataType::Boolean, false),
        Field::new("score_margin", DataType::Float32, true),
        Field::new("truncated", DataType::UInt8, false),
        Field::new("source_file", DataType::UInt32, false),
        Field::new("source_row", DataType::UInt64, false),
        Field::new("difficulty_key", DataType::Float64, false),
    ]))
}

/// Builds one record batch of the [`prepared_schema`] from prepared pairs: those of shard
/// number `shard`, or (`None`) a batch of pass 1 shipped by another engine. A list column
/// over `i32::MAX` tokens is an [`Error::TooManyTokens`] naming the shard.
pub fn prepared_batch(pairs: &[PreparedPair], shard: Option<usize>) -> Result<RecordBatch> {
    let ids = |column: &str, pick: fn(&PreparedPair) -> &[u32]| {
        list_column::<UInt32Type>(pairs, pick, shard, column)
    };
    let bytes = |column: &str, pick: fn(&PreparedPair) -> &[u8]| {
        list_column::<UInt8Type>(pairs, pick, shard, column)
    };
    let figure = |pick: fn(&PreparedPair) -> u32| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(pairs.iter().map(pick)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(pairs.iter().map(|p| Some(p.pair_id.as_str())).collect::<StringArray>()),
        ids("prompt_ids", |p| &p.prompt_ids)?,
        ids("chosen_ids", |p| &p.chosen.ids)?,
        ids("rejected_ids", |p| &p.rejected.ids)?,
        bytes("chosen_diff", |p| &p.chosen.diff)?,
        bytes("rejected_diff", |p| &p.rejected.diff)?,
        bytes("chosen_class", |p| &p.chosen.class)?,
        bytes("rejected_class", |p| &p.rejected.class)?,
        figure(|p| p.stats.edit_distance),
        figure(|p| p.stats.lcs_len),
        figure(|p| p.stats.shared_prefix_len),
        Arc::new(pairs.iter().map(|p| Some(p.stats.unaligned)).collect::<BooleanArray>()),
        Arc::new(pairs.iter().map(|p| p.score_margin).collect::<Float32Array>()),
        Arc::new(UInt8Array::from_iter_values(pairs.iter().map(|p| p.truncated))),
        figure(|p| p.source.file),
        Arc::new(UInt64Array::from_iter_values(pairs.iter().map(|p| p.source.row))),
        Arc::new(Float64Array::from_iter_values(pairs.iter().map(|p| p.difficulty_key))),
    ];
    RecordBatch::try_new(prepared_schema(), columns).map_err(arrow_error)
}

/// The column `name` of a batch of prepared pairs; a missing one is a schema error.
pub fn prepared_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| Error::Schema {
        location: crate::error::Location::field(name),
        expected: "a column of the prepared schema".into(),
        found: DataType::Null,
    })
}

/// The primitive column `name` of a batch of prepared pairs. A batch can come from another
/// engine's workers, so a missing column or another type is a schema error, not a panic.
pub fn prepared_primitive<'a, T: ArrowPrimitiveType>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a PrimitiveArray<T>> {
    let column = prepared_column(batch, name)?;
    column.as_primitive_opt::<T>().ok_or_else(|| Error::Schema {
        location: crate::error::Location::field(name),
        expected: format!("{} (the prepared schema)", T::DATA_TYPE),
        found: column.data_type().clone(),
    })
}

/// The list column `column` of `pairs`, checked to fit 32-bit offsets (see [`list_offsets`]).
fn list_column<T: ArrowPrimitiveType>(
    pairs: &[PreparedPair],
    pick: fn(&PreparedPair) -> &[T::Native],
    shard: Option<usize>,
    column: &str,
) -> Result<ArrayRef> {
    let offsets = list_offsets(pairs.iter().map(|pair| pick(pair).len()), shard, column)?;
    let mut values = Vec::with_capacity(offsets.last().map_or(0, |&end| end as usize));
    for pair in pairs {
        values.extend_from_slice(pick(pair));
    }
    let values = PrimitiveArray::<T>::new(ScalarBuffer::from(values), None);
    let item = Arc::new(Field::new_list_field(T::DATA_TYPE, true));
    let list = ListArray::try_new(item, offsets, Arc::new(values), None).map_err(arrow_error)?;
    Ok(Arc::new(list))
}

/// The 32-bit offsets of a list column (Arrow's `List`, as the shards hold token lists)
/// whose rows have `lengths` items. More than `i32::MAX` items in all do not fit: an
/// [`Error::TooManyTokens`] naming `shard` (see [`prepared_batch`]) and `column`.
pub fn list_offsets(
    lengths: impl IntoIterator<Item = usize>,
    shard: Option<usize>,
    column: &str,
) -> Result<OffsetBuffer<i32>> {
    let mut lengths = lengths.into_iter();
    let mut offsets = Vec::with_capacity(lengths.size_hint().0 + 1);
    offsets.push(0_i32);
    let mut total = 0_usize;
    while let Some(length) = lengths.next() {
        total = total.saturating_add(length);
        let Ok(end) = i32::try_from(total) else {
            let tokens = lengths.fold(total, usize::saturating_add);
            return Err(Error::TooManyTokens { shard, column: column.to_owned(), tokens });
        };
        offsets.push(end);
    }
    Ok(OffsetBuffer::new(ScalarBuffer::from(offsets)))
}

/// Writes `batch` to `path` in `format` through a temporary file renamed at the end, so a
/// file under its final name is always complete. Returns its size and SHA-256.
pub fn write_atomically(
    batch: &RecordBatch,
    path: &Path,
    format: ShardFormat,
) -> Result<FileDigest> {
    let temporary = temporary_path(path);
    let file = File::create(&temporary).map_err(|error| Error::io(&temporary, &error))?;
    let written = match format {
        ShardFormat::Parquet => write_parquet(batch, file),
        ShardFormat::Ipc => write_ipc(batch, file),
    };
    written.map_err(|error| Error::File { file: temporary.clone(), reason: error.to_string() })?;
    fs::rename(&temporary, path).map_err(|error| Error::io(path, &error))?;
    digest_file(path)
}

fn write_parquet(
    batch: &RecordBatch,
    file: File,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut writer = ArrowWriter::try_new(BufWriter::new(file), batch.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.into_inner()?.into_inner()?.sync_all()?;
    Ok(())
}

fn write_ipc(
    batch: &RecordBatch,
    file: File,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut writer = FileWriter::try_new(BufWriter::new(file), &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    writer.into_inner()?.into_inner()?.sync_all()?;
    Ok(())
}

/// Reads a whole shard back as one record batch.
pub fn read_shard(path: &Path) -> Result<RecordBatch> {
    read_shard_columns(path, None)
}

/// Reads the named columns of a shard (all of them for `None`) as one record batch, so
/// callers that need a column or two do not decode the token lists. The schema, metadata
/// included, is the file's even when it holds no rows.
pub fn read_shard_columns(path: &Path, columns: Option<&[&str]>) -> Result<RecordBatch> {
    let unreadable = |error: &dyn std::fmt::Display| Error::File {
        file: path.to_owned(),
        reason: error.to_string(),
    };
    let open = || File::open(path).map_err(|error| Error::io(path, &error));
    let project = |file_schema: &Schema| -> Result<(Option<Vec<usize>>, SchemaRef)> {
        let Some(names) = columns else { return Ok((None, Arc::new(file_schema.clone()))) };
        let indices = column_indices(file_schema, names, path)?;
        // Schema::project keeps the metadata (the fingerprint lives there), which the
        // readers' own projected schemas may drop.
        let schema = file_schema.project(&indices).map_err(|e| unreadable(&e))?;
        Ok((Some(indices), Arc::new(schema)))
    };
    let (schema, batches) = if path.extension().is_some_and(|ext| ext == "parquet") {
        let mut builder =
            ParquetRecordBatchReaderBuilder::try_new(open()?).map_err(|e| unreadable(&e))?;
        let (indices, schema) = project(builder.schema())?;
        if let Some(indices) = indices {
            let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
            builder = builder.with_projection(mask);
        }
        let reader = builder.build().map_err(|e| unreadable(&e))?;
        (schema, reader.collect::<std::result::Result<Vec<_>, ArrowError>>())
    } else {
        let file_schema = FileReader::try_new(open()?, None).map_err(|e| unreadable(&e))?.schema();
        let (indices, schema) = project(&file_schema)?;
        let reader = FileReader::try_new(open()?, indices).map_err(|e| unreadable(&e))?;
        (schema, reader.collect::<std::result::Result<Vec<_>, ArrowError>>())
    };
    let columns: Vec<Vec<ArrayRef>> = batches
        .map_err(|e| unreadable(&e))?
        .into_iter()
        .map(|batch| batch.columns().to_vec())
        .collect();
    let batches = columns
        .into_iter()
        .map(|columns| RecordBatch::try_new(schema.clone(), columns))
        .collect::<std::result::Result<Vec<_>, ArrowError>>()
        .map_err(|e| unreadable(&e))?;
    concat_batches(&schema, &batches).map_err(|e| unreadable(&e))
}

/// Indices of `names` in `schema`, in file order (readers return projected columns so).
fn column_indices(schema: &Schema, names: &[&str], path: &Path) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|name| {
            schema.index_of(name).map_err(|_| Error::File {
                file: path.to_owned(),
                reason: format!("shard has no column '{name}'"),
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(|mut indices| {
            indices.sort_unstable();
            indices
        })
}

/// Size and checksum of a written file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Bytes on disk.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// Size and SHA-256 of a file, streamed.
pub fn digest_file(path: &Path) -> Result<FileDigest> {
    let mut file = File::open(path).map_err(|error| Error::io(path, &error))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(|error| Error::io(path, &error))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
    Ok(FileDigest { bytes, sha256: to_hex(&hasher.finalize()) })
}

/// The name a file is written under before its rename.
#[must_use]
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn arrow_error(error: ArrowError) -> Error {
    Error::Arrow { location: crate::error::Location::default(), source: error }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow_array::{Int32Array, StringArray};

    use super::*;

    fn batch_with_metadata() -> RecordBatch {
        let schema = Schema::new_with_metadata(
            vec![Field::new("id", DataType::Utf8, false), Field::new("n", DataType::Int32, false)],
            HashMap::from([("key".to_owned(), "value".to_owned())]),
        );
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
            Arc::new(Int32Array::from(vec![1, 2, 3])),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    #[test]
    fn a_prepared_column_of_another_type_is_a_schema_error_naming_it() {
        use arrow_array::types::Float32Type;
        let schema = Schema::new(vec![Field::new("score_margin", DataType::Float64, true)]);
        let margins: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0]));
        let batch = RecordBatch::try_new(Arc::new(schema), vec![margins]).unwrap();
        let error = prepared_primitive::<Float32Type>(&batch, "score_margin").unwrap_err();
        assert!(matches!(error, Error::Schema { found: DataType::Float64, .. }), "{error}");
        assert!(error.to_string().contains("score_margin"), "{error}");
        assert!(prepared_primitive::<Float32Type>(&batch, "truncated").is_err());
        let found = prepared_primitive::<arrow_array::types::Float64Type>(&batch, "score_margin");
        assert_eq!(found.unwrap().values().as_ref(), [1.0, 2.0]);
    }

    #[test]
    fn list_offsets_past_i32_are_an_error_naming_the_shard_and_column() {
        let offsets = list_offsets([2, 0, 3], Some(4), "chosen_ids").unwrap();
        assert_eq!(offsets.as_ref(), [0, 2, 2, 5]);
        let fits = list_offsets([i32::MAX as usize - 1, 1], Some(4), "chosen_ids").unwrap();
        assert_eq!(fits.last(), Some(&i32::MAX));
        let over = [i32::MAX as usize - 1, 1, 1, 5];
        let error = list_offsets(over, Some(4), "chosen_ids").unwrap_err();
        let tokens = i32::MAX as usize + 6;
        assert!(
            matches!(
                &error,
                Error::TooManyTokens { shard: Some(4), column, tokens: found }
                    if column == "chosen_ids" && *found == tokens
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "shard 4: column 'chosen_ids' would hold {tokens} tokens, more than the \
                 2147483647 that the 32-bit offsets of an Arrow list address; lower shard_rows \
                 (pairs per shard)"
            )
        );
        let shipped = list_offsets(over, None, "prompt_ids").unwrap_err().to_string();
        assert!(shipped.starts_with("a shipped batch: column 'prompt_ids'"), "{shipped}");
        assert!(shipped.ends_with("lower batch_rows (rows processed together)"), "{shipped}");
    }

    #[test]
    fn prepared_batches_hold_the_token_lists_of_their_pairs() {
        let pair = |ids: Vec<u32>| PreparedPair {
            chosen: crate::prepare::PreparedSide { diff: vec![1; ids.len()], ids, class: vec![] },
            ..PreparedPair::default()
        };
        let batch = prepared_batch(&[pair(vec![3, 4]), pair(vec![]), pair(vec![5])], Some(0));
        let batch = batch.unwrap();
        let chosen = prepared_column(&batch, "chosen_ids").unwrap();
        let mut builder =
            arrow_array::builder::ListBuilder::new(arrow_array::builder::PrimitiveBuilder::<
                UInt32Type,
            >::new());
        for ids in [&[3, 4][..], &[], &[5]] {
            builder.values().append_slice(ids);
            builder.append(true);
        }
        let built: ArrayRef = Arc::new(builder.finish());
        assert_eq!(chosen, &built);
        assert_eq!(batch.schema(), prepared_schema());
    }

    #[test]
    fn a_projected_read_keeps_rows_and_metadata_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        for format in [ShardFormat::Parquet, ShardFormat::Ipc] {
            let path = dir.path().join(format!("shard.{}", format.extension()));
            write_atomically(&batch_with_metadata(), &path, format).unwrap();
            let projected = read_shard_columns(&path, Some(&["n"])).unwrap();
            assert_eq!(projected.num_rows(), 3);
            assert_eq!(projected.num_columns(), 1);
            assert_eq!(projected.schema().metadata().get("key").map(String::as_str), Some("value"));
            assert_eq!(read_shard(&path).unwrap(), batch_with_metadata());
            let error = read_shard_columns(&path, Some(&["missing"])).unwrap_err().to_string();
            assert!(error.contains("shard has no column 'missing'"), "{error}");
        }
    }
}
