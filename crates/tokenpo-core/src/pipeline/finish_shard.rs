//! The unit of pass 2 that every engine runs on the pairs of one shard: with the corpus
//! token frequencies and the difficulty scale known, add importance weights and
//! difficulty, and write the shard. Also the corpus-wide inputs of that unit: the
//! difficulty keys, gathered and ranked once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, UInt8Type, UInt32Type};
use arrow_array::{ArrayRef, Float32Array, ListArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::PrepConfig;
use crate::difficulty::{DifficultySource, RankScale};
use crate::error::{Error, Location, Result};
use crate::importance::{DocumentFrequency, ImportanceConfig, token_weights};
use crate::io::manifest::{SCHEMA_VERSION, ShardRecord};
use crate::io::shard::{
    digest_file, list_offsets, prepared_column, prepared_primitive, read_shard_columns,
    write_atomically,
};
use crate::token_lists::list_rows;

/// Schema metadata key holding the run's fingerprint, so a shard is only reused by the
/// run that wrote it.
const FINGERPRINT_KEY: &str = "tokenpo.fingerprint";

/// The prepared columns the difficulty scale is built from.
pub const DIFFICULTY_KEY_COLUMNS: [&str; 2] = ["score_margin", "difficulty_key"];

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

/// The difficulty keys of every pair of the corpus, gathered batch by batch.
#[derive(Debug, Default)]
pub struct DifficultyKeys {
    margins: Vec<Option<f64>>,
    separations: Vec<f64>,
}

impl DifficultyKeys {
    /// Adds the keys of a batch holding the [`DIFFICULTY_KEY_COLUMNS`].
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let margin = prepared_primitive::<Float32Type>(batch, "score_margin")?;
        self.margins.extend(margin.iter().map(|value| value.map(f64::from)));
        let separation = prepared_primitive::<Float64Type>(batch, "difficulty_key")?;
        self.separations.extend(separation.values().iter().copied());
        Ok(())
    }

    /// The scale: by score margin, ties broken by token separation, when every pair has a
    /// margin; else by token separation.
    #[must_use]
    pub fn scale(self) -> (DifficultySource, RankScale) {
        let all_scored = !self.margins.is_empty() && self.margins.iter().all(Option::is_some);
        let source = if all_scored {
            DifficultySource::ScoreMargin
        } else {
            DifficultySource::TokenSeparation
        };
        let keys = self.margins.into_iter().zip(self.separations);
        let keys = keys.map(|(margin, separation)| source.key(margin, separation)).collect();
        (source, RankScale::new(keys))
    }
}

/// What turns prepared pairs into final rows; the same for every shard of a run.
pub struct Weighting<'a> {
    /// Token document frequencies over the whole corpus.
    pub frequencies: &'a DocumentFrequency,
    /// Importance coefficients.
    pub importance: &'a ImportanceConfig,
    /// Difficulty ranks over the whole corpus.
    pub scale: &'a RankScale,
    /// Which key the scale ranks.
    pub source: DifficultySource,
}

/// Sums over the pairs of a shard, added up over the run for the manifest's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSums {
    /// Pairs.
    pub pairs: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Chosen tokens.
    pub chosen_tokens: u64,
    /// Rejected tokens.
    pub rejected_tokens: u64,
    /// Edit distances.
    pub edit_distance: u64,
    /// Unaligned pairs.
    pub unaligned: u64,
    /// Truncated pairs.
    pub truncated: u64,
}

impl ShardSums {
    /// The sums over a batch of prepared pairs.
    pub fn of(batch: &RecordBatch) -> Result<Self> {
        let tokens = |name: &str| -> Result<u64> {
            let column = prepared_column(batch, name)?;
            let list = column.as_list_opt::<i32>().ok_or_else(|| Error::Schema {
                location: Location::field(name),
                expected: "a list column (32-bit offsets)".into(),
                found: column.data_type().clone(),
            })?;
            let offsets = list.value_offsets();
            Ok(offsets.last().map_or(0, |&end| end as u64)
                - offsets.first().map_or(0, |&start| start as u64))
        };
        let edit = prepared_primitive::<UInt32Type>(batch, "edit_distance")?;
        let truncated = prepared_primitive::<UInt8Type>(batch, "truncated")?;
        Ok(Self {
            pairs: batch.num_rows() as u64,
            prompt_tokens: tokens("prompt_ids")?,
            chosen_tokens: tokens("chosen_ids")?,
            rejected_tokens: tokens("rejected_ids")?,
            edit_distance: edit.values().iter().map(|&d| u64::from(d)).sum(),
            unaligned: prepared_column(batch, "unaligned")?.as_boolean().true_count() as u64,
            truncated: truncated.values().iter().filter(|&&bits| bits != 0).count() as u64,
        })
    }

    /// Adds `other` to these sums.
    pub fn add(&mut self, other: &Self) {
        self.pairs += other.pairs;
        self.prompt_tokens += other.prompt_tokens;
        self.chosen_tokens += other.chosen_tokens;
        self.rejected_tokens += other.rejected_tokens;
        self.edit_distance += other.edit_distance;
        self.unaligned += other.unaligned;
        self.truncated += other.truncated;
    }
}

/// Writes shard number `index` of the run with fingerprint `fingerprint` into `out`
/// from its prepared pairs, unless a complete shard of this run is already there.
/// Returns the shard's manifest record and its sums.
pub fn write_shard(
    prepared: &RecordBatch,
    index: usize,
    out: &Path,
    config: &PrepConfig,
    weighting: &Weighting<'_>,
    fingerprint: &str,
) -> Result<(ShardRecord, ShardSums)> {
    let sums = ShardSums::of(prepared)?;
    let name = PathBuf::from(format!("shard-{index:05}.{}", config.format.extension()));
    let path = out.join(&name);
    if !is_complete(&path, sums.pairs, fingerprint) {
        let batch = final_batch(prepared, index, weighting, fingerprint)?;
        write_atomically(&batch, &path, config.format)?;
    }
    let record = ShardRecord { path: name, rows: sums.pairs, digest: digest_file(&path)? };
    Ok((record, sums))
}

/// The prepared columns plus weights and difficulty, in the final column order.
fn final_batch(
    prepared: &RecordBatch,
    index: usize,
    weighting: &Weighting<'_>,
    fingerprint: &str,
) -> Result<RecordBatch> {
    let mut computed: HashMap<&str, ArrayRef> = HashMap::new();
    computed.insert("chosen_weight", weight_column(prepared, index, "chosen", weighting)?);
    computed.insert("rejected_weight", weight_column(prepared, index, "rejected", weighting)?);
    computed.insert("difficulty", difficulty_column(prepared, weighting)?);
    let mut fields = Vec::with_capacity(FINAL_COLUMNS.len());
    let mut columns = Vec::with_capacity(FINAL_COLUMNS.len());
    for name in FINAL_COLUMNS {
        let column = match computed.remove(name) {
            Some(column) => column,
            None => prepared_column(prepared, name)?.clone(),
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
    index: usize,
    side: &str,
    weighting: &Weighting<'_>,
) -> Result<ArrayRef> {
    let ids_column = [prepared_column(prepared, &format!("{side}_ids"))?.clone()];
    let diff_column = [prepared_column(prepared, &format!("{side}_diff"))?.clone()];
    let class_column = [prepared_column(prepared, &format!("{side}_class"))?.clone()];
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
    let offsets =
        list_offsets(weights.iter().map(Vec::len), Some(index), &format!("{side}_weight"))?;
    let values = Float32Array::from(weights.concat());
    let item = Arc::new(Field::new_list_field(DataType::Float32, true));
    Ok(Arc::new(ListArray::new(item, offsets, Arc::new(values), None)))
}

fn difficulty_column(prepared: &RecordBatch, weighting: &Weighting<'_>) -> Result<ArrayRef> {
    let margins = prepared_primitive::<Float32Type>(prepared, "score_margin")?;
    let separations = prepared_primitive::<Float64Type>(prepared, "difficulty_key")?;
    let difficulties = margins.iter().zip(separations.values()).map(|(margin, &separation)| {
        weighting.scale.difficulty(weighting.source.key(margin.map(f64::from), separation))
    });
    Ok(Arc::new(Float32Array::from_iter_values(difficulties)))
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
