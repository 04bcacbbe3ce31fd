//! Parquet and Arrow IPC files as streams of rows, decoding only the pair columns.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_ipc::reader::{FileReader, StreamReader};
use arrow_schema::{ArrowError, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::arrow_columns::{BatchColumns, Plan};
use super::columns::ColumnMap;
use super::file_error;
use super::row::assemble;
use crate::error::{Error, Result};
use crate::pair::{RowOutcome, RowSource};

/// Record batches as a reader yields them.
type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

/// The magic bytes that open an Arrow IPC file (the stream format has none).
const IPC_FILE_MAGIC: &[u8; 6] = b"ARROW1";

/// The rows of a parquet or Arrow IPC file, one record batch in memory at a time.
pub(super) struct ArrowRows {
    path: PathBuf,
    plan: Plan,
    batches: Batches,
    current: Option<BatchColumns>,
    /// The next row of `current` to read.
    at: usize,
    /// Where that row is in the file.
    next: RowSource,
}

impl ArrowRows {
    /// Opens a parquet file, reading batches of at most `batch_rows` rows.
    pub(super) fn parquet(
        path: &Path,
        file_index: u32,
        map: &ColumnMap,
        batch_rows: usize,
    ) -> Result<Self> {
        let file = File::open(path).map_err(|error| Error::io(path, &error))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|error| file_error(path, format!("not a readable parquet file: {error}")))?;
        let plan = Plan::new(builder.schema(), map).map_err(|reason| file_error(path, reason))?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), plan.projection.iter().copied());
        let reader =
            builder.with_projection(mask).with_batch_size(batch_rows).build().map_err(|error| {
                file_error(path, format!("not a readable parquet file: {error}"))
            })?;
        Ok(Self::new(path, file_index, plan, Box::new(reader)))
    }

    /// Opens an Arrow IPC file, in the file format or, when it lacks the file magic,
    /// the stream format. Its record batches are read as they were written.
    pub(super) fn ipc(path: &Path, file_index: u32, map: &ColumnMap) -> Result<Self> {
        let (schema, _) = open_ipc(path, None)?;
        let plan = Plan::new(&schema, map).map_err(|reason| file_error(path, reason))?;
        let (_, batches) = open_ipc(path, Some(plan.projection.clone()))?;
        Ok(Self::new(path, file_index, plan, batches))
    }

    fn new(path: &Path, file_index: u32, plan: Plan, batches: Batches) -> Self {
        Self {
            path: path.to_owned(),
            plan,
            batches,
            current: None,
            at: 0,
            next: RowSource { file: file_index, row: 0 },
        }
    }

    /// The names, in the file, of the pair columns read.
    pub(super) fn column_names(&self) -> Vec<String> {
        self.plan.column_names()
    }

    /// The next row, `None` at the end, or an error when the file cannot be read further.
    pub(super) fn next_row(&mut self) -> Option<Result<RowOutcome>> {
        loop {
            if let Some(columns) = self.current.as_ref().filter(|columns| self.at < columns.rows())
            {
                let outcome = assemble(self.next, &columns.row(self.at));
                self.at += 1;
                self.next.row += 1;
                return Some(Ok(outcome));
            }
            let columns = match self.batches.next()? {
                Ok(batch) => BatchColumns::new(&batch, &self.plan),
                Err(error) => Err(format!("cannot be read: {error}")),
            };
            match columns {
                Ok(columns) => {
                    self.current = Some(columns);
                    self.at = 0;
                }
                Err(reason) => return Some(Err(file_error(&self.path, reason))),
            }
        }
    }
}

/// Opens `path` as an Arrow IPC file or stream, decoding the columns in `projection`.
fn open_ipc(path: &Path, projection: Option<Vec<usize>>) -> Result<(SchemaRef, Batches)> {
    let mut file = File::open(path).map_err(|error| Error::io(path, &error))?;
    let mut magic = [0; IPC_FILE_MAGIC.len()];
    let is_file_format = file.read_exact(&mut magic).is_ok() && &magic == IPC_FILE_MAGIC;
    file.rewind().map_err(|error| Error::io(path, &error))?;
    let opened: Result<(SchemaRef, Batches), ArrowError> = if is_file_format {
        FileReader::try_new_buffered(file, projection)
            .map(|reader| (reader.schema(), Box::new(reader) as Batches))
    } else {
        StreamReader::try_new_buffered(file, projection)
            .map(|reader| (reader.schema(), Box::new(reader) as Batches))
    };
    opened.map_err(|error| file_error(path, format!("not an Arrow IPC file or stream: {error}")))
}
