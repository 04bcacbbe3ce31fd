//! `prep`: raw pairs in, prepared shards, `quarantine.jsonl` and `manifest.json` out.
//!
//! Two passes, each streaming in record batches with rows in parallel on rayon:
//! 1. [`tokenize_pass`]: read, render, tokenize, truncate, diff and classify every pair;
//!    count token document frequencies; write parts of `shard_rows` pairs to a work
//!    directory, each with a sidecar recording its quarantined rows and counts.
//! 2. [`write_pass`]: with the corpus-wide frequencies and difficulty ranks known, add
//!    importance weights and difficulty to each part and write the final shard.
//!
//! The per-batch units of both passes ([`prepare_batch`], [`finish_shard`]) and the end
//! of a run ([`finish_run`]) are public, so that another engine (the Ray engine of the
//! Python package) runs the very same code, distributed, and writes the same output.
//!
//! Every file is written under a temporary name and renamed when complete, and the
//! manifest last. Output depends only on the inputs and the config (never on the thread
//! count or on interruptions), so a killed run re-run with the same arguments skips the
//! completed parts and shards and ends byte-identical to an uninterrupted run.

mod finish_run;
mod finish_shard;
mod prepare_batch;
mod tokenize_pass;
mod write_pass;

#[cfg(test)]
mod tests;

pub use finish_run::{Written, finish_run};
pub use finish_shard::{DIFFICULTY_KEY_COLUMNS, DifficultyKeys, ShardSums, Weighting, write_shard};
pub use prepare_batch::{PreparedBatch, batch_frequencies, prepare_rows, prepare_shipped};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diff::DiffOptions;
use crate::error::{Error, Result};
use crate::importance::ImportanceConfig;
use crate::io::checksum::sha256_hex;
use crate::io::input::{describe_input, expand_inputs};
use crate::io::manifest::{FileRecord, Manifest, SCHEMA_VERSION};
use crate::io::shard::{FileDigest, ShardFormat};
use crate::prepare::LengthLimit;
use crate::tokenize::PairTokenizer;

/// Bumped whenever prep writes other shards from the same inputs, config and tokenizer, so
/// that an output directory of an older prep is not taken for finished (2: ties in the score
/// margin broken by token separation; 3: message roles checked, lines of Unicode whitespace
/// and infinite score margins quarantined, quarantine reasons that name the longer side;
/// 4: a `.json` array's elements read as rows, rows on which the tokenizer or the chat
/// template panics quarantined, and a run without pairs an error, not an empty output).
const PREP_VERSION: u32 = 4;

/// Everything that shapes the output of `prep`; recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrepConfig {
    /// Canonical column name → name in the input files.
    pub column_map: BTreeMap<String, String>,
    /// Overrides the EOS token the tokenizer config names.
    pub eos_token: Option<String>,
    /// Length limit, if any.
    pub limit: Option<LengthLimit>,
    /// Pairs per shard.
    pub shard_rows: usize,
    /// Rows read and processed together (bounds memory).
    pub batch_rows: usize,
    /// Shard file format.
    pub format: ShardFormat,
    /// Importance weight coefficients.
    pub importance: ImportanceConfig,
    /// Edit distance beyond which a pair is unaligned.
    pub max_edit_distance: u32,
}

impl Default for PrepConfig {
    fn default() -> Self {
        Self {
            column_map: BTreeMap::new(),
            eos_token: None,
            limit: None,
            shard_rows: 100_000,
            batch_rows: 4096,
            format: ShardFormat::Parquet,
            importance: ImportanceConfig::default(),
            max_edit_distance: DiffOptions::default().max_edit_distance,
        }
    }
}

impl PrepConfig {
    /// Checks every value; errors name the option.
    pub fn validate(&self) -> Result<()> {
        let config_error = |field: &str, reason: &str| Error::Config {
            field: field.into(),
            reason: reason.into(),
        };
        if self.shard_rows == 0 {
            return Err(config_error("shard_rows", "must be at least 1"));
        }
        if self.batch_rows == 0 {
            return Err(config_error("batch_rows", "must be at least 1"));
        }
        if let Some(limit) = self.limit {
            if limit.max_len < 2 {
                return Err(config_error("max_len", "must be at least 2"));
            }
            if limit.max_prompt_len >= limit.max_len {
                return Err(config_error("max_prompt_len", "must be less than max_len"));
            }
        }
        self.importance.validate()
    }
}

/// What `prep` reports while it works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Pass 1: rows read so far, pairs kept, rows quarantined.
    Tokenized {
        /// Rows read.
        rows: u64,
        /// Pairs kept.
        pairs: u64,
        /// Rows set aside.
        quarantined: u64,
    },
    /// Pass 2: shards written so far, out of the total.
    Written {
        /// Shards done.
        shards: usize,
        /// Shards in all.
        total: usize,
    },
}

/// Prepares `inputs` (files or globs) into `out` with the tokenizer at `tokenizer`.
/// `progress` is called after each batch and each shard; returning an error from it
/// stops the run (the CLI does so on Ctrl-C), which can be resumed.
pub fn prep(
    inputs: &[PathBuf],
    tokenizer: &Path,
    out: &Path,
    config: &PrepConfig,
    progress: &mut dyn FnMut(Progress) -> Result<()>,
) -> Result<Manifest> {
    let run = match Run::plan(inputs, tokenizer, out, config)? {
        Planned::Done(manifest) => return Ok(manifest),
        Planned::ToDo(run) => run,
    };
    let work = out.join(format!(".work-{}", &run.fingerprint[..16]));
    fs::create_dir_all(&work).map_err(|error| Error::io(&work, &error))?;
    let pass_one = tokenize_pass::run(&run.files, &run.tokenizer, &work, config, progress)?;
    let manifest =
        write_pass::run(&pass_one.parts, &pass_one.frequencies, out, config, &run, progress)?;
    fs::remove_dir_all(&work).map_err(|error| Error::io(&work, &error))?;
    Ok(manifest)
}

/// What every engine knows before reading a row: the input files, the tokenizer and the
/// fingerprint of the run.
pub struct Run {
    /// The input files, globs expanded, in reading order (a row's `source_file` indexes it).
    pub files: Vec<PathBuf>,
    /// The tokenizer.
    pub tokenizer: PairTokenizer,
    /// The input files with their sizes and checksums, for the manifest.
    pub inputs: Vec<FileRecord>,
    /// Hash of the inputs, tokenizer and config: the output depends on nothing else.
    pub fingerprint: String,
}

/// A run to do, or the manifest of the same run already finished in the output directory.
#[expect(clippy::large_enum_variant, reason = "one is made per run and matched at once")]
pub enum Planned {
    /// `out` already holds this run's output.
    Done(Manifest),
    /// The run to do.
    ToDo(Run),
}

impl Run {
    /// Checks the config, expands the inputs, loads the tokenizer and fingerprints the run.
    /// An output directory finished by a run with another fingerprint is an error.
    pub fn plan(
        inputs: &[PathBuf],
        tokenizer: &Path,
        out: &Path,
        config: &PrepConfig,
    ) -> Result<Planned> {
        config.validate()?;
        let files = expand_inputs(inputs, out)?;
        let tokenizer = PairTokenizer::load(tokenizer, config.eos_token.as_deref())?;
        let inputs: Vec<FileRecord> = files
            .iter()
            .map(|path| {
                let input = describe_input(path)?;
                Ok(FileRecord {
                    path: input.path,
                    digest: FileDigest { bytes: input.bytes, sha256: input.sha256 },
                })
            })
            .collect::<Result<_>>()?;
        let fingerprint = fingerprint(config, &tokenizer, &inputs)?;
        match Manifest::read(out)? {
            Some(manifest) if manifest.fingerprint == fingerprint => Ok(Planned::Done(manifest)),
            Some(_) => Err(Error::File {
                file: out.join("manifest.json"),
                reason: "this directory holds shards prepared from other inputs or another \
                         config; choose another output directory or remove it"
                    .into(),
            }),
            None => Ok(Planned::ToDo(Self { files, tokenizer, inputs, fingerprint })),
        }
    }
}

fn fingerprint(
    config: &PrepConfig,
    tokenizer: &PairTokenizer,
    inputs: &[FileRecord],
) -> Result<String> {
    let record = serde_json::json!({
        "schema_version": SCHEMA_VERSION,
        "prep_version": PREP_VERSION,
        "config": config,
        "tokenizer": tokenizer.identity(),
        "inputs": inputs.iter().map(|input| &input.digest.sha256).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string(&record)
        .map_err(|error| Error::Config { field: "config".into(), reason: error.to_string() })?;
    Ok(sha256_hex(text.as_bytes()))
}
