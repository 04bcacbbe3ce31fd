//! Pass 2 of the local engine: corpus-wide weights and difficulty added to each part of
//! pass 1, final shards written, then the quarantine file and the manifest.

use super::finish_run::{Written, finish_run};
use super::finish_shard::{
    DIFFICULTY_KEY_COLUMNS, DifficultyKeys, ShardSums, Weighting, write_shard,
};
use super::tokenize_pass::Part;
use super::{PrepConfig, Progress, Run};
use crate::error::Result;
use crate::importance::DocumentFrequency;
use crate::io::manifest::Manifest;
use crate::io::shard::{read_shard, read_shard_columns};
use std::path::Path;

/// Runs pass 2 over the parts of pass 1 and writes the quarantine file and the manifest.
pub(super) fn run(
    parts: &[Part],
    frequencies: &DocumentFrequency,
    out: &Path,
    config: &PrepConfig,
    run: &Run,
    progress: &mut dyn FnMut(Progress) -> Result<()>,
) -> Result<Manifest> {
    let with_pairs: Vec<&Part> = parts.iter().filter(|part| part.sidecar.pairs > 0).collect();
    let mut keys = DifficultyKeys::default();
    for part in &with_pairs {
        keys.add(&read_shard_columns(&part.data, Some(&DIFFICULTY_KEY_COLUMNS))?)?;
    }
    let (difficulty_source, scale) = keys.scale();
    let weighting = Weighting {
        frequencies,
        importance: &config.importance,
        scale: &scale,
        source: difficulty_source,
    };
    let mut shards = Vec::with_capacity(with_pairs.len());
    let mut sums = ShardSums::default();
    for (done, part) in with_pairs.iter().enumerate() {
        let prepared = read_shard(&part.data)?;
        let (record, part_sums) =
            write_shard(&prepared, part.index, out, config, &weighting, &run.fingerprint)?;
        shards.push(record);
        sums.add(&part_sums);
        progress(Progress::Written { shards: done + 1, total: with_pairs.len() })?;
    }
    let quarantined =
        parts.iter().flat_map(|part| part.sidecar.quarantined.iter().cloned()).collect();
    finish_run(run, config, out, Written { shards, sums, quarantined, difficulty_source })
}
