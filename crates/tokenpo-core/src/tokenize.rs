//! Tokenizing prompts and completions with the `tokenizers` crate, and rendering
//! conversations with the model's Jinja chat template (minijinja).
//!
//! Prompt and completions are encoded separately, so no BPE merge crosses the boundary.
//! Completions end with the EOS token. The byte spans of completion tokens are sums of
//! token byte lengths when the tokenizer is byte-level (`byte_spans`), else the offsets
//! the tokenizer tracks. A panic inside either library becomes the row's error (`panics`).

use std::fs;
use std::path::{Path, PathBuf};

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, context};
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::io::checksum::sha256_hex;
use crate::pair::Message;
use byte_spans::TokenByteLengths;
use panics::catch_panic;

mod byte_spans;
mod panics;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_template;

/// Tokens that commonly end a sequence, tried in order when no config names the EOS.
const EOS_CANDIDATES: [&str; 5] = ["<|endoftext|>", "</s>", "<|im_end|>", "<eos>", "<|eot_id|>"];

/// Token ids and, when asked for, the byte span of each token in the encoded text. Tokens
/// that are not in the text (an appended EOS) have an empty span.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Byte offsets `(start, end)` into the text, one per token; empty when not asked for.
    /// They need not lie on char boundaries: a byte-level token may hold part of a char.
    pub offsets: Vec<(usize, usize)>,
}

/// A tokenizer with its EOS token and, for conversational data, its chat template.
pub struct PairTokenizer {
    tokenizer: Tokenizer,
    /// Set when the tokenizer is byte-level: completion spans without offset tracking.
    byte_lengths: Option<TokenByteLengths>,
    eos_id: u32,
    /// What shapes the tokens besides the bytes of tokenizer.json (see [`Self::identity`]).
    identity: Value,
    /// The template, or why there is none: an error only when a conversational row needs it.
    template: std::result::Result<ChatTemplate, Unavailable>,
    file: PathBuf,
    sha256: String,
}

/// The model's chat template, for rendering conversational rows.
pub struct ChatTemplate {
    environment: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// Why there is no chat template: the file at fault and the reason.
struct Unavailable {
    file: PathBuf,
    reason: String,
}

/// A chat template's text and the file it was read from.
struct TemplateSource {
    file: PathBuf,
    text: String,
}

impl PairTokenizer {
    /// Loads a `tokenizer.json`, or a model directory holding `tokenizer.json` and
    /// optionally `tokenizer_config.json` (its `chat_template`, `bos_token`, `eos_token`).
    /// The chat template is looked for as transformers does: `chat_template.jinja` first,
    /// then the config's, then `chat_template.json`'s. `eos_token` overrides the EOS the
    /// config names.
    pub fn load(path: &Path, eos_token: Option<&str>) -> Result<Self> {
        let (tokenizer_file, directory) = if path.is_dir() {
            (path.join("tokenizer.json"), Some(path))
        } else {
            (path.to_owned(), path.parent())
        };
        let config_file = directory.map(|dir| dir.join("tokenizer_config.json"));
        let bytes =
            fs::read(&tokenizer_file).map_err(|error| tokenizer_error(&tokenizer_file, &error))?;
        let mut tokenizer = Tokenizer::from_bytes(&bytes)
            .map_err(|error| tokenizer_error(&tokenizer_file, &*error))?;
        // A tokenizer.json may carry truncation and padding settings; applied here they would
        // cut or pad every row silently. Prep sets its own limits (over-length rows are
        // quarantined), and transformers leaves them off unless a call asks for them.
        tokenizer
            .with_truncation(None)
            .map_err(|error| tokenizer_error(&tokenizer_file, &*error))?;
        tokenizer.with_padding(None);
        let config = match config_file.filter(|file| file.is_file()) {
            Some(file) => Some(read_config(&file)?),
            None => None,
        };
        let eos_text = eos_token
            .map(str::to_owned)
            .or_else(|| config.as_ref().and_then(|config| special_token(config, "eos_token")))
            .or_else(|| {
                EOS_CANDIDATES
                    .iter()
                    .find(|token| tokenizer.token_to_id(token).is_some())
                    .map(|token| (*token).to_owned())
            })
            .ok_or_else(|| Error::Tokenizer {
                file: tokenizer_file.clone(),
                reason: "no EOS token found in tokenizer_config.json or the vocabulary; pass --eos-token".into(),
            })?;
        let eos_id = tokenizer.token_to_id(&eos_text).ok_or_else(|| Error::Tokenizer {
            file: tokenizer_file.clone(),
            reason: format!("EOS token {eos_text:?} is not in the vocabulary"),
        })?;
        let bos_text = config
            .as_ref()
            .and_then(|config| special_token(config, "bos_token"))
            .unwrap_or_default();
        let source = match directory {
            Some(directory) => find_template(directory, config.as_ref())?,
            None => None,
        };
        let template = match &source {
            Some(source) => ChatTemplate::parse(&source.text, &bos_text, &eos_text)
                .map_err(|reason| Unavailable { file: source.file.clone(), reason }),
            None => Err(Unavailable {
                file: path.to_owned(),
                reason: "conversational rows need a chat template, and there is none in \
                         chat_template.jinja, tokenizer_config.json or chat_template.json \
                         next to tokenizer.json"
                    .into(),
            }),
        };
        let sha256 = sha256_hex(&bytes);
        // The template's text even when it does not parse: the output of a run that needs
        // none does not depend on it, but a later run that needs it must not resume this one.
        let identity = json!({
            "sha256": sha256,
            "eos_id": eos_id,
            "eos_token": eos_text,
            "bos_token": bos_text,
            "chat_template": source.map(|source| source.text),
        });
        Ok(Self {
            byte_lengths: TokenByteLengths::of(&tokenizer),
            tokenizer,
            eos_id,
            identity,
            template,
            file: tokenizer_file,
            sha256,
        })
    }

    /// The tokenizer.json this was loaded from.
    #[must_use]
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// SHA-256 of the tokenizer.json bytes, recorded in the manifest.
    #[must_use]
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Everything of the tokenizer that shapes prepared tokens, for a run's fingerprint:
    /// the SHA-256 of tokenizer.json, the EOS (token and id), the BOS token and the chat
    /// template's text.
    #[must_use]
    pub fn identity(&self) -> &Value {
        &self.identity
    }

    /// The EOS token id appended to completions.
    #[must_use]
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Vocabulary size, added tokens included.
    #[must_use]
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Whether a chat template is available for conversational rows.
    #[must_use]
    pub fn has_chat_template(&self) -> bool {
        self.template.is_ok()
    }

    /// The chat template, or, when there is none or it does not parse, an error naming the
    /// file: a conversational row cannot be rendered, and neither can the others like it.
    pub fn chat_template(&self) -> Result<&ChatTemplate> {
        self.template.as_ref().map_err(|unavailable| Error::Tokenizer {
            file: unavailable.file.clone(),
            reason: unavailable.reason.clone(),
        })
    }

    /// Encodes a prompt with the model's special tokens (a BOS, when its post-processor adds
    /// one). No offsets: nothing classifies prompt tokens.
    pub fn encode_prompt(&self, text: &str) -> std::result::Result<Encoded, String> {
        let ids = self.encode_ids(text, true)?;
        Ok(Encoded { ids, offsets: Vec::new() })
    }

    /// Encodes a completion without special tokens, then appends the EOS unless the text
    /// already ends with it (chat templates often close the turn with it). Byte offsets
    /// only `with_offsets`: from the byte length of each token when the tokenizer is
    /// byte-level; otherwise, or when those do not add up to the text, the tokenizer
    /// tracks them, at some cost (see `byte_spans`).
    pub fn encode_completion(
        &self,
        text: &str,
        with_offsets: bool,
    ) -> std::result::Result<Encoded, String> {
        let mut encoded = if with_offsets {
            self.encode_with_offsets(text)?
        } else {
            Encoded { ids: self.encode_ids(text, false)?, offsets: Vec::new() }
        };
        if encoded.ids.last() != Some(&self.eos_id) {
            encoded.ids.push(self.eos_id);
            if with_offsets {
                encoded.offsets.push((text.len(), text.len()));
            }
        }
        Ok(encoded)
    }

    /// Token ids only: `encode_fast` tracks no offsets.
    fn encode_ids(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> std::result::Result<Vec<u32>, String> {
        let encoding =
            catch_panic("tokenizer", || self.tokenizer.encode_fast(text, add_special_tokens))?
                .map_err(|error| error.to_string())?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes without special tokens, with the byte span of each token.
    fn encode_with_offsets(&self, text: &str) -> std::result::Result<Encoded, String> {
        if let Some(byte_lengths) = &self.byte_lengths {
            let ids = self.encode_ids(text, false)?;
            if let Some(offsets) = byte_lengths.spans(&ids, text.len()) {
                return Ok(Encoded { ids, offsets });
            }
        }
        self.encode_tracking_offsets(text)
    }

    /// Encodes without special tokens, the tokenizer tracking the offsets.
    fn encode_tracking_offsets(&self, text: &str) -> std::result::Result<Encoded, String> {
        let encoding = catch_panic("tokenizer", || self.tokenizer.encode(text, false))?
            .map_err(|error| error.to_string())?;
        Ok(Encoded { ids: encoding.get_ids().to_vec(), offsets: encoding.get_offsets().to_vec() })
    }
}

impl ChatTemplate {
    /// Renders the prompt messages, ready for the assistant's turn.
    pub fn render_prompt(&self, prompt: &[Message]) -> std::result::Result<String, String> {
        self.render(prompt, true)
    }

    /// Renders the completion messages as the text the template appends after the prompt:
    /// `render(prompt + completion)` minus `render(prompt, add_generation_prompt)`.
    pub fn render_completion(
        &self,
        prompt: &[Message],
        completion: &[Message],
    ) -> std::result::Result<String, String> {
        let prefix = self.render(prompt, true)?;
        let conversation: Vec<Message> = prompt.iter().chain(completion).cloned().collect();
        let full = self.render(&conversation, false)?;
        full.strip_prefix(&prefix).map(str::to_owned).ok_or_else(|| {
            "the chat template does not render the prompt as a prefix of the conversation"
                .to_owned()
        })
    }

    /// Compiles a template as transformers renders it, or says why it does not parse.
    fn parse(source: &str, bos_token: &str, eos_token: &str) -> std::result::Result<Self, String> {
        let mut environment = Environment::new();
        // As transformers renders chat templates: a newline after a block tag and the
        // indentation before one are not output.
        let syntax = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build();
        environment.set_syntax(syntax.map_err(|error| format!("chat template syntax: {error}"))?);
        minijinja_contrib::add_to_environment(&mut environment);
        environment
            .set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        environment.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
            },
        );
        environment.add_template_owned("chat", source.to_owned()).map_err(|error| {
            format!("the chat template, needed for conversational rows, does not parse: {error}")
        })?;
        Ok(Self { environment, bos_token: bos_token.to_owned(), eos_token: eos_token.to_owned() })
    }

    fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> std::result::Result<String, String> {
        let template = self.environment.get_template("chat").map_err(|error| error.to_string())?;
        catch_panic("chat template", || {
            template.render(context! {
                messages => minijinja::Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
        })?
        .map_err(|error| format!("chat template failed: {error}"))
    }
}

fn read_config(file: &Path) -> Result<Value> {
    let text = fs::read_to_string(file).map_err(|error| tokenizer_error(file, &error))?;
    serde_json::from_str(&text).map_err(|error| tokenizer_error(file, &error))
}

/// The chat template next to tokenizer.json, where transformers looks for it:
/// `chat_template.jinja` (which recent transformers saves), else `tokenizer_config.json`'s
/// `chat_template`, else `chat_template.json`'s (a processor's).
fn find_template(directory: &Path, config: Option<&Value>) -> Result<Option<TemplateSource>> {
    let jinja = directory.join("chat_template.jinja");
    if jinja.is_file() {
        let text = fs::read_to_string(&jinja).map_err(|error| tokenizer_error(&jinja, &error))?;
        return Ok(Some(TemplateSource { file: jinja, text }));
    }
    if let Some(text) = config.and_then(template_source) {
        return Ok(Some(TemplateSource { file: directory.join("tokenizer_config.json"), text }));
    }
    let processor = directory.join("chat_template.json");
    if processor.is_file() {
        let text = template_source(&read_config(&processor)?);
        return Ok(text.map(|text| TemplateSource { file: processor, text }));
    }
    Ok(None)
}

/// The default chat template: a string, or the one named "default" in a list of named ones.
fn template_source(config: &Value) -> Option<String> {
    match config.get("chat_template")? {
        Value::String(source) => Some(source.clone()),
        Value::Array(named) => named
            .iter()
            .find(|entry| entry.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|entry| entry.get("template")?.as_str().map(str::to_owned)),
        _ => None,
    }
}

/// A special token of `tokenizer_config.json`: a string or `{"content": ...}`.
fn special_token(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(token) => Some(token.clone()),
        Value::Object(token) => token.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

fn tokenizer_error(file: &Path, error: &dyn std::fmt::Display) -> Error {
    Error::Tokenizer { file: file.to_owned(), reason: error.to_string() }
}
