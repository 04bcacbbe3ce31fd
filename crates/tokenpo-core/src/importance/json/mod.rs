//! JSON token classes: a byte-level scanner that labels each byte of a completion as JSON
//! scaffolding, key, value or text, and the reduction of those labels to tokens.
//!
//! A hand-written scanner rather than a JSON library, because the classes need the
//! position of every byte (which quote opens a key, where a number ends) and the parse
//! must never panic, recurse or allocate per value, whatever the input.

use super::{FIRST_KEYED_VALUE, KEY, SCAFFOLDING, TEXT, VALUE};

/// Deepest nesting of objects and arrays the scanner follows; deeper input is not JSON.
pub const MAX_DEPTH: usize = 512;

/// The search for JSON inside text may scan this many bytes per byte of text, plus
/// [`SEARCH_BUDGET_FLOOR`], over all its failed attempts, so that text full of `[` stays
/// linear; past that, the largest JSON found so far is kept.
const SEARCH_BUDGET_PER_BYTE: usize = 8;
/// See [`SEARCH_BUDGET_PER_BYTE`].
const SEARCH_BUDGET_FLOOR: usize = 1 << 16;

/// The class of each token of a completion, from its text and the tokenizer's byte offsets
/// (`tokenizers::Tokenizer::encode` gives byte offsets; `encode_char_offsets` does not).
///
/// A token's class is the highest-priority class among its bytes, by the order
/// value under a named key (`FIRST_KEYED_VALUE + i`, higher i first) > [`VALUE`] > [`KEY`] >
/// [`TEXT`] > [`SCAFFOLDING`]: `medication",` is a value, `Ġ"` scaffolding, and `}\n<` text.
/// A token with an empty span (an appended EOS) is scaffolding when the completion holds
/// JSON and text otherwise. Offsets past the end of the text are clamped to it; they need
/// not lie on char boundaries. See [`classify_bytes`] for how JSON is found; when the text
/// holds none, every token is [`TEXT`].
///
/// `value_keys` names the keys whose values get their own class: a value whose innermost
/// enclosing object key is `value_keys[i]` has class `FIRST_KEYED_VALUE + i` (keys past
/// the 252nd give [`VALUE`]).
#[must_use]
pub fn classify_tokens(text: &str, offsets: &[(usize, usize)], value_keys: &[String]) -> Vec<u8> {
    let Some(byte_classes) = classify_bytes(text, value_keys) else {
        return vec![TEXT; offsets.len()];
    };
    token_classes(&byte_classes, offsets)
}

/// The class of each token from the byte classes of [`classify_bytes`]: for callers that
/// classify first and ask the tokenizer for offsets only when the text holds JSON.
#[must_use]
pub fn token_classes(byte_classes: &[u8], offsets: &[(usize, usize)]) -> Vec<u8> {
    offsets.iter().map(|&(start, end)| token_class(byte_classes, start, end)).collect()
}

/// The class of each byte of `text`, or `None` when it holds no JSON.
///
/// When the whole text, trimmed of whitespace, is one JSON value, every byte is classed as
/// JSON (the surrounding whitespace as scaffolding). Otherwise the JSON is looked for after
/// each `{` or `[` in turn, as a rendered chat template may put text before or after it
/// (`<|im_end|>\n`): the largest object or array that parses is classed, whitespace next to
/// it is scaffolding and the rest of the text is [`TEXT`]. The largest rather than the first,
/// so that a citation such as `[1]` in a preamble does not hide the answer that follows.
#[must_use]
pub fn classify_bytes(text: &str, value_keys: &[String]) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut classes = vec![TEXT; bytes.len()];
    let mut scanner = Scanner::new(bytes, &mut classes, value_keys);

    if let Some(end) = scanner.scan(0) {
        let after = scanner.skip_whitespace_from(end);
        if after == bytes.len() {
            return Some(classes);
        }
    }
    scanner.clear_touched();

    let (start, end) = scanner.largest_embedded()?;
    classes[..start].fill(TEXT);
    classes[end..].fill(TEXT);
    let leading = bytes[..start].iter().rev().take_while(|byte| is_whitespace(**byte)).count();
    let trailing = bytes[end..].iter().take_while(|byte| is_whitespace(**byte)).count();
    classes[start - leading..start].fill(SCAFFOLDING);
    classes[end..end + trailing].fill(SCAFFOLDING);
    Some(classes)
}

/// The class of the token spanning `start..end`: see [`classify_tokens`].
fn token_class(byte_classes: &[u8], start: usize, end: usize) -> u8 {
    let end = end.min(byte_classes.len());
    let start = start.min(end);
    byte_classes[start..end]
        .iter()
        .copied()
        .max_by_key(|&class| priority(class))
        .unwrap_or(SCAFFOLDING)
}

/// Orders classes for [`token_class`]: scaffolding lowest, then text, then key and values
/// by number. One-to-one, so ties are always between equal classes.
fn priority(class: u8) -> u8 {
    match class {
        SCAFFOLDING => 0,
        TEXT => 1,
        other => other,
    }
}

fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// An open object or array.
#[derive(Debug, Clone, Copy)]
struct Frame {
    is_object: bool,
    /// The class of the values directly inside: for an array, the class the array itself
    /// has as a value; for an object, the class of the value of the key just read.
    value_class: u8,
}

/// The scanner's state: the text, the classes it writes, and its explicit stack (no
/// recursion, so the depth bound is the only limit).
struct Scanner<'a> {
    bytes: &'a [u8],
    classes: &'a mut [u8],
    value_keys: &'a [String],
    /// Next byte to read.
    position: usize,
    /// Where the current attempt started; bytes from here to `position` have been written.
    attempt_start: usize,
    stack: Vec<Frame>,
    /// The unescaped key, when the raw key holds escapes.
    unescaped_key: Vec<u8>,
}

impl<'a> Scanner<'a> {
    fn new(bytes: &'a [u8], classes: &'a mut [u8], value_keys: &'a [String]) -> Self {
        Self {
            bytes,
            classes,
            value_keys,
            position: 0,
            attempt_start: 0,
            stack: Vec::new(),
            unescaped_key: Vec::new(),
        }
    }

    /// Resets to [`TEXT`] the bytes the last attempt wrote.
    fn clear_touched(&mut self) {
        let end = self.position.min(self.classes.len());
        let start = self.attempt_start.min(end);
        self.classes[start..end].fill(TEXT);
    }

    /// Tries each `{` or `[` in turn as the start of a JSON value and returns the span of
    /// the largest that parses (the first among equals). Starts inside a value that parsed
    /// are skipped: they could only give a part of it.
    fn largest_embedded(&mut self) -> Option<(usize, usize)> {
        let mut budget = self
            .bytes
            .len()
            .saturating_mul(SEARCH_BUDGET_PER_BYTE)
            .saturating_add(SEARCH_BUDGET_FLOOR);
        let mut largest: Option<(usize, usize)> = None;
        let mut from = 0;
        let bytes = self.bytes;
        let next_opening = |from: usize| {
            let rest = bytes.get(from..).unwrap_or_default();
            rest.iter().position(|byte| matches!(byte, b'{' | b'[')).map(|offset| from + offset)
        };
        while let Some(start) = next_opening(from) {
            if let Some(end) = self.scan(start) {
                if largest.is_none_or(|(best_start, best_end)| end - start > best_end - best_start)
                {
                    largest = Some((start, end));
                }
                from = end;
            } else {
                self.clear_touched();
                match budget.checked_sub(self.position - start + 1) {
                    Some(left) => budget = left,
                    None => break,
                }
                from = start + 1;
            }
        }
        largest
    }

    /// Scans one JSON value starting at `start` (after optional whitespace), writing the
    /// class of every byte it reads, and returns where the value ends; `None` if the text
    /// from there is not a complete JSON value.
    fn scan(&mut self, start: usize) -> Option<usize> {
        self.position = start;
        self.attempt_start = start;
        self.stack.clear();
        let mut class = VALUE;
        loop {
            // A value is expected here.
            self.skip_whitespace();
            match self.peek()? {
                open @ (b'{' | b'[') => {
                    if self.stack.len() >= MAX_DEPTH {
                        return None;
                    }
                    self.take(SCAFFOLDING);
                    let is_object = open == b'{';
                    self.stack.push(Frame { is_object, value_class: class });
                    self.skip_whitespace();
                    let close = if is_object { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.take(SCAFFOLDING);
                        self.stack.pop();
                    } else {
                        if is_object {
                            class = self.scan_key_and_colon()?;
                        }
                        continue;
                    }
                }
                b'"' => self.scan_string(class)?,
                b'-' | b'0'..=b'9' => self.scan_number(class)?,
                b't' => self.scan_literal(b"true", class)?,
                b'f' => self.scan_literal(b"false", class)?,
                b'n' => self.scan_literal(b"null", class)?,
                _ => return None,
            }
            // A value has ended: close what it ends, until the next value or the end.
            class = loop {
                let Some(&top) = self.stack.last() else {
                    return Some(self.position);
                };
                self.skip_whitespace();
                match (self.peek()?, top.is_object) {
                    (b',', true) => {
                        self.take(SCAFFOLDING);
                        break self.scan_key_and_colon()?;
                    }
                    (b',', false) => {
                        self.take(SCAFFOLDING);
                        break top.value_class;
                    }
                    (b'}', true) | (b']', false) => {
                        self.take(SCAFFOLDING);
                        self.stack.pop();
                    }
                    _ => return None,
                }
            };
        }
    }

    /// Scans `"key" :` inside an object, records the class its value will have in the
    /// innermost frame, and returns it.
    fn scan_key_and_colon(&mut self) -> Option<u8> {
        self.skip_whitespace();
        if self.peek()? != b'"' {
            return None;
        }
        let (content_start, content_end) = self.scan_string_content(KEY)?;
        self.skip_whitespace();
        if self.peek()? != b':' {
            return None;
        }
        self.take(SCAFFOLDING);
        let value_class = self.key_class(content_start, content_end);
        if let Some(top) = self.stack.last_mut() {
            top.value_class = value_class;
        }
        Some(value_class)
    }

    /// The class of the values of the key whose raw (still escaped) contents are
    /// `bytes[start..end]`.
    fn key_class(&mut self, start: usize, end: usize) -> u8 {
        let raw = self.bytes.get(start..end).unwrap_or_default();
        let key = if raw.contains(&b'\\') {
            unescape(raw, &mut self.unescaped_key);
            self.unescaped_key.as_slice()
        } else {
            raw
        };
        self.value_keys
            .iter()
            .position(|name| name.as_bytes() == key)
            .and_then(|index| u8::try_from(index).ok())
            .and_then(|index| FIRST_KEYED_VALUE.checked_add(index))
            .unwrap_or(VALUE)
    }

    /// Scans a string value: quotes as scaffolding, contents as `class`.
    fn scan_string(&mut self, class: u8) -> Option<()> {
        self.scan_string_content(class).map(|_| ())
    }

    /// Scans a string starting at its opening quote and returns the span of its contents.
    fn scan_string_content(&mut self, class: u8) -> Option<(usize, usize)> {
        self.take(SCAFFOLDING);
        let content_start = self.position;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' => {
                    self.take(class);
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.take(class),
                        b'u' => {
                            self.take(class);
                            for _ in 0..4 {
                                if !self.peek()?.is_ascii_hexdigit() {
                                    return None;
                                }
                                self.take(class);
                            }
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => self.take(class),
            }
        }
        let content_end = self.position;
        self.take(SCAFFOLDING);
        Some((content_start, content_end))
    }

    /// Scans `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn scan_number(&mut self, class: u8) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.take(class);
        }
        match self.peek()? {
            b'0' => self.take(class),
            b'1'..=b'9' => self.take_digits(class),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.take(class);
            self.take_required_digits(class)?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.take(class);
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.take(class);
            }
            self.take_required_digits(class)?;
        }
        Some(())
    }

    fn take_required_digits(&mut self, class: u8) -> Option<()> {
        if !self.peek()?.is_ascii_digit() {
            return None;
        }
        self.take_digits(class);
        Some(())
    }

    fn take_digits(&mut self, class: u8) {
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.take(class);
        }
    }

    fn scan_literal(&mut self, literal: &[u8], class: u8) -> Option<()> {
        for &expected in literal {
            if self.peek()? != expected {
                return None;
            }
            self.take(class);
        }
        Some(())
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(is_whitespace) {
            self.take(SCAFFOLDING);
        }
    }

    /// Classes the whitespace from `position` on as scaffolding; returns where it ends.
    fn skip_whitespace_from(&mut self, position: usize) -> usize {
        self.position = position;
        self.skip_whitespace();
        self.position
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    /// Writes the class of the byte at the current position and moves past it.
    fn take(&mut self, class: u8) {
        if let Some(slot) = self.classes.get_mut(self.position) {
            *slot = class;
        }
        self.position += 1;
    }
}

/// Unescapes the contents of a JSON string the scanner accepted into `out` as UTF-8; a
/// `\u` escape naming a lone surrogate becomes U+FFFD.
fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut index = 0;
    while let Some(&byte) = raw.get(index) {
        index += 1;
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        let Some(&escape) = raw.get(index) else { return };
        index += 1;
        let unescaped = match escape {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let Some(unit) = hex4(raw, index) else { return };
                index += 4;
                let mut code_point = unit;
                // A high surrogate followed by an escaped low one encodes one code point.
                if (0xD800..0xDC00).contains(&unit)
                    && raw.get(index..index + 2) == Some(b"\\u".as_slice())
                {
                    if let Some(low) =
                        hex4(raw, index + 2).filter(|low| (0xDC00..0xE000).contains(low))
                    {
                        code_point = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        index += 6;
                    }
                }
                char::from_u32(code_point).unwrap_or(char::REPLACEMENT_CHARACTER)
            }
            other => char::from(other),
        };
        let mut buffer = [0; 4];
        out.extend_from_slice(unescaped.encode_utf8(&mut buffer).as_bytes());
    }
}

/// The value of the four hex digits at `raw[at..at + 4]`.
fn hex4(raw: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(raw.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests;
