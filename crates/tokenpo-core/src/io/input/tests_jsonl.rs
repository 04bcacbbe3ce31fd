//! Tests of reading JSONL files.

use std::fs;
use std::path::PathBuf;

use super::ColumnMap;
use super::test_support::{
    messages, open_error, pair_rows, quarantined, read_batches, read_rows, text_pair,
};
use crate::pair::RawPair;

fn write(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, contents).unwrap();
    path
}

#[test]
fn jsonl_input_reads_text_and_conversational_rows() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        r#"{"prompt": "2+2=", "chosen": "4", "rejected": "5", "id": 17, "score_chosen": 1, "score_rejected": 0.25, "extra": [1]}"#,
        r#"{"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "name": "x"}], "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go"}], "id": "b"}"#,
        r#"{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}], "rejected": [{"role": "assistant", "content": "go"}], "prompt_id": null}"#,
        r#"{"chosen": "yes", "rejected": "no", "prompt": null, "score_chosen": null}"#,
    ];
    let path = write(&dir, "pairs.jsonl", lines.join("\n").as_bytes());
    let rows = read_rows(&path);
    let pairs: Vec<RawPair> = rows.into_iter().map(Result::unwrap).collect();
    let first = RawPair {
        id: Some("17".into()),
        score_chosen: Some(1.0),
        score_rejected: Some(0.25),
        ..text_pair(0, Some("2+2="), "4", "5")
    };
    let hi = ("user", "hi");
    let second = RawPair {
        id: Some("b".into()),
        prompt: None,
        chosen: messages(&[hi, ("assistant", "hello")]),
        rejected: messages(&[hi, ("assistant", "go")]),
        ..text_pair(1, None, "", "")
    };
    let third = RawPair {
        prompt: Some(messages(&[hi])),
        chosen: messages(&[("assistant", "hello")]),
        rejected: messages(&[("assistant", "go")]),
        ..text_pair(2, None, "", "")
    };
    assert_eq!(pairs, vec![first, second, third, text_pair(3, None, "yes", "no")]);
}

#[test]
fn jsonl_input_numbers_rows_by_physical_line() {
    let dir = tempfile::tempdir().unwrap();
    let line = |n: usize| format!(r#"{{"chosen": "c{n}", "rejected": "r{n}"}}"#);
    // A byte order mark, CRLF endings, blank lines, and no newline at the end.
    let contents = format!(
        "\u{feff}{}\r\n\r\n{}\n  \n{}\n{}\n\n{}",
        line(0),
        line(2),
        line(4),
        line(5),
        line(7)
    );
    let path = write(&dir, "pairs.json", contents.as_bytes());
    let batches = read_batches(&path, &ColumnMap::identity(), 2);
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let rows: Vec<_> = batches.into_iter().flatten().collect();
    assert_eq!(pair_rows(&rows), [0, 2, 4, 5, 7]);
    for row in &rows {
        let pair = row.as_ref().unwrap();
        let n = pair.source.row;
        assert_eq!(*pair, text_pair(n, None, &format!("c{n}"), &format!("r{n}")));
    }
}

#[test]
fn jsonl_input_renames_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "pairs.jsonl",
        br#"{"question": "q", "response_a": "a", "response_b": "b", "chosen": 1}"#,
    );
    let map = ColumnMap::parse("prompt=question,chosen=response_a,rejected=response_b").unwrap();
    let rows: Vec<_> = read_batches(&path, &map, 10).into_iter().flatten().collect();
    assert_eq!(rows, vec![Ok(text_pair(0, Some("q"), "a", "b"))]);
}

#[test]
fn jsonl_input_quarantines_bad_rows_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut contents: Vec<u8> = Vec::new();
    for line in [
        r#"{"rejected": "r"}"#,
        r#"{"chosen": null, "rejected": "r"}"#,
        r#"{"chosen": "c", "rejected": ""}"#,
        r#"{"chosen": [], "rejected": []}"#,
        r#"{"chosen": 3, "rejected": "r"}"#,
        r#"{"chosen": "c", "rejected": {"text": "r"}}"#,
        r#"{"chosen": [{"role": "user"}], "rejected": [{"role": "user", "content": "x"}]}"#,
        r#"{"chosen": ["hi"], "rejected": [{"role": "user", "content": "x"}]}"#,
        r#"{"chosen": [{"role": 1, "content": "x"}], "rejected": [{"role": "user", "content": "x"}]}"#,
        r#"{"chosen": "c", "rejected": [{"role": "user", "content": "x"}]}"#,
        r#"{"prompt": "p", "chosen": [{"role": "a", "content": "x"}], "rejected": [{"role": "a", "content": "y"}]}"#,
        r#"{"prompt": [{"role": "u", "content": "p"}], "chosen": "c", "rejected": "r"}"#,
        r#"{"chosen": "c", "rejected": "r", "score_chosen": "high"}"#,
        r#"{"chosen": "c", "rejected": "r", "id": 1.5}"#,
        r#"{"chosen": "c", "rejected": "r", "id": true}"#,
        r#"{"chosen": "c", "rejected": "r""#,
        r#"["c", "r"]"#,
        r#"{"chosen": "c", "rejected": "r"}"#,
    ] {
        contents.extend_from_slice(line.as_bytes());
        contents.push(b'\n');
    }
    contents.extend_from_slice(b"{\"chosen\": \"\xff\", \"rejected\": \"r\"}\n");
    let path = write(&dir, "pairs.jsonl", &contents);
    let rows = read_rows(&path);
    let message = "has a message without a string role and content";
    let expected: Vec<(u64, Option<&str>, String)> = vec![
        (0, Some("chosen"), "chosen is missing".into()),
        (1, Some("chosen"), "chosen is null".into()),
        (2, Some("rejected"), "rejected is empty".into()),
        (3, Some("chosen"), "chosen is empty".into()),
        (4, Some("chosen"), "chosen is a number, expected a string or a list of messages".into()),
        (
            5,
            Some("rejected"),
            "rejected is an object, expected a string or a list of messages".into(),
        ),
        (6, Some("chosen"), format!("chosen {message}")),
        (7, Some("chosen"), format!("chosen {message}")),
        (8, Some("chosen"), format!("chosen {message}")),
        (9, None, "chosen and rejected mix text and messages".into()),
        (10, Some("prompt"), "prompt and completions mix text and messages".into()),
        (11, Some("prompt"), "prompt and completions mix text and messages".into()),
        (12, Some("score_chosen"), "score_chosen is a string, expected a number".into()),
        (13, Some("id"), "id is a number, expected a string or an integer".into()),
        (14, Some("id"), "id is a boolean, expected a string or an integer".into()),
        (15, None, "line is not valid JSON".into()),
        (16, None, "line is not a JSON object".into()),
        (18, None, "line is not valid UTF-8".into()),
    ];
    let found: Vec<(u64, Option<&str>, String)> = quarantined(&rows)
        .into_iter()
        .map(|(row, field, reason)| (row, field, reason.to_owned()))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(pair_rows(&rows), [17]);
    assert!(rows.iter().all(|row| match row {
        Ok(pair) => pair.source.file == 3,
        Err(record) => record.source.file == 3,
    }));
}

#[test]
fn jsonl_input_rejects_a_json_array_and_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let array = b"\n  [{\"chosen\": \"c\", \"rejected\": \"r\"}]\n";
    for name in ["pairs.jsonl", "pairs.ndjson"] {
        let path = write(&dir, name, array);
        assert_eq!(
            open_error(&path, &ColumnMap::identity()),
            "holds a JSON array; expected JSON Lines, one object per line (a .json file may \
             hold an array of rows)"
        );
    }
    let missing = dir.path().join("missing.jsonl");
    assert!(open_error(&missing, &ColumnMap::identity()).contains("No such file"));
}

#[test]
fn jsonl_input_without_a_required_column_is_a_file_error() {
    let dir = tempfile::tempdir().unwrap();
    let path =
        write(&dir, "pairs.jsonl", b"{\"a\": \"c\", \"b\": \"r\"}\nnot json\n{\"a\": \"c\"}\n");
    assert_eq!(
        open_error(&path, &ColumnMap::identity()),
        "required column 'chosen' missing from the first 2 objects (keys found: a, b)"
    );
    let renamed = ColumnMap::parse("chosen=a,rejected=x").unwrap();
    assert_eq!(
        open_error(&path, &renamed),
        "required column 'x' (rejected) missing from the first 2 objects (keys found: a, b)"
    );
}

#[test]
fn jsonl_input_of_only_blank_lines_has_no_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "empty.jsonl", b"\n\n  \n");
    assert!(read_batches(&path, &ColumnMap::identity(), 4).is_empty());
}

#[test]
fn jsonl_lines_of_other_whitespace_are_quarantined_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let pair = r#"{"chosen": "c", "rejected": "r"}"#;
    let contents = format!("{pair}\n \t\r\n\u{a0}\n\u{2028}\n\u{b}\n\u{3000}\n{pair}\n");
    let path = write(&dir, "pairs.jsonl", contents.as_bytes());
    let rows = read_rows(&path);
    assert_eq!(pair_rows(&rows), [0, 6]);
    let not_json: Vec<_> = [2, 3, 4, 5].map(|row| (row, None, "line is not valid JSON")).into();
    assert_eq!(quarantined(&rows), not_json);
}
