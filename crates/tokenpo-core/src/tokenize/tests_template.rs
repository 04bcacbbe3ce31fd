//! Where the chat template comes from, when its absence or a syntax error is an error, and
//! what of it the run's fingerprint sees.

use std::fs;
use std::path::Path;

use serde_json::json;
use tokenizers::Tokenizer;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;

use super::PairTokenizer;
use crate::error::Error;
use crate::pair::Message;

/// A model directory: a word-level tokenizer.json (one id per word of `a b c x y`, the
/// EOS `<|im_end|>` and `<|im_start|>`) and the other files given as `(name, text)`.
pub(crate) fn model_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let words = ["[UNK]", "<|im_end|>", "<|im_start|>", "a", "b", "c", "x", "y"];
    let vocab = words.iter().zip(0..).map(|(word, id)| ((*word).to_owned(), id)).collect();
    let model = WordLevel::builder().vocab(vocab).unk_token("[UNK]".into()).build().unwrap();
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    let dir = tempfile::tempdir().unwrap();
    tokenizer.save(dir.path().join("tokenizer.json"), false).unwrap();
    for (name, text) in files {
        fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A `tokenizer_config.json` naming `<|im_end|>` the EOS, with `extra` keys.
pub(crate) fn config(extra: &serde_json::Value) -> String {
    let mut config = json!({"eos_token": "<|im_end|>"});
    config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    config.to_string()
}

fn rendered(dir: &Path) -> String {
    let tokenizer = PairTokenizer::load(dir, None).unwrap();
    let hi = [Message { role: "user".into(), content: "hi".into() }];
    tokenizer.chat_template().unwrap().render_prompt(&hi).unwrap()
}

fn unavailable(tokenizer: &PairTokenizer) -> (std::path::PathBuf, String) {
    match tokenizer.chat_template() {
        Err(Error::Tokenizer { file, reason }) => (file, reason),
        Err(other) => panic!("expected a tokenizer error, got {other}"),
        Ok(_) => panic!("expected no chat template"),
    }
}

#[test]
fn the_chat_template_is_found_where_transformers_saves_it() {
    let from_config = json!({"chat_template": "config {{ messages[0].content }}"});
    let jinja = ("chat_template.jinja", "jinja {{ messages[0].content }}");
    let processor =
        ("chat_template.json", r#"{"chat_template": "json {{ messages[0].content }}"}"#);
    let dir = model_dir(&[("tokenizer_config.json", &config(&from_config))]);
    assert_eq!(rendered(dir.path()), "config hi");
    // chat_template.jinja takes priority over the config's, as in transformers.
    let dir = model_dir(&[("tokenizer_config.json", &config(&from_config)), jinja]);
    assert_eq!(rendered(dir.path()), "jinja hi");
    let dir = model_dir(&[("tokenizer_config.json", &config(&json!({}))), jinja]);
    assert_eq!(rendered(dir.path()), "jinja hi");
    let dir = model_dir(&[processor]);
    assert_eq!(rendered(dir.path()), "json hi");
    // Given the tokenizer.json, the files next to it.
    let tokenizer = PairTokenizer::load(&dir.path().join("tokenizer.json"), None).unwrap();
    assert!(tokenizer.has_chat_template());
}

#[test]
fn a_template_that_does_not_parse_is_an_error_only_when_needed_naming_its_file() {
    let broken = json!({"chat_template": "{% generation %}{{ x }}{% endgeneration %}"});
    let dir = model_dir(&[("tokenizer_config.json", &config(&broken))]);
    let tokenizer = PairTokenizer::load(dir.path(), None).unwrap();
    assert!(!tokenizer.has_chat_template());
    let (file, reason) = unavailable(&tokenizer);
    assert_eq!(file, dir.path().join("tokenizer_config.json"));
    assert!(
        reason.starts_with("the chat template, needed for conversational rows, does not parse: "),
        "{reason}"
    );
    let dir = model_dir(&[("chat_template.jinja", "{% for %}")]);
    let (file, _) = unavailable(&PairTokenizer::load(dir.path(), None).unwrap());
    assert_eq!(file, dir.path().join("chat_template.jinja"));
}

#[test]
fn without_a_template_the_error_names_the_tokenizer_given() {
    let dir = model_dir(&[("tokenizer_config.json", &config(&json!({})))]);
    let (file, reason) = unavailable(&PairTokenizer::load(dir.path(), None).unwrap());
    assert_eq!(file, dir.path());
    assert!(reason.starts_with("conversational rows need a chat template"), "{reason}");
    let tokenizer_json = dir.path().join("tokenizer.json");
    let (file, _) = unavailable(&PairTokenizer::load(&tokenizer_json, None).unwrap());
    assert_eq!(file, tokenizer_json);
}

#[test]
fn the_identity_covers_the_template_eos_and_bos() {
    let identity = |files: &[(&str, &str)], eos: Option<&str>| {
        let dir = model_dir(files);
        PairTokenizer::load(dir.path(), eos).unwrap().identity().clone()
    };
    let template = |text: &str| config(&json!({"chat_template": text}));
    let base = identity(&[("tokenizer_config.json", &template("{{ bos_token }}"))], None);
    assert_eq!(base, identity(&[("tokenizer_config.json", &template("{{ bos_token }}"))], None));
    let others = [
        identity(&[("tokenizer_config.json", &template("{{ eos_token }}"))], None),
        identity(&[("tokenizer_config.json", &template("{{ bos_token }}"))], Some("<|im_start|>")),
        identity(
            &[(
                "tokenizer_config.json",
                &config(&json!({"chat_template": "{{ bos_token }}", "bos_token": "a"})),
            )],
            None,
        ),
        // A template that does not parse still counts: a run needing it must not resume.
        identity(&[("tokenizer_config.json", &template("{% for %}"))], None),
        identity(&[("tokenizer_config.json", &config(&json!({})))], None),
    ];
    for other in others {
        assert_ne!(other, base);
    }
}
