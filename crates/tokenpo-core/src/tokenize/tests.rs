//! Byte spans without offset tracking: the oracle is `Tokenizer::encode`'s own offsets.

use std::sync::LazyLock;

use proptest::prelude::*;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::unicode::NFKC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::PairTokenizer;
use super::byte_spans::TokenByteLengths;
use crate::importance::{FIRST_KEYED_VALUE, SCAFFOLDING, classify_bytes, token_classes};

const VALUE_KEYS: [&str; 3] = ["code", "span", "subcode"];

/// Texts with JSON, accents, CJK and emoji, so that merges join multi-byte chars and
/// cut through them.
const CORPUS: [&str; 6] = [
    r#"[{"code": "medication", "subcode": "refill_request", "span": "my lisinopril ran out"}]"#,
    r#"[{"code": "symptom", "subcode": "pain", "span": "my knee hurts"}]"#,
    r#"[{"code": "médication", "subcode": "renouvellement", "span": "plus de lisinopril"}]"#,
    r#"{"span": "頭痛がします", "code": "症状", "note": "😀😀 🇫🇷 👩‍⚕️"}"#,
    "Here is the answer:\n\n```json\n[1, 2.5, -3e2, true, null]\n```\n",
    "    indented\tand\ttabbed  text, with  double  spaces  ",
];

/// The special tokens every test tokenizer has; `<|im_end|>` is the EOS.
const SPECIAL: [&str; 2] = ["<|im_end|>", "<|endoftext|>"];

/// A byte-level BPE trained on [`CORPUS`] with `pre_tokenizer` and [`SPECIAL`].
fn byte_level_bpe(pre_tokenizer: PreTokenizerWrapper) -> Tokenizer {
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer = TrainerWrapper::from(
        BpeTrainer::builder()
            .vocab_size(600)
            .min_frequency(1)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    tokenizer.train(&mut trainer, CORPUS.iter()).expect("training a tiny BPE");
    let special: Vec<AddedToken> =
        SPECIAL.iter().map(|&token| AddedToken::from(token, true)).collect();
    tokenizer.add_special_tokens(&special);
    // A non-special added token with multi-byte content.
    tokenizer.add_tokens(&[AddedToken::from("→✓", false)]);
    tokenizer
}

/// The pre-tokenizer of the project's test tokenizers (`train_bpe_tokenizer` in Python).
fn gpt2_pre_tokenizer() -> PreTokenizerWrapper {
    ByteLevel::new(false, true, true).into()
}

/// A Llama-3-like pre-tokenizer: a `Split` on a pattern, then `ByteLevel` without regex.
fn split_then_byte_level() -> PreTokenizerWrapper {
    let pattern = SplitPattern::Regex(r"\s+|\p{L}+|\p{N}{1,3}|[^\s\p{L}\p{N}]+".to_owned());
    let split =
        Split::new(pattern, SplitDelimiterBehavior::Isolated, false).expect("a valid pattern");
    Sequence::new(vec![split.into(), ByteLevel::new(false, false, false).into()]).into()
}

/// `tokenizer` as `prep` loads it: saved as tokenizer.json, with `<|im_end|>` as the EOS.
fn load(tokenizer: &Tokenizer) -> PairTokenizer {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let file = directory.path().join("tokenizer.json");
    tokenizer.save(&file, false).expect("saving tokenizer.json");
    PairTokenizer::load(&file, Some("<|im_end|>")).expect("loading tokenizer.json")
}

static GPT2_STYLE: LazyLock<PairTokenizer> =
    LazyLock::new(|| load(&byte_level_bpe(gpt2_pre_tokenizer())));
static LLAMA3_STYLE: LazyLock<PairTokenizer> =
    LazyLock::new(|| load(&byte_level_bpe(split_then_byte_level())));

/// The span the tokenizer reports for a token spanning `start..end`: widened to the
/// chars it touches, as the byte-level pre-tokenizer aligns each byte to its whole char.
fn widened(text: &str, (mut start, mut end): (usize, usize)) -> (usize, usize) {
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    (start, end)
}

/// Checks, for one text, that the spans from byte lengths exist, cover the text in order,
/// and agree with the tokenizer's offsets once widened to chars; returns both encodings.
fn check_spans(tokenizer: &PairTokenizer, text: &str) -> (super::Encoded, super::Encoded) {
    let tracked = tokenizer.encode_tracking_offsets(text).expect("encoding");
    let fast = tokenizer.encode_with_offsets(text).expect("encoding");
    assert_eq!(fast.ids, tracked.ids, "{text:?}");
    let byte_lengths = tokenizer.byte_lengths.as_ref().expect("a byte-level tokenizer");
    assert_eq!(
        byte_lengths.spans(&fast.ids, text.len()).as_ref(),
        Some(&fast.offsets),
        "the lengths must add up to the text: {text:?}"
    );
    let mut end = 0;
    for (&span, &offset) in fast.offsets.iter().zip(&tracked.offsets) {
        assert_eq!(span.0, end, "spans are contiguous: {text:?}");
        end = span.1;
        assert_eq!(widened(text, span), offset, "{text:?} {:?}", fast.offsets);
    }
    assert_eq!(end, text.len());
    (fast, tracked)
}

/// Text pieces: ASCII JSON-ish, any Unicode, emoji sequences, whitespace runs, special
/// tokens whole and in parts, the added token.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[\\[\\]{}\":,. a-z0-9_\\\\-]{1,20}",
        "\\PC{1,12}",
        "[😀-🙏🇦-🇿\u{200d}\u{fe0f}👩⚕ ]{1,8}",
        "[ \t\n\r]{1,8}",
        prop::sample::select(
            ["<|im_end|>", "<|endoftext|>", "<|im_", "end|>", "→✓", "→", "\u{a0}", "é"].as_slice()
        )
        .prop_map(str::to_owned),
        prop::sample::select(CORPUS.as_slice()).prop_map(str::to_owned),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..8).prop_map(|pieces| pieces.concat())
}

/// A JSON completion as prep sees it: an array of annotations, compact or pretty, maybe
/// after a preamble and before the chat end marker.
fn json_completion() -> impl Strategy<Value = String> {
    let value = prop_oneof!["[a-z ]{0,12}", "\\PC{0,8}", "[é😀頭 ]{0,6}", "[ ]{1,4}"];
    let key = prop_oneof![
        prop::sample::select(VALUE_KEYS.as_slice()).prop_map(str::to_owned),
        "[a-z]{1,6}"
    ];
    let item = prop::collection::vec((key, value), 0..4);
    (
        prop::collection::vec(item, 0..4),
        any::<bool>(),
        prop::sample::select(["", "Here you go: ", "Answer:\n\n"].as_slice()),
        prop::sample::select(["", "<|im_end|>\n", "\n"].as_slice()),
    )
        .prop_map(|(items, pretty, preamble, end)| {
            let items: Vec<serde_json::Map<String, serde_json::Value>> = items
                .into_iter()
                .map(|fields| fields.into_iter().map(|(k, v)| (k, v.into())).collect())
                .collect();
            let json = if pretty {
                serde_json::to_string_pretty(&items)
            } else {
                serde_json::to_string(&items)
            }
            .expect("JSON serializes");
            format!("{preamble}{json}{end}")
        })
}

fn value_keys() -> Vec<String> {
    VALUE_KEYS.iter().map(|&key| key.to_owned()).collect()
}

proptest! {
    #[test]
    fn spans_from_byte_lengths_match_the_tokenizer(text in text()) {
        check_spans(&GPT2_STYLE, &text);
        check_spans(&LLAMA3_STYLE, &text);
    }

    #[test]
    fn json_token_classes_are_unchanged(text in json_completion()) {
        let byte_classes = classify_bytes(&text, &value_keys());
        prop_assert!(byte_classes.is_some(), "the text holds JSON");
        let byte_classes = byte_classes.unwrap_or_default();
        for tokenizer in [&*GPT2_STYLE, &*LLAMA3_STYLE] {
            let (fast, tracked) = check_spans(tokenizer, &text);
            prop_assert_eq!(
                token_classes(&byte_classes, &fast.offsets),
                token_classes(&byte_classes, &tracked.offsets)
            );
        }
    }
}

#[test]
fn json_token_classes_are_unchanged_on_the_corpus() {
    for json in CORPUS {
        let text = format!("{json}<|im_end|>\n");
        let Some(byte_classes) = classify_bytes(&text, &value_keys()) else { continue };
        for tokenizer in [&*GPT2_STYLE, &*LLAMA3_STYLE] {
            let fast = tokenizer.encode_completion(&text, true).expect("encoding");
            let (_, tracked) = check_spans(tokenizer, &text);
            let mut tracked_offsets = tracked.offsets.clone();
            tracked_offsets.push((text.len(), text.len()));
            assert_eq!(
                token_classes(&byte_classes, &fast.offsets),
                token_classes(&byte_classes, &tracked_offsets),
                "{text:?}"
            );
        }
    }
}

#[test]
fn completions_end_with_one_eos_with_an_empty_span() {
    let tokenizer = &*GPT2_STYLE;
    let eos = tokenizer.eos_id();
    for text in [r#"{"code": "pain"}"#, r#"{"code": "pain"}<|im_end|>"#] {
        let encoded = tokenizer.encode_completion(text, true).expect("encoding");
        assert_eq!(encoded.ids.iter().filter(|&&id| id == eos).count(), 1);
        assert_eq!(encoded.ids.len(), encoded.offsets.len());
        assert_eq!(encoded.offsets.last().map(|&(_, end)| end), Some(text.len()));
    }
}

/// Tokenizers whose tokens may not spell the text's bytes get no table: their offsets
/// come from the tokenizer.
#[test]
fn tokenizers_that_are_not_byte_level_track_offsets() {
    let mut normalized = byte_level_bpe(gpt2_pre_tokenizer());
    normalized.with_normalizer(Some(NFKC));
    let prefix_space = byte_level_bpe(ByteLevel::new(true, true, true).into());
    let mut metaspace = byte_level_bpe(gpt2_pre_tokenizer());
    metaspace.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::First, true)));
    let removing_split = byte_level_bpe(
        Sequence::new(vec![
            Split::new(" ", SplitDelimiterBehavior::Removed, false)
                .expect("a valid pattern")
                .into(),
            gpt2_pre_tokenizer(),
        ])
        .into(),
    );
    let vocab = [("[UNK]", 0), ("<|im_end|>", 1), ("code", 2), ("pain", 3), ("##s", 4)]
        .map(|(token, id)| (token.to_owned(), id));
    let mut wordpiece =
        Tokenizer::new(WordPiece::builder().vocab(vocab).build().expect("a WordPiece"));
    wordpiece.with_pre_tokenizer(Some(Whitespace {}));

    let text = "{\"code\": \"ﬁne pains\"}";
    for tokenizer in [normalized, prefix_space, metaspace, removing_split, wordpiece] {
        assert!(TokenByteLengths::of(&tokenizer).is_none());
        let pair_tokenizer = load(&tokenizer);
        assert!(pair_tokenizer.byte_lengths.is_none());
        let encoding = tokenizer.encode(text, false).expect("encoding");
        let encoded = pair_tokenizer.encode_completion(text, true).expect("encoding");
        assert_eq!(encoded.ids, [encoding.get_ids(), &[pair_tokenizer.eos_id()]].concat());
        assert_eq!(encoded.offsets, [encoding.get_offsets(), &[(text.len(), text.len())]].concat());
    }
}

/// A token that strips the spaces around it spans more than its content: a text that
/// holds it falls back to the tokenizer's offsets, one that does not keeps the fast path.
#[test]
fn lengths_that_do_not_add_up_fall_back() {
    let mut tokenizer = byte_level_bpe(gpt2_pre_tokenizer());
    tokenizer.add_special_tokens(&[AddedToken::from("<mask>", true).lstrip(true)]);
    let pair_tokenizer = load(&tokenizer);
    let byte_lengths = pair_tokenizer.byte_lengths.as_ref().expect("still byte-level");

    let text = r#"{"code": "my   <mask> hurts"}"#;
    let tracked = pair_tokenizer.encode_tracking_offsets(text).expect("encoding");
    assert_eq!(byte_lengths.spans(&tracked.ids, text.len()), None);
    let encoded = pair_tokenizer.encode_completion(text, true).expect("encoding");
    assert_eq!(encoded.ids[..tracked.ids.len()], tracked.ids);
    assert_eq!(encoded.offsets[..tracked.offsets.len()], tracked.offsets);

    check_spans(&pair_tokenizer, r#"{"code": "my knee hurts"}"#);
}

/// An added token whose id the BPE also produces, from text of another length, has no
/// length: texts holding it either way fall back.
#[test]
fn ambiguous_added_tokens_fall_back() {
    let mut tokenizer = byte_level_bpe(gpt2_pre_tokenizer());
    // `Ġ"` is what the BPE makes of ` "` (2 bytes); as added content it is 3 bytes.
    let id = tokenizer.token_to_id("Ġ\"").expect("the BPE merged a space and a quote");
    tokenizer.add_tokens(&[AddedToken::from("Ġ\"", false)]);
    assert_eq!(tokenizer.token_to_id("Ġ\""), Some(id));
    let pair_tokenizer = load(&tokenizer);
    let byte_lengths = pair_tokenizer.byte_lengths.as_ref().expect("still byte-level");
    for text in [r#"{"code": "pain"}"#, r#"{"code":Ġ"pain"}"#] {
        let tracked = pair_tokenizer.encode_tracking_offsets(text).expect("encoding");
        assert!(tracked.ids.contains(&id), "{text:?}");
        assert_eq!(byte_lengths.spans(&tracked.ids, text.len()), None);
        let encoded = pair_tokenizer.encode_completion(text, true).expect("encoding");
        assert_eq!(encoded.offsets[..tracked.offsets.len()], tracked.offsets);
    }
    check_spans(&pair_tokenizer, r#"{"code":"pain"}"#);
}

/// With `trim_offsets` in a `ByteLevel` post-processor, the tokenizer drops leading and
/// trailing spaces from a token's offsets, and a token of spaces only gets an empty span,
/// which the classes read as scaffolding. Spans from byte lengths keep the spaces: spaces
/// inside a string value are part of the value, so those tokens get the value's class.
/// Everywhere else spaces are scaffolding, the lowest class, and nothing changes.
#[test]
fn spaces_that_trim_offsets_would_drop_count_toward_the_class() {
    let mut tokenizer = byte_level_bpe(gpt2_pre_tokenizer());
    tokenizer.with_post_processor(Some(ByteLevel::new(false, true, true)));
    let pair_tokenizer = load(&tokenizer);

    let text = r#"{"span": "my knee    ", "code": "pain"}"#;
    let fast = pair_tokenizer.encode_with_offsets(text).expect("encoding");
    let tracked = pair_tokenizer.encode_tracking_offsets(text).expect("encoding");
    assert_eq!(fast.ids, tracked.ids);
    let byte_classes = classify_bytes(text, &value_keys()).expect("JSON");
    let fast_classes = token_classes(&byte_classes, &fast.offsets);
    let tracked_classes = token_classes(&byte_classes, &tracked.offsets);
    let span_class = FIRST_KEYED_VALUE + 1;
    let value_spaces = text.find("knee").expect("in the text") + "knee".len()
        ..text.find("\", ").expect("in the text");
    let mut differ = 0;
    for (index, (&(start, end), &trimmed)) in fast.offsets.iter().zip(&tracked.offsets).enumerate()
    {
        if fast_classes[index] == tracked_classes[index] {
            continue;
        }
        differ += 1;
        assert!(start < value_spaces.end && value_spaces.start < end, "token ({start}, {end})");
        assert_eq!((fast_classes[index], tracked_classes[index]), (span_class, SCAFFOLDING));
        assert!(start <= trimmed.0 && trimmed.1 <= end && trimmed.1 - trimmed.0 < end - start);
    }
    assert!(differ > 0, "the text must hold a token trimmed to scaffolding");
}
