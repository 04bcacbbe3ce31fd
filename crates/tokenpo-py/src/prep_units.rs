//! The per-batch units of `prep`, for an engine that runs them itself (the Ray engine):
//! a planned run, pass 1 over a shipped batch, the corpus-wide difficulty scale, pass 2
//! over one shard, and the end of the run. Arrow crosses as record batches and arrays,
//! without copies; the work runs without the GIL.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use arrow_array::cast::AsArray;
use arrow_array::types::{ArrowPrimitiveType, Float64Type, UInt32Type};
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, UInt32Array};
use pyo3::prelude::*;
use pyo3_arrow::{PyArray, PyRecordBatch};
use tokenpo_core::difficulty::{DifficultyKey, DifficultySource, RankScale};
use tokenpo_core::importance::DocumentFrequency;
use tokenpo_core::io::input::{ColumnMap, JsonRecordBatches, input_columns, json_record_batches};
use tokenpo_core::io::manifest::ShardRecord;
use tokenpo_core::io::quarantine::quarantined_rows;
use tokenpo_core::pipeline::{
    DifficultyKeys, Planned, PrepConfig, Run, ShardSums, Weighting, Written, batch_frequencies,
    finish_run, prepare_shipped, write_shard,
};
use tokenpo_core::prepare::PromptCache;
use tokenpo_core::tokenize::PairTokenizer;
use tokenpo_core::{Error, Result};

use crate::error::NativeError;

/// A prep run as planned on the driver: inputs expanded and checksummed, tokenizer
/// loaded, fingerprint made; or the manifest of the same run, already finished.
#[pyclass(frozen, module = "tokenpo._native")]
pub struct PrepRun {
    planned: Planned,
    config: PrepConfig,
    out: PathBuf,
}

#[pymethods]
impl PrepRun {
    #[new]
    #[expect(clippy::needless_pass_by_value, reason = "pyo3 extracts arguments as owned values")]
    fn new(
        py: Python<'_>,
        inputs: Vec<PathBuf>,
        tokenizer: PathBuf,
        out: PathBuf,
        config_json: &str,
    ) -> PyResult<Self> {
        let config = parse_config(config_json)?;
        let planned =
            py.detach(|| Run::plan(&inputs, &tokenizer, &out, &config)).map_err(NativeError)?;
        Ok(Self { planned, config, out })
    }

    /// The manifest (JSON) when the output directory already holds this run.
    #[getter]
    fn finished_manifest(&self) -> PyResult<Option<String>> {
        match &self.planned {
            Planned::Done(manifest) => Ok(Some(to_json(manifest, "manifest")?)),
            Planned::ToDo(_) => Ok(None),
        }
    }

    /// The input files in reading order (a row's `source_file` indexes this list).
    #[getter]
    fn files(&self) -> Vec<PathBuf> {
        self.run().map(|run| run.files.clone()).unwrap_or_default()
    }

    /// The run's fingerprint.
    #[getter]
    fn fingerprint(&self) -> String {
        self.run().map(|run| run.fingerprint.clone()).unwrap_or_default()
    }

    /// Per input file, the pair columns to ship (none for JSONL, shipped as lines).
    /// Opening each file checks it: a file that cannot be used raises `InputError`.
    fn input_columns(&self, py: Python<'_>) -> PyResult<Vec<Vec<String>>> {
        let columns = ColumnMap::from_pairs(&self.config.column_map).map_err(NativeError)?;
        let files = self.files();
        py.detach(|| {
            files.iter().map(|path| input_columns(path, &columns)).collect::<Result<Vec<_>>>()
        })
        .map_err(|error: Error| NativeError(error).into())
    }

    /// Writes `quarantine.jsonl` and `manifest.json` from the shards' records and sums
    /// (JSON, in shard order) and the quarantine records; returns the manifest as JSON.
    #[expect(clippy::needless_pass_by_value, reason = "pyo3 extracts arguments as owned values")]
    fn finish(
        &self,
        py: Python<'_>,
        shards_json: Vec<String>,
        sums_json: Vec<String>,
        quarantined: PyRecordBatch,
        difficulty_source: &str,
    ) -> PyResult<String> {
        let run = self.run().ok_or_else(|| config_error("run", "the run is already finished"))?;
        let shards: Vec<ShardRecord> =
            shards_json.iter().map(|text| from_json(text, "shards")).collect::<PyResult<_>>()?;
        let mut sums = ShardSums::default();
        for text in &sums_json {
            sums.add(&from_json(text, "sums")?);
        }
        let difficulty_source = parse_source(difficulty_source)?;
        let quarantined = quarantined.into_inner();
        let manifest = py
            .detach(|| {
                let quarantined = quarantined_rows(&quarantined)?;
                let written = Written { shards, sums, quarantined, difficulty_source };
                finish_run(run, &self.config, &self.out, written)
            })
            .map_err(NativeError)?;
        to_json(&manifest, "manifest")
    }
}

impl PrepRun {
    fn run(&self) -> Option<&Run> {
        match &self.planned {
            Planned::ToDo(run) => Some(run),
            Planned::Done(_) => None,
        }
    }
}

/// The raw records of a JSON input (`.json`, `.jsonl`, `.ndjson`) for a read task to
/// ship: record batches of one `large_binary` column, `LINE_COLUMN` (JSON Lines) or
/// `ELEMENT_COLUMN` (the elements of a JSON array), every record in file order, so the
/// `n`th is row `n`. Read as the local engine reads the file; a file that cannot be read
/// further raises `InputError`.
#[pyclass(module = "tokenpo._native")]
pub struct JsonRecords {
    batches: JsonRecordBatches,
}

#[pymethods]
impl JsonRecords {
    #[new]
    #[expect(clippy::needless_pass_by_value, reason = "pyo3 extracts arguments as owned values")]
    fn new(py: Python<'_>, path: PathBuf, batch_rows: usize) -> PyResult<Self> {
        let batches = py.detach(|| json_record_batches(&path, batch_rows)).map_err(NativeError)?;
        Ok(Self { batches })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(
        mut slf: PyRefMut<'py, Self>,
        py: Python<'py>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let batches = &mut slf.batches;
        match py.detach(|| batches.next()) {
            Some(batch) => {
                let batch = batch.map_err(NativeError)?;
                Ok(Some(PyRecordBatch::new(batch).into_pyarrow(py)?))
            }
            None => Ok(None),
        }
    }
}

/// Pass 1 on a worker: shipped batches of raw rows to prepared pairs and quarantine
/// records. Holds the tokenizer and a prompt cache across batches.
#[pyclass(frozen, module = "tokenpo._native")]
pub struct ShippedBatchPreparer {
    tokenizer: PairTokenizer,
    config: PrepConfig,
    columns: ColumnMap,
    prompts: Mutex<PromptCache>,
}

#[pymethods]
impl ShippedBatchPreparer {
    #[new]
    #[expect(clippy::needless_pass_by_value, reason = "pyo3 extracts arguments as owned values")]
    fn new(tokenizer: PathBuf, config_json: &str) -> PyResult<Self> {
        let config = parse_config(config_json)?;
        let columns = ColumnMap::from_pairs(&config.column_map).map_err(NativeError)?;
        let tokenizer =
            PairTokenizer::load(&tokenizer, config.eos_token.as_deref()).map_err(NativeError)?;
        Ok(Self { tokenizer, config, columns, prompts: Mutex::new(PromptCache::new()) })
    }

    /// `(pairs, quarantined)`: the prepared pairs and the rows set aside, as record batches.
    fn prepare<'py>(
        &self,
        py: Python<'py>,
        batch: PyRecordBatch,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let batch = batch.into_inner();
        let prepared = py
            .detach(|| {
                // A poisoned cache only lost some prompts: the output does not depend on it.
                let mut prompts = self.prompts.lock().unwrap_or_else(PoisonError::into_inner);
                prepare_shipped(&batch, &self.columns, &self.tokenizer, &mut prompts, &self.config)
            })
            .map_err(NativeError)?;
        Ok((
            PyRecordBatch::new(prepared.pairs).into_pyarrow(py)?,
            PyRecordBatch::new(prepared.quarantined).into_pyarrow(py)?,
        ))
    }

    /// `(documents, counts)`: the token document frequencies of a batch of prepared pairs,
    /// `counts[t]` the pairs holding token id `t` (a `uint32` array, vocabulary-long).
    fn frequencies<'py>(
        &self,
        py: Python<'py>,
        prepared: PyRecordBatch,
    ) -> PyResult<(u64, Bound<'py, PyAny>)> {
        let prepared = prepared.into_inner();
        let vocab_size = self.tokenizer.vocab_size();
        let frequencies =
            py.detach(|| batch_frequencies(&prepared, vocab_size)).map_err(NativeError)?;
        let counts = UInt32Array::from(frequencies.counts().to_vec());
        Ok((frequencies.documents(), pyarrow_array(py, Arc::new(counts))?))
    }
}

/// `(source, sorted_keys)`: the difficulty scale of a corpus from a batch of all its
/// `score_margin` and `difficulty_key` values: what it ranks (`score_margin` or
/// `token_separation`) and its keys, sorted (a record batch of [`SORTED_KEY_COLUMNS`]).
#[pyfunction]
pub fn difficulty_scale(
    py: Python<'_>,
    keys: PyRecordBatch,
) -> PyResult<(String, Bound<'_, PyAny>)> {
    let keys = keys.into_inner();
    let (source, scale) = py
        .detach(|| {
            let mut gathered = DifficultyKeys::default();
            gathered.add(&keys)?;
            Ok::<_, Error>(gathered.scale())
        })
        .map_err(NativeError)?;
    let source = to_json(&source, "difficulty_source")?.trim_matches('"').to_owned();
    let sorted = PyRecordBatch::new(keys_batch(scale.sorted_keys())?);
    Ok((source, sorted.into_pyarrow(py)?))
}

/// Pass 2 of one shard: weighs, ranks and writes shard number `index` into `out`;
/// returns its manifest record and its sums, as JSON. `counts` and `sorted_keys` are the
/// corpus-wide token document frequencies and difficulty keys.
#[pyfunction]
#[pyo3(signature = (prepared, *, index, out, config_json, fingerprint, documents, counts, sorted_keys, difficulty_source))]
#[expect(clippy::too_many_arguments, reason = "keyword-only arguments from Python")]
#[expect(clippy::needless_pass_by_value, reason = "pyo3 extracts arguments as owned values")]
pub fn finish_shard(
    py: Python<'_>,
    prepared: PyRecordBatch,
    index: usize,
    out: PathBuf,
    config_json: &str,
    fingerprint: &str,
    documents: u64,
    counts: PyArray,
    sorted_keys: PyRecordBatch,
    difficulty_source: &str,
) -> PyResult<(String, String)> {
    let config = parse_config(config_json)?;
    let source = parse_source(difficulty_source)?;
    let counts = primitive_values::<UInt32Type>(counts.array(), "counts")?;
    let sorted_keys = batch_keys(&sorted_keys.into_inner())?;
    let frequencies = DocumentFrequency::from_counts(documents, counts)
        .map_err(|reason| config_error("counts", &reason))?;
    let prepared = prepared.into_inner();
    let (record, sums) = py
        .detach(|| {
            let scale = RankScale::new(sorted_keys);
            let weighting = Weighting {
                frequencies: &frequencies,
                importance: &config.importance,
                scale: &scale,
                source,
            };
            write_shard(&prepared, index, &out, &config, &weighting, fingerprint)
        })
        .map_err(NativeError)?;
    Ok((to_json(&record, "shard")?, to_json(&sums, "sums")?))
}

/// `array` as a `pyarrow.Array`, through the C data interface (no copy).
fn pyarrow_array(py: Python<'_>, array: ArrayRef) -> PyResult<Bound<'_, PyAny>> {
    py.import("pyarrow")?.getattr("array")?.call1((PyArray::from_array_ref(array),))
}

/// The columns of a difficulty scale's sorted keys as they cross to Python and back:
/// each [`DifficultyKey`] component, as `float64`.
const SORTED_KEY_COLUMNS: [&str; 2] = ["primary", "tiebreak"];

/// `keys` as a record batch of [`SORTED_KEY_COLUMNS`].
fn keys_batch(keys: &[DifficultyKey]) -> PyResult<RecordBatch> {
    let primary = Float64Array::from_iter_values(keys.iter().map(|key| key.primary));
    let tiebreak = Float64Array::from_iter_values(keys.iter().map(|key| key.tiebreak));
    let columns: [ArrayRef; 2] = [Arc::new(primary), Arc::new(tiebreak)];
    RecordBatch::try_from_iter(SORTED_KEY_COLUMNS.into_iter().zip(columns))
        .map_err(|error| config_error("sorted_keys", &error.to_string()))
}

/// The keys of a record batch of [`SORTED_KEY_COLUMNS`].
fn batch_keys(batch: &RecordBatch) -> PyResult<Vec<DifficultyKey>> {
    let [primary, tiebreak] = SORTED_KEY_COLUMNS.map(|name| {
        let field = format!("sorted_keys.{name}");
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| config_error(&field, "expected a column of this name"))?;
        primitive_values::<Float64Type>(column, &field)
    });
    let keys = primary?.into_iter().zip(tiebreak?);
    Ok(keys.map(|(primary, tiebreak)| DifficultyKey { primary, tiebreak }).collect())
}

/// The values of an Arrow array of `T` without nulls, copied once.
fn primitive_values<T: ArrowPrimitiveType>(
    array: &ArrayRef,
    field: &str,
) -> PyResult<Vec<T::Native>> {
    let values = array
        .as_primitive_opt::<T>()
        .filter(|values| values.null_count() == 0)
        .ok_or_else(|| {
            let found = array.data_type();
            config_error(
                field,
                &format!("expected {} values without nulls, found {found}", T::DATA_TYPE),
            )
        })?;
    Ok(values.values().to_vec())
}

fn parse_config(config_json: &str) -> Result<PrepConfig, NativeError> {
    from_json_as(config_json, "config")
}

fn parse_source(source: &str) -> PyResult<DifficultySource> {
    from_json(&serde_json::Value::String(source.to_owned()).to_string(), "difficulty_source")
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, field: &str) -> PyResult<T> {
    Ok(from_json_as(text, field)?)
}

fn from_json_as<T: serde::de::DeserializeOwned>(text: &str, field: &str) -> Result<T, NativeError> {
    serde_json::from_str(text)
        .map_err(|error| NativeError(config_error_of(field, &error.to_string())))
}

fn to_json<T: serde::Serialize>(value: &T, field: &str) -> PyResult<String> {
    serde_json::to_string(value).map_err(|error| config_error(field, &error.to_string()))
}

fn config_error(field: &str, reason: &str) -> PyErr {
    NativeError(config_error_of(field, reason)).into()
}

fn config_error_of(field: &str, reason: &str) -> Error {
    Error::Config { field: field.into(), reason: reason.into() }
}
