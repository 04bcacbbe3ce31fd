//! The end of a run, the same for every engine: `quarantine.jsonl`, the summary
//! statistics and, last, `manifest.json`.

use std::collections::BTreeMap;
use std::path::Path;

use super::finish_shard::ShardSums;
use super::{PrepConfig, Run};
use crate::difficulty::DifficultySource;
use crate::error::{Error, Result};
use crate::io::manifest::{Manifest, SCHEMA_VERSION, ShardRecord, Summary, TokenizerRecord};
use crate::io::quarantine::write_quarantine;
use crate::pair::Quarantined;

/// What the shards of a run add up to, besides the shards themselves.
pub struct Written {
    /// The shards, in order.
    pub shards: Vec<ShardRecord>,
    /// Their sums, added up.
    pub sums: ShardSums,
    /// Every row set aside, in any order (they are written in input order).
    pub quarantined: Vec<Quarantined>,
    /// What the difficulty was ranked by.
    pub difficulty_source: DifficultySource,
}

/// Writes the quarantine file, then the manifest, and returns the manifest.
///
/// A run without a single pair (inputs without rows, or every row set aside) writes the
/// quarantine file but no manifest, and is an [`Error::NoPairs`] that says how many rows
/// were read from which files and points to the quarantine file: an empty output is
/// always a mistake in the inputs or the options, never a result to train on.
pub fn finish_run(
    run: &Run,
    config: &PrepConfig,
    out: &Path,
    written: Written,
) -> Result<Manifest> {
    let Written { shards, sums, mut quarantined, difficulty_source } = written;
    quarantined.sort_by_key(|record| record.source);
    let quarantine = write_quarantine(&quarantined, out, &run.inputs)?;
    let summary = summary(&sums, &quarantined);
    if summary.pairs == 0 {
        return Err(Error::NoPairs {
            rows_read: summary.rows_read,
            files: run.inputs.iter().map(|input| input.path.clone()).collect(),
            reasons: summary.quarantined,
            quarantine: out.join(&quarantine.path),
        });
    }
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        fingerprint: run.fingerprint.clone(),
        tokenizer: TokenizerRecord {
            path: run.tokenizer.file().to_owned(),
            sha256: run.tokenizer.sha256().to_owned(),
            eos_id: run.tokenizer.eos_id(),
            chat_template: run.tokenizer.has_chat_template(),
        },
        config: serde_json::to_value(config)
            .map_err(|error| Error::Config { field: "config".into(), reason: error.to_string() })?,
        difficulty_source,
        inputs: run.inputs.clone(),
        shards,
        summary,
        quarantine,
    };
    manifest.write(out)?;
    Ok(manifest)
}

fn summary(sums: &ShardSums, quarantined: &[Quarantined]) -> Summary {
    let mean = |total: u64| if sums.pairs == 0 { 0.0 } else { total as f64 / sums.pairs as f64 };
    let mut reasons = BTreeMap::new();
    for record in quarantined {
        *reasons.entry(reason_kind(&record.reason)).or_insert(0) += 1;
    }
    Summary {
        // Every row read is either kept as a pair or set aside.
        rows_read: sums.pairs + quarantined.len() as u64,
        pairs: sums.pairs,
        quarantined: reasons,
        mean_prompt_tokens: mean(sums.prompt_tokens),
        mean_chosen_tokens: mean(sums.chosen_tokens),
        mean_rejected_tokens: mean(sums.rejected_tokens),
        mean_edit_distance: mean(sums.edit_distance),
        unaligned: sums.unaligned,
        truncated: sums.truncated,
    }
}

/// A reason without its row-specific details (after a colon), for counting.
fn reason_kind(reason: &str) -> String {
    reason.split(':').next().unwrap_or(reason).trim().to_owned()
}
