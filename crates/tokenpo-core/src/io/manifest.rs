//! `manifest.json`: what a prep run read, how, and what it wrote. Written last, so a
//! directory with a manifest is complete.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::difficulty::DifficultySource;
use crate::error::{Error, Result};
use crate::io::shard::{FileDigest, temporary_path};

/// Bumped whenever the shard columns or the manifest change meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// The manifest of a prepared directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// Hash of everything that determines the output: inputs, tokenizer, config.
    pub fingerprint: String,
    /// The tokenizer used.
    pub tokenizer: TokenizerRecord,
    /// The prep configuration, as given.
    pub config: serde_json::Value,
    /// Where `difficulty` comes from.
    pub difficulty_source: DifficultySource,
    /// The input files, in reading order.
    pub inputs: Vec<FileRecord>,
    /// The shards, in order.
    pub shards: Vec<ShardRecord>,
    /// The quarantine file and how many rows it holds.
    pub quarantine: ShardRecord,
    /// Corpus statistics.
    pub summary: Summary,
}

/// The tokenizer of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerRecord {
    /// Path of the tokenizer.json.
    pub path: PathBuf,
    /// SHA-256 of its bytes; the trainer checks it against the model's tokenizer.
    pub sha256: String,
    /// The EOS id appended to completions.
    pub eos_id: u32,
    /// Whether a chat template was available.
    pub chat_template: bool,
}

/// An input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Its path as given.
    pub path: PathBuf,
    /// Size and checksum.
    #[serde(flatten)]
    pub digest: FileDigest,
}

/// An output file and its row count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// Path relative to the output directory.
    pub path: PathBuf,
    /// Rows it holds.
    pub rows: u64,
    /// Size and checksum.
    #[serde(flatten)]
    pub digest: FileDigest,
}

/// Corpus statistics of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Summary {
    /// Rows read from the inputs.
    pub rows_read: u64,
    /// Pairs written.
    pub pairs: u64,
    /// Rows set aside, by reason.
    pub quarantined: BTreeMap<String, u64>,
    /// Mean prompt tokens per pair.
    pub mean_prompt_tokens: f64,
    /// Mean chosen tokens per pair.
    pub mean_chosen_tokens: f64,
    /// Mean rejected tokens per pair.
    pub mean_rejected_tokens: f64,
    /// Mean edit distance between the completions.
    pub mean_edit_distance: f64,
    /// Pairs whose edit distance exceeded the cap.
    pub unaligned: u64,
    /// Pairs cut to fit `max_len`.
    pub truncated: u64,
}

impl Manifest {
    /// Reads `dir/manifest.json`, or `None` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("manifest.json");
        if !path.is_file() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path).map_err(|error| Error::io(&path, &error))?;
        let manifest = serde_json::from_str(&text).map_err(|error| Error::File {
            file: path,
            reason: format!("not a tokenpo manifest: {error}"),
        })?;
        Ok(Some(manifest))
    }

    /// Writes `dir/manifest.json` through a temporary file and a rename.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join("manifest.json");
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|error| Error::File { file: path.clone(), reason: error.to_string() })?;
        text.push('\n');
        write_text_atomically(&path, &text)
    }
}

/// Writes `text` to `path` through a temporary file and a rename.
pub fn write_text_atomically(path: &Path, text: &str) -> Result<()> {
    let temporary = temporary_path(path);
    fs::write(&temporary, text).map_err(|error| Error::io(&temporary, &error))?;
    fs::rename(&temporary, path).map_err(|error| Error::io(path, &error))
}
