//! One raw pair in, one prepared pair (or a quarantine record) out: render, tokenize,
//! truncate, diff, classify tokens. Pure and per row, so the pipeline runs it in parallel.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diff::{DiffOptions, DiffScratch, DiffStats, diff_into};
use crate::difficulty::separation_key;
use crate::error::Error;
use crate::importance::{TEXT, classify_bytes, token_classes};
use crate::io::checksum::to_hex;
use crate::pair::{Message, Quarantined, RawPair, RowSource, Turns};
use crate::tokenize::{ChatTemplate, Encoded, PairTokenizer};

#[cfg(test)]
mod tests;

/// Bits of the `truncated` column: which parts were cut to fit `max_len`.
pub mod truncated {
    /// The prompt lost tokens at its start.
    pub const PROMPT: u8 = 1;
    /// The chosen completion lost tokens at its end.
    pub const CHOSEN: u8 = 2;
    /// The rejected completion lost tokens at its end.
    pub const REJECTED: u8 = 4;
}

/// How long sequences are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LengthLimit {
    /// Most tokens of prompt + the longer completion.
    pub max_len: usize,
    /// Most prompt tokens kept when truncating (the prompt keeps its end).
    pub max_prompt_len: usize,
    /// Quarantine pairs over `max_len` instead of truncating them.
    pub drop_over_length: bool,
}

/// Roles a prompt message may have; completion messages are the assistant's.
const PROMPT_ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// A prompt's rendering and tokens, shared by every pair that repeats the prompt.
pub type PromptCache = HashMap<String, Arc<Encoded>>;

/// One completion after preparation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PreparedSide {
    /// Completion tokens, EOS last.
    pub ids: Vec<u32>,
    /// 1 where the token lies outside the LCS with the other completion.
    pub diff: Vec<u8>,
    /// Token class (see [`crate::importance`]).
    pub class: Vec<u8>,
}

/// A pair ready to be written to a shard (weights and difficulty come in a second pass).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PreparedPair {
    /// Where the row came from.
    pub source: RowSource,
    /// The input's id, or a stable hash of the row's text.
    pub pair_id: String,
    /// Prompt tokens.
    pub prompt_ids: Vec<u32>,
    /// The chosen completion.
    pub chosen: PreparedSide,
    /// The rejected completion.
    pub rejected: PreparedSide,
    /// Edit distance, LCS length, shared prefix of the completions.
    pub stats: DiffStats,
    /// `score_chosen - score_rejected` when the input has scores.
    pub score_margin: Option<f32>,
    /// Bits of [`truncated`].
    pub truncated: u8,
    /// Token separation (see [`crate::difficulty`]); the difficulty key when there are no scores.
    pub difficulty_key: f64,
}

/// What the per-row preparation needs besides the row.
pub struct PrepareContext<'a> {
    /// The tokenizer, with EOS and chat template.
    pub tokenizer: &'a PairTokenizer,
    /// Prompts already tokenized, by their rendered text.
    pub prompts: &'a PromptCache,
    /// Length handling, when a limit is set.
    pub limit: Option<LengthLimit>,
    /// Diff options.
    pub diff: DiffOptions,
    /// JSON keys whose values get their own token class.
    pub value_keys: &'a [String],
}

/// The texts of a pair after rendering conversations with the chat template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPair {
    /// The prompt text (empty when there is none).
    pub prompt: String,
    /// The chosen completion text.
    pub chosen: String,
    /// The rejected completion text.
    pub rejected: String,
}

/// Renders a raw pair to texts: plain text as is; conversations through the chat template,
/// the prompt being the given one or else the longest common message prefix. A row that
/// cannot be used is set aside (the inner error); a conversation when the tokenizer has no
/// chat template that parses stops the run, as every row like it would be set aside.
pub fn render(
    pair: &RawPair,
    tokenizer: &PairTokenizer,
) -> Result<Result<RenderedPair, Quarantined>, Error> {
    let source = pair.source;
    Ok(match (&pair.prompt, &pair.chosen, &pair.rejected) {
        (prompt @ (None | Some(Turns::Text(_))), Turns::Text(chosen), Turns::Text(rejected)) => {
            let prompt = match prompt {
                Some(Turns::Text(text)) => text.clone(),
                _ => String::new(),
            };
            Ok(RenderedPair { prompt, chosen: chosen.clone(), rejected: rejected.clone() })
        }
        (Some(Turns::Messages(prompt)), Turns::Messages(chosen), Turns::Messages(rejected)) => {
            let template = tokenizer.chat_template()?;
            check_roles(source, "prompt", prompt, prompt.len())
                .and_then(|()| check_roles(source, "chosen", chosen, 0))
                .and_then(|()| check_roles(source, "rejected", rejected, 0))
                .and_then(|()| render_conversation(prompt, chosen, rejected, template, source))
        }
        (None, Turns::Messages(chosen), Turns::Messages(rejected)) => {
            let template = tokenizer.chat_template()?;
            let shared = chosen.iter().zip(rejected).take_while(|(a, b)| a == b).count();
            check_roles(source, "chosen", chosen, shared)
                .and_then(|()| check_roles(source, "rejected", rejected, shared))
                .and_then(|()| {
                    render_conversation(
                        &chosen[..shared],
                        &chosen[shared..],
                        &rejected[shared..],
                        template,
                        source,
                    )
                })
        }
        _ => Err(Quarantined::field(
            source,
            "prompt",
            "prompt and completions mix text and messages",
        )),
    })
}

/// Checks the roles of the messages of `field`: those before `completion_start` belong to
/// the prompt and need a known role, the others to a completion and must be the assistant's.
fn check_roles(
    source: RowSource,
    field: &str,
    messages: &[Message],
    completion_start: usize,
) -> Result<(), Quarantined> {
    let misplaced = messages.iter().enumerate().find_map(|(index, message)| {
        let role = message.role.as_str();
        if index < completion_start {
            (!PROMPT_ROLES.contains(&role)).then(|| {
                format!(
                    "unknown message role: {field} message {index} has role '{role}' \
                     (expected system, user, assistant or tool)"
                )
            })
        } else {
            (role != "assistant").then(|| {
                format!(
                    "completion message not from the assistant: {field} message {index} has \
                     role '{role}' (a completion holds assistant messages only)"
                )
            })
        }
    });
    misplaced.map_or(Ok(()), |reason| Err(Quarantined::field(source, field, reason)))
}

fn render_conversation(
    prompt: &[Message],
    chosen: &[Message],
    rejected: &[Message],
    template: &ChatTemplate,
    source: RowSource,
) -> Result<RenderedPair, Quarantined> {
    for (field, completion) in [("chosen", chosen), ("rejected", rejected)] {
        if completion.is_empty() {
            return Err(Quarantined::field(source, field, "empty completion"));
        }
    }
    let at = |field: &'static str| move |reason: String| Quarantined::field(source, field, reason);
    Ok(RenderedPair {
        prompt: template.render_prompt(prompt).map_err(at("prompt"))?,
        chosen: template.render_completion(prompt, chosen).map_err(at("chosen"))?,
        rejected: template.render_completion(prompt, rejected).map_err(at("rejected"))?,
    })
}

/// Prepares one rendered pair whose prompt is in `context.prompts`.
pub fn prepare(
    pair: &RawPair,
    rendered: &RenderedPair,
    context: &PrepareContext<'_>,
    scratch: &mut DiffScratch,
) -> Result<PreparedPair, Quarantined> {
    let source = pair.source;
    let reject = |field: &str, reason: String| Quarantined::field(source, field, reason);
    for (field, text) in [("chosen", &rendered.chosen), ("rejected", &rendered.rejected)] {
        if text.is_empty() {
            return Err(reject(field, "empty completion".into()));
        }
    }
    let mut prompt = match context.prompts.get(&rendered.prompt) {
        Some(encoded) => encoded.ids.clone(),
        None => {
            context.tokenizer.encode_prompt(&rendered.prompt).map_err(|e| reject("prompt", e))?.ids
        }
    };
    let chosen_bytes = classify_bytes(&rendered.chosen, context.value_keys);
    let rejected_bytes = classify_bytes(&rendered.rejected, context.value_keys);
    let encode = |text: &str, bytes: &Option<Vec<u8>>, field: &str| {
        context.tokenizer.encode_completion(text, bytes.is_some()).map_err(|e| reject(field, e))
    };
    let mut chosen = encode(&rendered.chosen, &chosen_bytes, "chosen")?;
    let mut rejected = encode(&rendered.rejected, &rejected_bytes, "rejected")?;
    if chosen.ids == rejected.ids {
        return Err(reject(
            "rejected",
            "chosen and rejected are identical after tokenization".into(),
        ));
    }
    let truncated = match context.limit {
        Some(limit) => {
            let bits = fit(&mut prompt, &mut chosen, &mut rejected, limit)
                .map_err(|(field, reason)| reject(field, reason))?;
            if chosen.ids == rejected.ids {
                return Err(reject(
                    "rejected",
                    format!(
                        "chosen and rejected are identical after truncation to max_len: they \
                         differ only past the {} completion tokens that fit in max_len {}",
                        chosen.ids.len(),
                        limit.max_len
                    ),
                ));
            }
            bits
        }
        None => 0,
    };
    let mut chosen_side = side(chosen, chosen_bytes.as_deref());
    let mut rejected_side = side(rejected, rejected_bytes.as_deref());
    let stats = diff_into(
        &chosen_side.ids,
        &rejected_side.ids,
        &mut chosen_side.diff,
        &mut rejected_side.diff,
        context.diff,
        scratch,
    );
    let score_margin = match (pair.score_chosen, pair.score_rejected) {
        (Some(chosen), Some(rejected)) => {
            Some(score_margin(chosen, rejected).map_err(|reason| reject("score_chosen", reason))?)
        }
        _ => None,
    };
    let difficulty_key =
        separation_key(stats.edit_distance, chosen_side.ids.len(), rejected_side.ids.len());
    Ok(PreparedPair {
        source,
        pair_id: pair.id.clone().unwrap_or_else(|| stable_id(rendered)),
        prompt_ids: prompt,
        chosen: chosen_side,
        rejected: rejected_side,
        stats,
        score_margin,
        truncated,
        difficulty_key,
    })
}

/// `chosen - rejected` as the `f32` the shards hold, or why it cannot be (scores are finite,
/// but their difference may be out of range).
fn score_margin(chosen: f64, rejected: f64) -> Result<f32, String> {
    let margin = (chosen - rejected) as f32;
    if margin.is_finite() {
        Ok(margin)
    } else {
        Err(format!(
            "score margin out of range: score_chosen {chosen:e} - score_rejected {rejected:e} \
             is beyond a 32-bit float"
        ))
    }
}

/// A completion's tokens with their classes: from the byte classes when the text holds
/// JSON (then the tokens have offsets), else all [`TEXT`].
fn side(encoded: Encoded, byte_classes: Option<&[u8]>) -> PreparedSide {
    let class = match byte_classes {
        Some(byte_classes) => token_classes(byte_classes, &encoded.offsets),
        None => vec![TEXT; encoded.ids.len()],
    };
    PreparedSide { diff: vec![0; encoded.ids.len()], ids: encoded.ids, class }
}

/// Cuts the pair to `limit.max_len` tokens of prompt + the longer completion: the prompt
/// keeps its end (down to `max_prompt_len` if the completions need the room), completions
/// keep their start. Returns the [`truncated`] bits, or the field that makes the pair too
/// long and why: the prompt when it alone has `max_len` tokens, else the longer completion.
fn fit(
    prompt: &mut Vec<u32>,
    chosen: &mut Encoded,
    rejected: &mut Encoded,
    limit: LengthLimit,
) -> Result<u8, (&'static str, String)> {
    let longest = chosen.ids.len().max(rejected.ids.len());
    if prompt.len() + longest <= limit.max_len {
        return Ok(0);
    }
    if limit.drop_over_length {
        let (prompt_len, max_len) = (prompt.len(), limit.max_len);
        if prompt_len >= max_len {
            return Err((
                "prompt",
                format!("prompt over length: {prompt_len} tokens >= max_len {max_len}"),
            ));
        }
        let field = if chosen.ids.len() >= rejected.ids.len() { "chosen" } else { "rejected" };
        return Err((
            field,
            format!(
                "over length: {prompt_len} prompt + {longest} {field} tokens > max_len {max_len}"
            ),
        ));
    }
    // max_prompt_len < max_len (checked with the config), so completions keep >= 1 token.
    let prompt_room = limit.max_len.saturating_sub(longest).max(limit.max_prompt_len);
    let mut bits = 0;
    if prompt.len() > prompt_room {
        prompt.drain(..prompt.len() - prompt_room);
        bits |= truncated::PROMPT;
    }
    let completion_room = limit.max_len - prompt.len();
    for (completion, bit) in [(chosen, truncated::CHOSEN), (rejected, truncated::REJECTED)] {
        if completion.ids.len() > completion_room {
            completion.ids.truncate(completion_room);
            completion.offsets.truncate(completion_room);
            bits |= bit;
        }
    }
    Ok(bits)
}

/// A row's id when the input has none: the first 16 bytes of SHA-256 over its texts.
fn stable_id(rendered: &RenderedPair) -> String {
    let mut hasher = Sha256::new();
    for text in [&rendered.prompt, &rendered.chosen, &rendered.rejected] {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    to_hex(&hasher.finalize()[..16])
}
