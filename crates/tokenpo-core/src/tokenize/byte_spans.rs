//! Byte spans of tokens without the tokenizer's offset tracking.
//!
//! `Tokenizer::encode` tracks offsets through every normalization and pre-tokenization
//! step (2-5% of its time on short JSON completions); `encode_fast` skips that. For a
//! byte-level BPE whose pre-tokenization only splits, the tokens spell the text's bytes
//! in order, each vocabulary token one byte per char (the GPT-2 byte-to-unicode mapping)
//! and each added token the UTF-8 bytes of its content, so the span of a token is the
//! running sum of the byte lengths before it.

use std::collections::HashSet;

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{ModelWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// The number of text bytes each token id stands for, for a tokenizer whose tokens spell
/// the text's bytes; `None` for an id whose length is unknown or ambiguous.
#[derive(Debug)]
pub(super) struct TokenByteLengths {
    lengths: Vec<Option<u32>>,
}

impl TokenByteLengths {
    /// The table for `tokenizer`, or `None` when its tokens may not spell the text's bytes.
    ///
    /// Eligible: no normalizer, no truncation or padding, a BPE model without subword
    /// prefix, word suffix or byte fallback, and a pre-tokenizer that is one `ByteLevel`
    /// without `add_prefix_space`, alone or in a `Sequence` with `Split`s that keep what
    /// they split on. The post-processor and decoder do not change the ids of an encoding
    /// without special tokens, the only kind [`Self::spans`] is used for.
    pub(super) fn of(tokenizer: &Tokenizer) -> Option<Self> {
        let ModelWrapper::BPE(bpe) = tokenizer.get_model() else { return None };
        let eligible = tokenizer.get_normalizer().is_none()
            && tokenizer.get_truncation().is_none()
            && tokenizer.get_padding().is_none()
            && tokenizer.get_pre_tokenizer().and_then(byte_level_count) == Some(1)
            && bpe.continuing_subword_prefix.is_none()
            && bpe.end_of_word_suffix.is_none()
            && !bpe.byte_fallback;
        if !eligible {
            return None;
        }

        let vocabulary = bpe.get_vocab();
        let added = tokenizer.get_added_tokens_decoder();
        let size = vocabulary.values().chain(added.keys()).max().map_or(0, |&id| id as usize + 1);
        let mut lengths = vec![None; size];
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        for (token, &id) in &vocabulary {
            lengths[id as usize] = byte_level_length(token, &alphabet);
        }
        for (&id, token) in &added {
            let slot = &mut lengths[id as usize];
            let content_length = u32::try_from(token.content.len()).ok();
            // Stripping makes a match take in the spaces around it; an id the BPE can also
            // produce from text of another length is ambiguous.
            let ambiguous = slot.is_some() && *slot != content_length;
            *slot = if token.lstrip || token.rstrip || ambiguous { None } else { content_length };
        }
        // The unknown token stands for text of any length.
        if let Some(id) = bpe.unk_token.as_deref().and_then(|unk| tokenizer.token_to_id(unk)) {
            if let Some(slot) = lengths.get_mut(id as usize) {
                *slot = None;
            }
        }
        Some(Self { lengths })
    }

    /// The byte span in a text of `text_len` bytes of each token of `ids`, its encoding
    /// without special tokens; `None` when an id's length is unknown or the lengths do
    /// not add up to the text, and the caller must ask the tokenizer.
    ///
    /// Spans are exact: a token holding part of a multi-byte char spans only its bytes,
    /// where `Tokenizer::encode` widens it to the whole char. Spaces are never trimmed.
    pub(super) fn spans(&self, ids: &[u32], text_len: usize) -> Option<Vec<(usize, usize)>> {
        let mut spans = Vec::with_capacity(ids.len());
        let mut end = 0;
        for &id in ids {
            let length = (*self.lengths.get(id as usize)?)?;
            let start = end;
            end += length as usize;
            spans.push((start, end));
        }
        (end == text_len).then_some(spans)
    }
}

/// How many `ByteLevel` steps `pre_tokenizer` holds, or `None` if it holds a step that
/// may change, add or drop text (anything but a `ByteLevel` without prefix space and a
/// `Split` that keeps its delimiters).
fn byte_level_count(pre_tokenizer: &PreTokenizerWrapper) -> Option<usize> {
    match pre_tokenizer {
        PreTokenizerWrapper::ByteLevel(byte_level) => (!byte_level.add_prefix_space).then_some(1),
        PreTokenizerWrapper::Split(split) => {
            (split.behavior != SplitDelimiterBehavior::Removed).then_some(0)
        }
        PreTokenizerWrapper::Sequence(sequence) => {
            sequence.as_ref().iter().map(byte_level_count).sum()
        }
        _ => None,
    }
}

/// The bytes a byte-level token string stands for: one per char, when every char is in
/// the byte-level alphabet.
fn byte_level_length(token: &str, alphabet: &HashSet<char>) -> Option<u32> {
    let mut length = 0;
    for char in token.chars() {
        if !alphabet.contains(&char) {
            return None;
        }
        length += 1;
    }
    Some(length)
}
