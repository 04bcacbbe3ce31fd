//! The unit of pass 1 that every engine runs on a batch of raw rows: render, tokenize,
//! truncate, diff and classify each row in parallel, keeping the pairs and the records of
//! the rows set aside, and count the token document frequencies of the pairs.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::types::UInt32Type;
use rayon::prelude::*;

use super::PrepConfig;
use crate::diff::{DiffOptions, DiffScratch};
use crate::error::Result;
use crate::importance::DocumentFrequency;
use crate::io::input::{ColumnMap, shipped_rows};
use crate::io::quarantine::quarantine_batch;
use crate::io::shard::{prepared_batch, prepared_column};
use crate::pair::{Quarantined, RowOutcome};
use crate::prepare::{PrepareContext, PreparedPair, PromptCache, prepare, render};
use crate::token_lists::list_rows;
use crate::tokenize::PairTokenizer;

/// Prompts kept tokenized across batches before the cache is emptied (bounds memory).
const PROMPT_CACHE_LIMIT: usize = 1 << 16;

/// Prepares a batch of rows in parallel, in their order. `prompts` carries tokenized
/// prompts from batch to batch (it only saves time: the output does not depend on it).
/// Fails when a conversational row meets a tokenizer without a usable chat template.
pub fn prepare_rows(
    rows: Vec<RowOutcome>,
    tokenizer: &PairTokenizer,
    prompts: &mut PromptCache,
    config: &PrepConfig,
) -> Result<Vec<std::result::Result<PreparedPair, Quarantined>>> {
    let rendered: Vec<_> = rows
        .into_par_iter()
        .map(|row| match row {
            Ok(pair) => Ok(render(&pair, tokenizer)?.map(|texts| (pair, texts))),
            Err(quarantined) => Ok(Err(quarantined)),
        })
        .collect::<Result<_>>()?;
    cache_new_prompts(
        rendered.iter().flatten().map(|(_, texts)| texts.prompt.as_str()),
        tokenizer,
        prompts,
    );
    let value_keys = config.importance.value_key_names();
    let context = PrepareContext {
        tokenizer,
        prompts,
        limit: config.limit,
        diff: DiffOptions { max_edit_distance: config.max_edit_distance },
        value_keys: &value_keys,
    };
    Ok(rendered
        .into_par_iter()
        .map_init(DiffScratch::default, |scratch, row| {
            let (pair, texts) = row?;
            prepare(&pair, &texts, &context, scratch)
        })
        .collect())
}

/// Tokenizes each prompt of the batch that is not cached yet, once, in parallel.
fn cache_new_prompts<'a>(
    batch_prompts: impl Iterator<Item = &'a str>,
    tokenizer: &PairTokenizer,
    prompts: &mut PromptCache,
) {
    let mut new: Vec<&str> =
        batch_prompts.filter(|prompt| !prompts.contains_key(*prompt)).collect();
    new.sort_unstable();
    new.dedup();
    if prompts.len() + new.len() > PROMPT_CACHE_LIMIT {
        prompts.clear();
    }
    let encoded: Vec<_> = new
        .into_par_iter()
        .filter_map(|prompt| {
            Some((prompt.to_owned(), Arc::new(tokenizer.encode_prompt(prompt).ok()?)))
        })
        .collect();
    prompts.extend(encoded);
}

/// A shipped batch after pass 1, as Arrow: the pairs (the prepared schema) and the
/// quarantine records (the quarantine schema), each in input order.
#[derive(Debug)]
pub struct PreparedBatch {
    /// The pairs kept.
    pub pairs: RecordBatch,
    /// The rows set aside.
    pub quarantined: RecordBatch,
}

/// Pass 1 over a batch shipped by another engine (see [`shipped_rows`]).
pub fn prepare_shipped(
    batch: &RecordBatch,
    columns: &ColumnMap,
    tokenizer: &PairTokenizer,
    prompts: &mut PromptCache,
    config: &PrepConfig,
) -> Result<PreparedBatch> {
    let rows = shipped_rows(batch, columns)?;
    let mut pairs = Vec::with_capacity(rows.len());
    let mut quarantined = Vec::new();
    for outcome in prepare_rows(rows, tokenizer, prompts, config)? {
        match outcome {
            Ok(pair) => pairs.push(pair),
            Err(record) => quarantined.push(record),
        }
    }
    Ok(PreparedBatch {
        pairs: prepared_batch(&pairs, None)?,
        quarantined: quarantine_batch(&quarantined)?,
    })
}

/// The token document frequencies of the pairs of a prepared batch.
pub fn batch_frequencies(prepared: &RecordBatch, vocab_size: usize) -> Result<DocumentFrequency> {
    let chosen = [prepared_column(prepared, "chosen_ids")?.clone()];
    let rejected = [prepared_column(prepared, "rejected_ids")?.clone()];
    let chosen = list_rows::<UInt32Type>(&chosen, "chosen_ids")?;
    let rejected = list_rows::<UInt32Type>(&rejected, "rejected_ids")?;
    let mut frequencies = DocumentFrequency::new(vocab_size);
    for (chosen, rejected) in chosen.iter().zip(&rejected) {
        frequencies.add_pair(chosen, rejected);
    }
    Ok(frequencies)
}
