//! Tests of rendering, truncation and the reasons rows are set aside.

use serde_json::json;

use super::*;
use crate::tokenize::tests_template::{config, model_dir};

/// The tokenizer of [`model_dir`] with a ChatML-like template.
fn chat_tokenizer() -> PairTokenizer {
    let template = "{% for m in messages %}<|im_start|> {{ m.role }} {{ m.content }} \
                    <|im_end|> {% endfor %}";
    let dir = model_dir(&[("tokenizer_config.json", &config(&json!({"chat_template": template})))]);
    PairTokenizer::load(dir.path(), None).unwrap()
}

fn turns(messages: &[(&str, &str)]) -> Turns {
    Turns::Messages(
        messages
            .iter()
            .map(|(role, content)| Message { role: (*role).into(), content: (*content).into() })
            .collect(),
    )
}

fn raw(prompt: Option<Turns>, chosen: Turns, rejected: Turns) -> RawPair {
    RawPair {
        source: RowSource { file: 0, row: 7 },
        id: None,
        prompt,
        chosen,
        rejected,
        score_chosen: None,
        score_rejected: None,
    }
}

fn text(prompt: &str, chosen: &str, rejected: &str) -> RawPair {
    let text = |text: &str| Turns::Text(text.into());
    raw(Some(text(prompt)), text(chosen), text(rejected))
}

/// `(field, reason)` of a row that `render` sets aside.
fn render_quarantine(pair: &RawPair, tokenizer: &PairTokenizer) -> (String, String) {
    let record = render(pair, tokenizer).unwrap().unwrap_err();
    (record.field.unwrap(), record.reason)
}

/// `(field, reason)` of a text row that `prepare` sets aside under `limit`.
fn prepare_quarantine(pair: &RawPair, limit: Option<LengthLimit>) -> (String, String) {
    let tokenizer = chat_tokenizer();
    let context = PrepareContext {
        tokenizer: &tokenizer,
        prompts: &PromptCache::new(),
        limit,
        diff: DiffOptions::default(),
        value_keys: &[],
    };
    let rendered = render(pair, &tokenizer).unwrap().unwrap();
    let record = prepare(pair, &rendered, &context, &mut DiffScratch::default()).unwrap_err();
    (record.field.unwrap(), record.reason)
}

#[test]
fn conversations_without_a_chat_template_stop_the_run() {
    let dir = model_dir(&[("tokenizer_config.json", &config(&json!({})))]);
    let tokenizer = PairTokenizer::load(dir.path(), None).unwrap();
    assert!(render(&text("p", "a", "b"), &tokenizer).unwrap().is_ok());
    let conversation = raw(None, turns(&[("assistant", "a")]), turns(&[("assistant", "b")]));
    let error = render(&conversation, &tokenizer).unwrap_err().to_string();
    assert!(error.contains("conversational rows need a chat template"), "{error}");
    assert!(error.starts_with(&dir.path().display().to_string()), "{error}");
}

#[test]
fn message_roles_are_checked_and_named() {
    let tokenizer = chat_tokenizer();
    let user = ("user", "a");
    let bogus_prompt = raw(
        Some(turns(&[user, ("bogus", "b")])),
        turns(&[("assistant", "x")]),
        turns(&[("assistant", "y")]),
    );
    assert_eq!(
        render_quarantine(&bogus_prompt, &tokenizer),
        (
            "prompt".into(),
            "unknown message role: prompt message 1 has role 'bogus' \
             (expected system, user, assistant or tool)"
                .into()
        )
    );
    let user_completion =
        raw(Some(turns(&[user])), turns(&[("assistant", "x")]), turns(&[("user", "y")]));
    assert_eq!(
        render_quarantine(&user_completion, &tokenizer),
        (
            "rejected".into(),
            "completion message not from the assistant: rejected message 0 has role 'user' \
             (a completion holds assistant messages only)"
                .into()
        )
    );
    // Without a prompt column, indices count in the column: the prompt is the shared start.
    let shared_prompt =
        raw(None, turns(&[user, ("assistant", "x")]), turns(&[user, ("bogus", "y")]));
    let (field, reason) = render_quarantine(&shared_prompt, &tokenizer);
    assert_eq!(field, "rejected");
    assert!(reason.contains("rejected message 1 has role 'bogus'"), "{reason}");
    let in_shared_prompt = raw(
        None,
        turns(&[("bogus", "a"), ("assistant", "x")]),
        turns(&[("bogus", "a"), ("assistant", "y")]),
    );
    let (field, reason) = render_quarantine(&in_shared_prompt, &tokenizer);
    assert_eq!(field, "chosen");
    assert!(reason.starts_with("unknown message role: chosen message 0"), "{reason}");
    let fine = raw(
        Some(turns(&[("system", "s"), user, ("assistant", "b"), ("tool", "c"), user])),
        turns(&[("assistant", "x"), ("assistant", "a")]),
        turns(&[("assistant", "y")]),
    );
    assert!(render(&fine, &tokenizer).unwrap().is_ok());
}

/// The tokenizer of [`model_dir`], its tokenizer.json set to truncate to 3 tokens.
fn tokenizer_saved_with_truncation() -> PairTokenizer {
    let dir = model_dir(&[("tokenizer_config.json", &config(&json!({})))]);
    let file = dir.path().join("tokenizer.json");
    let mut saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    saved["truncation"] =
        json!({"direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0});
    saved["padding"] = json!({"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "a"});
    std::fs::write(&file, saved.to_string()).unwrap();
    PairTokenizer::load(dir.path(), None).unwrap()
}

#[test]
fn truncation_and_padding_saved_in_tokenizer_json_cut_and_pad_nothing() {
    let prep_config = crate::pipeline::PrepConfig::default();
    let prepare = |tokenizer: &PairTokenizer| {
        let rows = vec![Ok(text("a b c a b", "a b c a b c", "b"))];
        let outcomes =
            crate::pipeline::prepare_rows(rows, tokenizer, &mut PromptCache::new(), &prep_config)
                .unwrap();
        let pair = outcomes.into_iter().next().unwrap().unwrap();
        (pair.prompt_ids, pair.chosen.ids, pair.rejected.ids)
    };
    let plain = model_dir(&[("tokenizer_config.json", &config(&json!({})))]);
    let expected = prepare(&PairTokenizer::load(plain.path(), None).unwrap());
    assert!(expected.0.len() > 3 && expected.1.len() > 3, "{expected:?}");
    assert_eq!(prepare(&tokenizer_saved_with_truncation()), expected);
}

#[test]
fn pairs_identical_only_after_truncation_say_so() {
    let pair = text("a", "a b c x", "a b c y");
    let (field, reason) = prepare_quarantine(&pair, Some(limit(4, 1, false)));
    assert_eq!(field, "rejected");
    assert_eq!(
        reason,
        "chosen and rejected are identical after truncation to max_len: they differ only \
         past the 3 completion tokens that fit in max_len 4"
    );
    let (_, reason) = prepare_quarantine(&text("a", "b c", "b  c"), Some(limit(4, 1, false)));
    assert_eq!(reason, "chosen and rejected are identical after tokenization");
}

#[test]
fn over_length_pairs_name_the_longer_completion() {
    let pair = text("a", "b", "a b c x y");
    let (field, reason) = prepare_quarantine(&pair, Some(limit(4, 1, true)));
    assert_eq!(field, "rejected");
    assert_eq!(reason, "over length: 1 prompt + 6 rejected tokens > max_len 4");
}

#[test]
fn score_margins_beyond_f32_are_quarantined() {
    let pair =
        RawPair { score_chosen: Some(1e300), score_rejected: Some(-1e300), ..text("a", "b", "c") };
    let (field, reason) = prepare_quarantine(&pair, None);
    assert_eq!(field, "score_chosen");
    assert!(reason.starts_with("score margin out of range: "), "{reason}");
}

fn encoded(n: usize) -> Encoded {
    Encoded { ids: (0..n as u32).collect(), offsets: (0..n).map(|i| (i, i + 1)).collect() }
}

fn limit(max_len: usize, max_prompt_len: usize, drop_over_length: bool) -> LengthLimit {
    LengthLimit { max_len, max_prompt_len, drop_over_length }
}

#[test]
fn pairs_within_the_limit_are_untouched() {
    let (mut prompt, mut chosen, mut rejected) = ((0..4).collect(), encoded(6), encoded(5));
    assert_eq!(fit(&mut prompt, &mut chosen, &mut rejected, limit(10, 5, false)), Ok(0));
    assert_eq!((prompt.len(), chosen.ids.len(), rejected.ids.len()), (4, 6, 5));
}

#[test]
fn the_prompt_keeps_its_end_and_completions_their_start() {
    let (mut prompt, mut chosen, mut rejected) =
        ((0..10).collect::<Vec<u32>>(), encoded(12), encoded(3));
    let bits = fit(&mut prompt, &mut chosen, &mut rejected, limit(16, 6, false));
    assert_eq!(bits, Ok(truncated::PROMPT | truncated::CHOSEN));
    assert_eq!(prompt, (4..10).collect::<Vec<u32>>());
    assert_eq!(chosen.ids, (0..10).collect::<Vec<u32>>());
    assert_eq!(chosen.offsets.len(), 10);
    assert_eq!(rejected.ids.len(), 3);
}

#[test]
fn a_short_completion_leaves_the_prompt_more_room() {
    let (mut prompt, mut chosen, mut rejected) =
        ((0..10).collect::<Vec<u32>>(), encoded(3), encoded(2));
    assert_eq!(
        fit(&mut prompt, &mut chosen, &mut rejected, limit(12, 4, false)),
        Ok(truncated::PROMPT)
    );
    assert_eq!(prompt, (1..10).collect::<Vec<u32>>());
}

#[test]
fn drop_over_length_names_the_field_that_is_over() {
    let (mut prompt, mut chosen, mut rejected) =
        ((0..10).collect::<Vec<u32>>(), encoded(3), encoded(2));
    let (field, reason) =
        fit(&mut prompt, &mut chosen, &mut rejected, limit(12, 4, true)).unwrap_err();
    assert_eq!(field, "chosen");
    assert_eq!(reason, "over length: 10 prompt + 3 chosen tokens > max_len 12");
    let (mut short_prompt, mut long_rejected) = (vec![0], encoded(40));
    let (field, reason) =
        fit(&mut short_prompt, &mut chosen, &mut long_rejected, limit(12, 4, true)).unwrap_err();
    assert_eq!(field, "rejected");
    assert_eq!(reason, "over length: 1 prompt + 40 rejected tokens > max_len 12");
    let mut long_prompt = (0..12).collect::<Vec<u32>>();
    let (field, reason) =
        fit(&mut long_prompt, &mut chosen, &mut rejected, limit(12, 4, true)).unwrap_err();
    assert_eq!(field, "prompt");
    assert!(reason.starts_with("prompt over length"), "{reason}");
}

#[test]
fn stable_ids_depend_on_every_text() {
    let pair = |prompt: &str, chosen: &str| RenderedPair {
        prompt: prompt.into(),
        chosen: chosen.into(),
        rejected: "r".into(),
    };
    assert_eq!(stable_id(&pair("p", "c")), stable_id(&pair("p", "c")));
    assert_ne!(stable_id(&pair("p", "c")), stable_id(&pair("pc", "")));
    assert_eq!(stable_id(&pair("p", "c")).len(), 32);
}
