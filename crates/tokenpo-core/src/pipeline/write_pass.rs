//! Pass 2: corpus-wide weights and difficulty added to each part, final shards written.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, UInt8Type, UInt32Type};
use arrow_array::{ArrayRef, Float32Array, ListArray, RecordBatch};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Schema};
use rayon::prelude::*;

use super::tokenize_pass::Part;
use super::{PrepConfig, Progress};
use crate::difficulty::{DifficultySource, RankScale};
use crate::error::{Error, Location, Result};
use crate::importance::{DocumentFrequency, ImportanceConfig, token_weights};
use crate::io::manifest::{
    FileRecord, Manifest, SCHEMA_VERSION, ShardRecord, Summary, TokenizerRecord,
    write_text_atomically,
};
use crate::io::shard::{digest_file, read_shard, read_shard_columns, write_atomically};
use crate::token_lists::list_rows;
use crate::tokenize::PairTokenizer;

/// Schema metadata key holding the run's fingerprint, so a shard is only reused by the
/// run that wrote it.
const FINGERPRINT_KEY: &str = "tokenpo.fingerprint";

/// Columns of a final shard, in order (weights and difficulty are computed here).
const FINAL_COLUMNS: [&str; 19] = [
    "pair_id",
    "prompt_ids",
    "chosen_ids",
    "rejected_ids",
    "chosen_diff",
    "rejected_diff",
    "chosen_weight",
    "rejected_weight",
    "chosen_class",
    "rejected_class",
    "edit_distance",
    "lcs_len",
    "shared_prefix_len",
    "unaligned",
    "score_margin",
    "difficulty",
    "truncated",
    "source_file",
    "source_row",
];

/// Inputs of the write pass that are the same for every part.
pub(super) struct RunRecord<'a> {
    /// The run's fingerprint.
    pub fingerprint: &'a str,
    /// The tokenizer.
    pub tokenizer: &'a PairTokenizer,
    /// The input files.
    pub inputs: Vec<FileRecord>,
}

/// Runs pass 2 over the parts of pass 1 and writes the quarantine file and the manifest.
pub(super) fn run(
    parts: &[Part],
    frequencies: &DocumentFrequency,
    out: &Path,
    config: &PrepConfig,
    run: RunRecord<'_>,
    progress: &mut dyn FnMut(Progress) -> Result<()>,
) -> Result<Manifest> {
    let (difficulty_source, scale) = difficulty_scale(parts)?;
    let weighting = Weighting {
        frequencies,
        importance: &config.importance,
        scale: &scale,
        source: difficulty_source,
    };
    let with_pairs: Vec<&Part> = parts.iter().filter(|part| part.sidecar.pairs > 0).collect();
    let mut shards = Vec::with_capacity(with_pairs.len());
    let mut summary = SummaryBuilder::default();
    for (done, part) in with_pairs.iter().enumerate() {
        let prepared = read_shard(&part.data)?;
        summary.add(&prepared)?;
        let name = PathBuf::from(format!("shard-{:05}.{}", part.index, config.format.extension()));
        let path = out.join(&name);
        if !is_complete(&path, part.sidecar.pairs, run.fingerprint) {
            let batch = final_batch(&prepared, &weighting, run.fingerprint)?;
            write_atomically(&batch, &path, config.format)?;
        }
        shards.push(ShardRecord {
            path: name,
            rows: part.sidecar.pairs,
            digest: digest_file(&path)?,
        });
        progress(Progress::Written { shards: done + 1, total: with_pairs.len() })?;
    }
    let quarantine = write_quarantine(parts, out, &run.inputs)?;
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        fingerprint: run.fingerprint.to_owned(),
        tokenizer: TokenizerRecord {
            path: run.tokenizer.file().to_owned(),
            sha256: run.tokenizer.sha256().to_owned(),
            eos_id: run.tokenizer.eos_id(),
            chat_template: run.tokenizer.has_chat_template(),
        },
        config: serde_json::to_value(config)
            .map_err(|error| Error::Config { field: "config".into(), reason: error.to_string() })?,
        difficulty_source,
        inputs: run.inputs,
        shards,
        summary: summary.finish(parts),
        quarantine,
    };
    manifest.write(out)?;
    Ok(manifest)
}

/// The difficulty scale: by score margin when every pair has one, else by separation.
fn difficulty_scale(parts: &[Part]) -> Result<(DifficultySource, RankScale)> {
    let mut margins = Vec::new();
    let mut separations = Vec::new();
    for part in parts.iter().filter(|part| part.sidecar.pairs > 0) {
        let batch = read_shard_columns(&part.data, Some(&["score_margin", "difficulty_key"]))?;
        let margin = batch_column(&batch, "score_margin")?.as_primitive::<Float32Type>();
        margins.extend(margin.iter().map(|value| value.map(f64::from)));
        let separation = batch_column(&batch, "difficulty_key")?.as_primitive::<Float64Type>();
        separations.extend(separation.values().iter().copied());
    }
    let all_scored: Option<Vec<f64>> = margins.into_iter().collect();
    Ok(match all_scored {
        Some(margins) if !margins.is_empty() => {
            (DifficultySource::ScoreMargin, RankScale::new(margins))
        }
        _ => (DifficultySource::TokenSeparation, RankScale::new(separations)),
    })
}

struct Weighting<'a> {
    frequencies: &'a DocumentFrequency,
    importance: &'a ImportanceConfig,
    scale: &'a RankScale,
    source: DifficultySource,
}

/// The prepared columns plus weights and difficulty, in the final column order.
fn final_batch(
    prepared: &RecordBatch,
    weighting: &Weighting<'_>,
    fingerprint: &str,
) -> Result<RecordBatch> {
    let mut computed: HashMap<&str, ArrayRef> = HashMap::new();
    computed.insert("chosen_weight", weight_column(prepared, "chosen", weighting)?);
    computed.insert("rejected_weight", weight_column(prepared, "rejected", weighting)?);
    computed.insert("difficulty", difficulty_column(prepared, weighting)?);
    let mut fields = Vec::with_capacity(FINAL_COLUMNS.len());
    let mut columns = Vec::with_capacity(FINAL_COLUMNS.len());
    for name in FINAL_COLUMNS {
        let column = match computed.remove(name) {
            Some(column) => column,
            None => batch_column(prepared, name)?.clone(),
        };
        let nullable = name == "score_margin";
        fields.push(Field::new(name, column.data_type().clone(), nullable));
        columns.push(column);
    }
    let metadata = HashMap::from([
        (FINGERPRINT_KEY.to_owned(), fingerprint.to_owned()),
        ("tokenpo.schema_version".to_owned(), SCHEMA_VERSION.to_string()),
    ]);
    let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
    RecordBatch::try_new(schema, columns)
        .map_err(|source| Error::Arrow { location: Location::default(), source })
}

fn weight_column(
    prepared: &RecordBatch,
    side: &str,
    weighting: &Weighting<'_>,
) -> Result<ArrayRef> {
    let ids_column = [batch_column(prepared, &format!("{side}_ids"))?.clone()];
    let diff_column = [batch_column(prepared, &format!("{side}_diff"))?.clone()];
    let class_column = [batch_column(prepared, &format!("{side}_class"))?.clone()];
    let ids = list_rows::<UInt32Type>(&ids_column, side)?;
    let diffs = list_rows::<UInt8Type>(&diff_column, side)?;
    let classes = list_rows::<UInt8Type>(&class_column, side)?;
    let weights: Vec<Vec<f32>> = (0..ids.len())
        .into_par_iter()
        .with_min_len(64)
        .map(|row| {
            token_weights(
                classes[row],
                ids[row],
                diffs[row],
                weighting.frequencies,
                weighting.importance,
            )
        })
        .collect();
    let offsets = OffsetBuffer::<i32>::from_lengths(weights.iter().map(Vec::len));
    let values = Float32Array::from(weights.concat());
    let item = Arc::new(Field::new_list_field(DataType::Float32, true));
    Ok(Arc::new(ListArray::new(item, offsets, Arc::new(values), None)))
}

fn difficulty_column(prepared: &RecordBatch, weighting: &Weighting<'_>) -> Result<ArrayRef> {
    let keys: Vec<f64> = match weighting.source {
        DifficultySource::ScoreMargin => {
            let margins = batch_column(prepared, "score_margin")?.as_primitive::<Float32Type>();
            margins.iter().map(|margin| margin.map_or(f64::NAN, f64::from)).collect()
        }
        DifficultySource::TokenSeparation => batch_column(prepared, "difficulty_key")?
            .as_primitive::<Float64Type>()
            .values()
            .to_vec(),
    };
    Ok(Arc::new(Float32Array::from_iter_values(
        keys.into_iter().map(|key| weighting.scale.difficulty(key)),
    )))
}

fn batch_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| Error::Schema {
        location: Location::field(name),
        expected: "a column of the prepared schema".into(),
        found: DataType::Null,
    })
}

/// A shard under its final name is complete (renames are atomic); it is reused only when
/// it was written by this very run configuration and holds the expected rows.
fn is_complete(path: &Path, rows: u64, fingerprint: &str) -> bool {
    path.is_file()
        && read_shard_columns(path, Some(&["pair_id"])).is_ok_and(|batch| {
            batch.num_rows() as u64 == rows
                && batch.schema().metadata().get(FINGERPRINT_KEY).map(String::as_str)
                    == Some(fingerprint)
        })
}

fn write_quarantine(parts: &[Part], out: &Path, inputs: &[FileRecord]) -> Result<ShardRecord> {
    let name = PathBuf::from("quarantine.jsonl");
    let mut text = String::new();
    let mut rows = 0u64;
    for record in parts.iter().flat_map(|part| &part.sidecar.quarantined) {
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
        rows += 1;
    }
    let path = out.join(&name);
    write_text_atomically(&path, &text)?;
    Ok(ShardRecord { path: name, rows, digest: digest_file(&path)? })
}

/// Sums for the manifest's summary.
#[derive(Default)]
struct SummaryBuilder {
    pairs: u64,
    prompt_tokens: u64,
    chosen_tokens: u64,
    rejected_tokens: u64,
    edit_distance: u64,
    unaligned: u64,
    truncated: u64,
}

impl SummaryBuilder {
    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let tokens = |name: &str| -> Result<u64> {
            let list = batch_column(batch, name)?.as_list::<i32>();
            Ok(list.value_offsets().last().map_or(0, |&end| end as u64)
                - list.value_offsets().first().map_or(0, |&start| start as u64))
        };
        self.pairs += batch.num_rows() as u64;
        self.prompt_tokens += tokens("prompt_ids")?;
        self.chosen_tokens += tokens("chosen_ids")?;
        self.rejected_tokens += tokens("rejected_ids")?;
        let edit = batch_column(batch, "edit_distance")?.as_primitive::<UInt32Type>();
        self.edit_distance += edit.values().iter().map(|&d| u64::from(d)).sum::<u64>();
        self.unaligned += batch_column(batch, "unaligned")?.as_boolean().true_count() as u64;
        let truncated = batch_column(batch, "truncated")?.as_primitive::<UInt8Type>();
        self.truncated += truncated.values().iter().filter(|&&bits| bits != 0).count() as u64;
        Ok(())
    }

    fn finish(self, parts: &[Part]) -> Summary {
        let mean =
            |total: u64| if self.pairs == 0 { 0.0 } else { total as f64 / self.pairs as f64 };
        let mut quarantined = BTreeMap::new();
        for record in parts.iter().flat_map(|part| &part.sidecar.quarantined) {
            *quarantined.entry(reason_kind(&record.reason)).or_insert(0) += 1;
        }
        Summary {
            rows_read: parts.iter().map(|part| part.sidecar.rows_read).sum(),
            pairs: self.pairs,
            quarantined,
            mean_prompt_tokens: mean(self.prompt_tokens),
            mean_chosen_tokens: mean(self.chosen_tokens),
            mean_rejected_tokens: mean(self.rejected_tokens),
            mean_edit_distance: mean(self.edit_distance),
            unaligned: self.unaligned,
            truncated: self.truncated,
        }
    }
}

/// A reason without its row-specific details (after a colon), for counting.
fn reason_kind(reason: &str) -> String {
    reason.split(':').next().unwrap_or(reason).trim().to_owned()
}
