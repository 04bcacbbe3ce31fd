//! Pass 1: raw rows to prepared parts of `shard_rows` pairs, with per-part sidecars.

use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

use super::prepare_batch::prepare_rows;
use super::{PrepConfig, Progress};
use crate::error::{Error, Result};
use crate::importance::DocumentFrequency;
use crate::io::input::{ColumnMap, read_pairs};
use crate::io::manifest::write_text_atomically;
use crate::io::shard::{ShardFormat, prepared_batch, write_atomically};
use crate::pair::{Quarantined, RowOutcome, RowSource};
use crate::prepare::{PreparedPair, PromptCache};
use crate::tokenize::PairTokenizer;

/// What a part's sidecar records: written after the part's data, so it marks completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PartSidecar {
    /// Pairs in the part.
    pub pairs: u64,
    /// Rows read for the part, kept or not.
    pub rows_read: u64,
    /// Reading resumes here after this part.
    pub end: RowSource,
    /// Rows set aside while reading the part, in input order.
    pub quarantined: Vec<Quarantined>,
    /// Token document frequencies of the part's pairs.
    pub frequencies: DocumentFrequency,
}

/// A completed part of pass 1.
#[derive(Debug, Clone)]
pub(super) struct Part {
    /// Its number, which is also the number of its shard.
    pub index: usize,
    /// The prepared pairs (Arrow IPC); absent when the part has none.
    pub data: PathBuf,
    /// What else the part recorded.
    pub sidecar: PartSidecar,
}

/// The outcome of pass 1: the parts, and the corpus-wide token document frequencies
/// (merged as parts complete and dropped from their sidecars, so memory stays flat).
pub(super) struct Tokenized {
    /// The parts, in order.
    pub parts: Vec<Part>,
    /// Document frequencies over every pair.
    pub frequencies: DocumentFrequency,
}

/// Runs pass 1, resuming after the parts already complete in `work`.
pub(super) fn run(
    files: &[PathBuf],
    tokenizer: &PairTokenizer,
    work: &Path,
    config: &PrepConfig,
    progress: &mut dyn FnMut(Progress) -> Result<()>,
) -> Result<Tokenized> {
    let mut frequencies = DocumentFrequency::new(tokenizer.vocab_size());
    let mut parts: Vec<Part> =
        complete_parts(work)?.into_iter().map(|part| absorb(&mut frequencies, part)).collect();
    let resume_at = parts.last().map(|part| part.sidecar.end);
    let columns = ColumnMap::from_pairs(&config.column_map)?;
    let mut builder = PartBuilder::new(parts.len(), tokenizer.vocab_size());
    let mut counts = Counts::of(&parts);
    let mut prompts = PromptCache::new();
    for (file_index, path) in files.iter().enumerate() {
        let file_index = u32::try_from(file_index).map_err(|_| too_many_files())?;
        if resume_at.is_some_and(|end| file_index < end.file) {
            continue;
        }
        for batch in read_pairs(path, file_index, &columns, config.batch_rows)? {
            let mut rows = batch?;
            if let Some(end) = resume_at {
                rows.retain(|row| source_of(row) >= end);
            }
            for outcome in prepare_rows(rows, tokenizer, &mut prompts, config)? {
                counts.add(&outcome);
                builder.push(outcome);
                if builder.pairs.len() == config.shard_rows {
                    let next = PartBuilder::new(parts.len() + 1, tokenizer.vocab_size());
                    let part = std::mem::replace(&mut builder, next).finish(work, None)?;
                    parts.push(absorb(&mut frequencies, part));
                }
            }
            progress(counts.progress())?;
        }
    }
    if builder.rows_read > 0 {
        let past_the_end =
            RowSource { file: u32::try_from(files.len()).map_err(|_| too_many_files())?, row: 0 };
        parts.push(absorb(&mut frequencies, builder.finish(work, Some(past_the_end))?));
    }
    Ok(Tokenized { parts, frequencies })
}

/// Adds a part's frequencies to the running total and frees them.
fn absorb(total: &mut DocumentFrequency, mut part: Part) -> Part {
    total.merge(&part.sidecar.frequencies);
    part.sidecar.frequencies = DocumentFrequency::default();
    part
}

fn source_of(row: &RowOutcome) -> RowSource {
    match row {
        Ok(pair) => pair.source,
        Err(quarantined) => quarantined.source,
    }
}

/// The pairs and records of the part being filled.
struct PartBuilder {
    index: usize,
    pairs: Vec<PreparedPair>,
    quarantined: Vec<Quarantined>,
    frequencies: DocumentFrequency,
    rows_read: u64,
}

impl PartBuilder {
    fn new(index: usize, vocab_size: usize) -> Self {
        Self {
            index,
            pairs: Vec::new(),
            quarantined: Vec::new(),
            frequencies: DocumentFrequency::new(vocab_size),
            rows_read: 0,
        }
    }

    fn push(&mut self, outcome: std::result::Result<PreparedPair, Quarantined>) {
        self.rows_read += 1;
        match outcome {
            Ok(pair) => {
                self.frequencies.add_pair(&pair.chosen.ids, &pair.rejected.ids);
                self.pairs.push(pair);
            }
            Err(quarantined) => self.quarantined.push(quarantined),
        }
    }

    /// Writes the part's data, then its sidecar. `end` is where reading resumes; by
    /// default just after the part's last pair.
    fn finish(self, work: &Path, end: Option<RowSource>) -> Result<Part> {
        let data = work.join(format!("part-{:05}.arrow", self.index));
        if !self.pairs.is_empty() {
            write_atomically(
                &prepared_batch(&self.pairs, Some(self.index))?,
                &data,
                ShardFormat::Ipc,
            )?;
        }
        let last = self.pairs.last().map(|pair| pair.source);
        let end = end
            .or(last.map(|source| RowSource { row: source.row + 1, ..source }))
            .unwrap_or_default();
        let sidecar = PartSidecar {
            pairs: self.pairs.len() as u64,
            rows_read: self.rows_read,
            end,
            quarantined: self.quarantined,
            frequencies: self.frequencies,
        };
        let path = sidecar_path(work, self.index);
        let text = serde_json::to_string(&sidecar)
            .map_err(|error| Error::File { file: path.clone(), reason: error.to_string() })?;
        write_text_atomically(&path, &text)?;
        Ok(Part { index: self.index, data, sidecar })
    }
}

fn sidecar_path(work: &Path, index: usize) -> PathBuf {
    work.join(format!("part-{index:05}.json"))
}

/// The parts a previous, interrupted run completed: numbered from 0 without a gap.
fn complete_parts(work: &Path) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    loop {
        let path = sidecar_path(work, parts.len());
        if !path.is_file() {
            return Ok(parts);
        }
        let text = fs::read_to_string(&path).map_err(|error| Error::io(&path, &error))?;
        let sidecar: PartSidecar = serde_json::from_str(&text)
            .map_err(|error| Error::File { file: path.clone(), reason: error.to_string() })?;
        let data = work.join(format!("part-{:05}.arrow", parts.len()));
        parts.push(Part { index: parts.len(), data, sidecar });
    }
}

/// Running totals for the progress report, resumed parts included.
struct Counts {
    rows: u64,
    pairs: u64,
    quarantined: u64,
}

impl Counts {
    fn of(parts: &[Part]) -> Self {
        Self {
            rows: parts.iter().map(|part| part.sidecar.rows_read).sum(),
            pairs: parts.iter().map(|part| part.sidecar.pairs).sum(),
            quarantined: parts.iter().map(|part| part.sidecar.quarantined.len() as u64).sum(),
        }
    }

    fn add(&mut self, outcome: &std::result::Result<PreparedPair, Quarantined>) {
        self.rows += 1;
        match outcome {
            Ok(_) => self.pairs += 1,
            Err(_) => self.quarantined += 1,
        }
    }

    fn progress(&self) -> Progress {
        Progress::Tokenized { rows: self.rows, pairs: self.pairs, quarantined: self.quarantined }
    }
}

fn too_many_files() -> Error {
    Error::Config { field: "inputs".into(), reason: "more than 2^32 input files".into() }
}
