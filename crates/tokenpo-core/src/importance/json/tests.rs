//! JSON token classes: hand-checked examples, a real tokenizer, and property tests against
//! `serde_json` (which texts are JSON) and a recursive printer (which byte is what).

use proptest::prelude::*;

use super::{MAX_DEPTH, classify_bytes, classify_tokens};
use crate::importance::{FIRST_KEYED_VALUE, KEY, SCAFFOLDING, TEXT, VALUE};

/// One letter per byte class: `T`ext, `S`caffolding, `K`ey, `V`alue, and `a`, `b`, ... for
/// values under the first, second, ... value key.
fn letter(class: u8) -> char {
    match class {
        TEXT => 'T',
        SCAFFOLDING => 'S',
        KEY => 'K',
        VALUE => 'V',
        keyed => char::from(b'a' + (keyed - FIRST_KEYED_VALUE)),
    }
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// The byte classes of `text` as letters, `None` when it holds no JSON.
fn byte_letters(text: &str, value_keys: &[&str]) -> Option<String> {
    classify_bytes(text, &keys(value_keys)).map(|classes| classes.into_iter().map(letter).collect())
}

/// Concatenates hand-cut tokens into a text and their byte offsets.
fn tokenize_by_hand(pieces: &[&str]) -> (String, Vec<(usize, usize)>) {
    let mut text = String::new();
    let mut offsets = Vec::with_capacity(pieces.len());
    for piece in pieces {
        offsets.push((text.len(), text.len() + piece.len()));
        text.push_str(piece);
    }
    (text, offsets)
}

fn token_letters(pieces: &[&str], value_keys: &[&str]) -> String {
    let (text, offsets) = tokenize_by_hand(pieces);
    classify_tokens(&text, &offsets, &keys(value_keys)).into_iter().map(letter).collect()
}

#[test]
fn tabpo_example_tokens() {
    // Keys sorted as the config keeps them: code → a, span → b, subcode → c.
    let value_keys = ["code", "span", "subcode"];
    let pieces = [
        "[{\"",
        "code",
        "\":",
        " \"",
        "medication",
        "\",",
        " \"",
        "sub",
        "code",
        "\":",
        " \"",
        "ref",
        "ill",
        "_request",
        "\",",
        " \"",
        "span",
        "\":",
        " \"",
        "my",
        " lis",
        "inopril",
        " ran",
        " out",
        "\"}]",
    ];
    assert_eq!(
        pieces.concat(),
        r#"[{"code": "medication", "subcode": "refill_request", "span": "my lisinopril ran out"}]"#
    );
    assert_eq!(token_letters(&pieces, &value_keys), "SKSSaSSKKSScccSSKSSbbbbbS");
}

#[test]
fn a_token_takes_its_highest_class() {
    let value_keys = ["code"];
    // `medication",` mixes value and scaffolding; ` "my` too; `code":` key and scaffolding.
    let pieces = ["{\"", "code\":", " \"", "medication\",", " \"n\": \"my", "\"}"];
    assert_eq!(token_letters(&pieces, &value_keys), "SKSaVS");
}

#[test]
fn nested_containers_take_the_innermost_key() {
    let value_keys = ["code", "span"];
    assert_eq!(
        byte_letters(r#"{"code": ["a", 1]}"#, &value_keys).as_deref(),
        Some("SSKKKKSSSSSaSSSaSS")
    );
    assert_eq!(
        byte_letters(r#"{"code":{"x":-1.5e3,"span":[true]}}"#, &value_keys).as_deref(),
        Some("SSKKKKSSSSKSSVVVVVVSSKKKKSSSbbbbSSS")
    );
    assert_eq!(
        byte_letters(r#"[{}, [], [null, false], {"span": {"code": 0}}]"#, &value_keys).as_deref(),
        Some("SSSSSSSSSSVVVVSSVVVVVSSSSSKKKKSSSSSKKKKSSSaSSS")
    );
}

#[test]
fn numbers_and_literals_are_values() {
    let text = "[0, -1, 2.5, 1e10, -0.0E-7, true, false, null]";
    let expected = "SVSSVVSSVVVSSVVVVSSVVVVVVVSSVVVVSSVVVVVSSVVVVS";
    assert_eq!(byte_letters(text, &[]).as_deref(), Some(expected));
}

#[test]
fn escapes_stay_inside_their_string() {
    let text = r#"{"k\"ey": "a\"b\\", "n": "\u00e9\t"}"#;
    let expected = "SSKKKKKSSSSVVVVVVSSSSKSSSSVVVVVVVVSS";
    assert_eq!(byte_letters(text, &[]).as_deref(), Some(expected));
    // A key matches a value key after unescaping; a surrogate pair unescapes too.
    assert_eq!(byte_letters(r#"{"co\u0064e": 1}"#, &["code"]).as_deref(), Some("SSKKKKKKKKKSSSaS"));
    assert_eq!(
        byte_letters(r#"{"\ud83d\ude00": 1}"#, &["\u{1F600}"]).as_deref(),
        Some("SSKKKKKKKKKKKKSSSaS")
    );
}

#[test]
fn multibyte_characters_keep_byte_offsets() {
    let value_keys = ["code"];
    // "ë" is 2 bytes, "😀" 4: offsets count bytes.
    let pieces = ["{\"", "code", "\":", " \"", "Zo", "ë", " 😀", "\"}"];
    assert_eq!(token_letters(&pieces, &value_keys), "SKSSaaaS");
    let (text, _) = tokenize_by_hand(&pieces);
    // Offsets inside a character or past the end are clamped, never a panic.
    let odd_offsets = [(17, 18), (17, 100), (100, 200), (5, 3), (usize::MAX, usize::MAX)];
    let classes = classify_tokens(&text, &odd_offsets, &keys(&value_keys));
    assert_eq!(
        classes,
        [FIRST_KEYED_VALUE, FIRST_KEYED_VALUE, SCAFFOLDING, SCAFFOLDING, SCAFFOLDING]
    );
}

#[test]
fn empty_span_tokens_are_scaffolding_in_json_and_text_otherwise() {
    let json = r#"{"a": 1}"#;
    let eos = [(0, 0), (json.len(), json.len())];
    assert_eq!(classify_tokens(json, &eos, &[]), [SCAFFOLDING, SCAFFOLDING]);
    let prose = "no JSON here";
    let eos = [(0, 2), (prose.len(), prose.len())];
    assert_eq!(classify_tokens(prose, &eos, &[]), [TEXT, TEXT]);
}

#[test]
fn text_around_json_is_text() {
    let value_keys = ["code"];
    assert_eq!(
        byte_letters("{\"code\": \"x\"}<|im_end|>\n", &value_keys).as_deref(),
        Some("SSKKKKSSSSaSSTTTTTTTTTTT")
    );
    // Whitespace next to the JSON is layout; a preamble's `[1]` loses to the larger answer.
    assert_eq!(
        byte_letters("See [1].\n{\"code\": \"x\"}\n", &value_keys).as_deref(),
        Some("TTTTTTTTSSSKKKKSSSSaSSS")
    );
    // The first of two equal candidates wins.
    assert_eq!(byte_letters("[1] [2]", &[]).as_deref(), Some("SVSSTTT"));
    // A whole-text scalar is JSON; one followed by text is not.
    assert_eq!(byte_letters(" 42\n", &[]).as_deref(), Some("SVVS"));
    assert_eq!(byte_letters("42 apples", &[]), None);
}

#[test]
fn invalid_json_and_plain_text_are_all_text() {
    for text in [
        "",
        "  \n",
        "The patient needs a refill.",
        r#"{"a": }"#,
        r#"{"a" 1}"#,
        r#"{"a": 1,}"#,
        "[1,]",
        "[01]",
        "[1.]",
        "[.5]",
        "[1e]",
        "[-]",
        "[tru]",
        "{'a': 1}",
        r#"["abc"#,
        "[\"a\nb\"]",
        r#"["\x"]"#,
        r#"["\u12G4"]"#,
        "[[[[",
    ] {
        assert_eq!(classify_bytes(text, &[]), None, "{text:?}");
        let offsets = [(0, text.len()), (text.len(), text.len())];
        assert_eq!(classify_tokens(text, &offsets, &[]), [TEXT, TEXT], "{text:?}");
    }
}

#[test]
fn nesting_is_bounded() {
    let deepest = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    let classes = classify_bytes(&deepest, &[]).expect("MAX_DEPTH levels parse");
    assert!(classes.iter().all(|&class| class == SCAFFOLDING));
    // One level deeper fails as a whole; the search then finds the value one byte in.
    let too_deep = format!("[{deepest}]");
    let classes = classify_bytes(&too_deep, &[]).expect("the inner value parses");
    assert_eq!((classes[0], classes[1], classes[too_deep.len() - 1]), (TEXT, SCAFFOLDING, TEXT));
}

#[test]
fn pathological_text_stays_fast() {
    // Every `[` starts a scan to the end of the text: the search budget keeps this linear.
    let unterminated = "[1,".repeat(50_000);
    assert_eq!(classify_bytes(&unterminated, &[]), None);
    let open = "[".repeat(200_000);
    assert_eq!(classify_bytes(&open, &[]), None);
}

/// A real byte-level BPE, trained here on a few JSON strings, with a chat end marker as a
/// special token: the offsets of `Tokenizer::encode` are byte offsets.
#[test]
fn classes_from_a_real_tokenizer() {
    use tokenizers::models::TrainerWrapper;
    use tokenizers::models::bpe::{BPE, BpeTrainer};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, Tokenizer};

    let corpus = [
        r#"[{"code": "medication", "subcode": "refill_request", "span": "my lisinopril ran out"}]"#,
        r#"[{"code": "symptom", "subcode": "pain", "span": "my knee hurts"}]"#,
        r#"[{"code": "médication", "subcode": "renouvellement", "span": "plus de lisinopril"}]"#,
    ];
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer = TrainerWrapper::from(
        BpeTrainer::builder()
            .vocab_size(300)
            .min_frequency(1)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    tokenizer.train(&mut trainer, corpus.iter()).expect("training a tiny BPE");
    tokenizer.add_special_tokens(&[AddedToken::from("<|im_end|>", true)]);

    // The third completion, as a chat template renders it: JSON, then the end marker.
    let json = corpus[2];
    let text = format!("{json}<|im_end|>\n");
    let encoding = tokenizer.encode(text.as_str(), false).expect("encoding");
    let offsets = encoding.get_offsets();
    assert!(json.chars().count() < json.len(), "the text must hold multi-byte characters");
    let json_end = offsets.iter().map(|&(_, end)| end).filter(|&end| end <= json.len()).max();
    assert_eq!(json_end, Some(json.len()), "offsets must count bytes, not characters");
    for &(start, end) in offsets {
        assert!(text.get(start..end).is_some(), "({start}, {end}) is not a byte range of the text");
    }

    let value_keys = keys(&["code", "span", "subcode"]);
    let classes = classify_tokens(&text, offsets, &value_keys);
    // The expected class of each token, from where each part of the text lies.
    let (code, span, subcode) = (FIRST_KEYED_VALUE, FIRST_KEYED_VALUE + 1, FIRST_KEYED_VALUE + 2);
    let regions = [
        ("médication", code),
        ("renouvellement", subcode),
        ("plus de lisinopril", span),
        ("\"code\"", KEY),
        ("\"subcode\"", KEY),
        ("\"span\"", KEY),
        ("<|im_end|>\n", TEXT),
    ];
    for (((&(start, end), &class), &id), token) in
        offsets.iter().zip(&classes).zip(encoding.get_ids()).zip(encoding.get_tokens())
    {
        let overlapping = |needle: &str| {
            let at = text.find(needle).expect("the region is in the text");
            start < at + needle.len() && at < end
        };
        let expected = regions
            .iter()
            .filter(|(needle, _)| overlapping(needle))
            .map(|&(_, class)| class)
            .max_by_key(|&class| match class {
                TEXT => 1,
                other => other,
            })
            .unwrap_or(SCAFFOLDING);
        // Quotes around keys are scaffolding: a token of only `"` and punctuation is too.
        let expected = if expected == KEY && !text[start..end].chars().any(char::is_alphabetic) {
            SCAFFOLDING
        } else {
            expected
        };
        assert_eq!(class, expected, "token {id} {token:?} at ({start}, {end})");
    }
    assert!(classes.contains(&code) && classes.contains(&span) && classes.contains(&subcode));
    assert_eq!(classes.last(), Some(&TEXT), "the end marker and newline are text");
}

/// A JSON value for the printer oracle.
#[derive(Debug, Clone)]
enum Json {
    Literal(&'static str),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

const ORACLE_KEYS: [&str; 3] = ["code", "span", "subcode"];

fn json_value() -> impl Strategy<Value = Json> {
    let key = prop_oneof![
        prop::sample::select(ORACLE_KEYS.as_slice()).prop_map(str::to_owned),
        "[a-z\"\\\\é😀 ]{0,6}",
    ];
    let leaf = prop_oneof![
        prop::sample::select(["true", "false", "null"].as_slice()).prop_map(Json::Literal),
        "-?(0|[1-9][0-9]{0,5})(\\.[0-9]{1,3})?([eE][+-]?[0-2])?".prop_map(Json::Number),
        "[a-z\"\\\\/\n\t\u{1}é😀 \\[\\]{},:]{0,8}".prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 40, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            prop::collection::vec((key.clone(), inner), 0..5).prop_map(Json::Object),
        ]
    })
}

/// Prints `json` with the whitespace drawn from `layout`, and the class of every byte:
/// an oracle written independently of the iterative scanner.
struct Printer<'a> {
    text: String,
    classes: Vec<u8>,
    layout: &'a [u8],
    next_layout: usize,
}

impl Printer<'_> {
    fn push(&mut self, piece: &str, class: u8) {
        self.text.push_str(piece);
        self.classes.extend(std::iter::repeat_n(class, piece.len()));
    }

    fn whitespace(&mut self) {
        let choice = self.layout.get(self.next_layout).copied().unwrap_or(0);
        self.next_layout += 1;
        self.push(["", "", " ", "\n  ", "\t", "\r\n"][usize::from(choice) % 6], SCAFFOLDING);
    }

    fn string(&mut self, contents: &str, class: u8) {
        let quoted = serde_json::to_string(contents).expect("strings serialize");
        self.push("\"", SCAFFOLDING);
        self.push(&quoted[1..quoted.len() - 1], class);
        self.push("\"", SCAFFOLDING);
    }

    fn value(&mut self, json: &Json, class: u8) {
        self.whitespace();
        match json {
            Json::Literal(literal) => self.push(literal, class),
            Json::Number(number) => self.push(number, class),
            Json::String(contents) => self.string(contents, class),
            Json::Array(items) => {
                self.push("[", SCAFFOLDING);
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        self.push(",", SCAFFOLDING);
                    }
                    self.value(item, class);
                }
                self.whitespace();
                self.push("]", SCAFFOLDING);
            }
            Json::Object(members) => {
                self.push("{", SCAFFOLDING);
                for (index, (key, item)) in members.iter().enumerate() {
                    if index > 0 {
                        self.push(",", SCAFFOLDING);
                    }
                    self.whitespace();
                    self.string(key, KEY);
                    self.whitespace();
                    self.push(":", SCAFFOLDING);
                    let item_class = ORACLE_KEYS
                        .iter()
                        .position(|name| name == key)
                        .map_or(VALUE, |index| FIRST_KEYED_VALUE + index as u8);
                    self.value(item, item_class);
                }
                self.whitespace();
                self.push("}", SCAFFOLDING);
            }
        }
        self.whitespace();
    }
}

fn print(json: &Json, layout: &[u8]) -> (String, Vec<u8>) {
    let mut printer = Printer { text: String::new(), classes: Vec::new(), layout, next_layout: 0 };
    printer.value(json, VALUE);
    (printer.text, printer.classes)
}

fn is_container(json: &Json) -> bool {
    matches!(json, Json::Array(_) | Json::Object(_))
}

proptest! {
    #[test]
    fn printed_json_gets_the_printers_classes(
        json in json_value(),
        layout in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let (text, expected) = print(&json, &layout);
        prop_assert_eq!(classify_bytes(&text, &keys(&ORACLE_KEYS)), Some(expected));
    }

    #[test]
    fn json_inside_text_keeps_its_classes(
        json in json_value().prop_filter("an object or array", is_container),
        layout in prop::collection::vec(any::<u8>(), 0..200),
        before in "[a-zA-Z<|>:. \n]{0,12}[a-zA-Z<|>:.]",
        after in "[a-zA-Z<|>:. \n]{0,12}",
    ) {
        let (json_text, json_classes) = print(&json, &layout);
        let text = format!("{before}{json_text}{after}");
        let mut expected = vec![TEXT; before.len()];
        expected.extend(json_classes);
        let trailing_whitespace = after.bytes().take_while(u8::is_ascii_whitespace).count();
        expected.extend(std::iter::repeat_n(SCAFFOLDING, trailing_whitespace));
        expected.resize(text.len(), TEXT);
        // Whitespace at the end of `before` is next to the JSON: scaffolding.
        let leading_whitespace = before.bytes().rev().take_while(u8::is_ascii_whitespace).count();
        expected[before.len() - leading_whitespace..before.len()].fill(SCAFFOLDING);
        prop_assert_eq!(classify_bytes(&text, &keys(&ORACLE_KEYS)), Some(expected));
    }

    /// The scanner accepts exactly what serde_json accepts, on printed JSON with a few
    /// random edits. Exponents stay small (serde_json rejects overflowing numbers) and
    /// `\u` escapes are never lone surrogates (serde_json rejects those, we accept them).
    #[test]
    fn accepts_what_serde_json_accepts(
        json in json_value(),
        layout in prop::collection::vec(any::<u8>(), 0..200),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<bool>(), prop::sample::select(
                b"{}[],:\" \\-.0atu".as_slice())),
            0..3,
        ),
    ) {
        let (text, _) = print(&json, &layout);
        let mut bytes = text.into_bytes();
        for (index, insert, byte) in edits {
            let at = index.index(bytes.len() + 1);
            if insert || at == bytes.len() {
                bytes.insert(at, byte);
            } else {
                bytes.remove(at);
            }
        }
        let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
        let serde_accepts = serde_json::from_str::<serde_json::Value>(&text).is_ok();
        let classes = classify_bytes(&text, &[]);
        let scanner_accepts = classes.is_some_and(|classes| !classes.contains(&TEXT));
        prop_assert_eq!(scanner_accepts, serde_accepts, "{:?}", text);
    }

    #[test]
    fn never_panics_on_any_text_or_offsets(
        text in any::<String>(),
        offsets in prop::collection::vec((0usize..80, 0usize..80), 0..20),
        wild_offsets in prop::collection::vec((any::<usize>(), any::<usize>()), 0..4),
    ) {
        let value_keys = keys(&ORACLE_KEYS);
        let all_offsets: Vec<_> = offsets.into_iter().chain(wild_offsets).collect();
        let classes = classify_tokens(&text, &all_offsets, &value_keys);
        prop_assert_eq!(classes.len(), all_offsets.len());
        prop_assert!(classes.iter().all(|&class| usize::from(class) < 4 + ORACLE_KEYS.len()));
    }

    #[test]
    fn never_panics_on_json_like_text(
        text in "[{}\\[\\]\",:0-9a-z\\\\ \n-]{0,60}",
        offsets in prop::collection::vec((0usize..70, 0usize..70), 0..20),
    ) {
        let classes = classify_tokens(&text, &offsets, &keys(&ORACLE_KEYS));
        prop_assert_eq!(classes.len(), offsets.len());
    }
}
