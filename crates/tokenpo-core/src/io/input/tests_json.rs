//! Tests of reading `.json` files: one JSON array of rows, or else JSON Lines; and of
//! shipping their records to another engine.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};

use super::test_support::{messages, open_error, pair_rows, quarantined, read_rows, text_pair};
use super::{
    ColumnMap, ELEMENT_COLUMN, JsonLayout, LINE_COLUMN, SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN,
    json_record_batches, read_pairs, shipped_rows,
};
use crate::error::Error;
use crate::pair::{RawPair, RowOutcome};

fn write(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, contents).unwrap();
    path
}

/// `[{"chosen": "c0", "rejected": "r0"}, ...]` pretty-printed as `json.dumps(indent=2)`
/// writes it: one key per line.
fn pretty_array(rows: usize) -> String {
    let objects: Vec<String> = (0..rows)
        .map(|n| format!("  {{\n    \"chosen\": \"c{n}\",\n    \"rejected\": \"r{n}\"\n  }}"))
        .collect();
    format!("[\n{}\n]\n", objects.join(",\n"))
}

/// Every row of `path` as another engine gets them: its records shipped in batches of
/// `batch_rows`, each record numbered by its place in the file, then parsed.
fn shipped(path: &Path, batch_rows: usize) -> Vec<RowOutcome> {
    let mut first_row = 0;
    let mut rows = Vec::new();
    for batch in json_record_batches(path, batch_rows).unwrap() {
        let records = batch.unwrap();
        let count = records.num_rows() as u64;
        let mut columns: Vec<(String, ArrayRef)> = records
            .schema()
            .fields()
            .iter()
            .zip(records.columns())
            .map(|(field, column)| (field.name().clone(), column.clone()))
            .collect();
        columns.push((
            SOURCE_FILE_COLUMN.into(),
            Arc::new(UInt32Array::from(vec![3; count as usize])),
        ));
        let numbers: Vec<u64> = (first_row..first_row + count).collect();
        columns.push((SOURCE_ROW_COLUMN.into(), Arc::new(UInt64Array::from(numbers))));
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        rows.extend(shipped_rows(&batch, &ColumnMap::identity()).unwrap());
        first_row += count;
    }
    rows
}

#[test]
fn a_pretty_printed_json_array_is_read_element_by_element() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "pairs.json", pretty_array(3).as_bytes());
    let rows = read_rows(&path);
    let expected: Vec<RowOutcome> =
        (0..3).map(|n| Ok(text_pair(n, None, &format!("c{n}"), &format!("r{n}")))).collect();
    assert_eq!(rows, expected);
    assert_eq!(shipped(&path, 2), expected);
    let batches = json_record_batches(&path, 2).unwrap();
    assert_eq!(batches.layout(), JsonLayout::Array);
    let sizes: Vec<usize> = batches.map(|batch| batch.unwrap().num_rows()).collect();
    assert_eq!(sizes, [2, 1]);
}

#[test]
fn json_array_elements_keep_their_index_and_their_brackets_and_commas() {
    let dir = tempfile::tempdir().unwrap();
    // Separators and brackets inside strings, escaped quotes and backslashes, nested
    // messages, a byte order mark and whitespace before the array, an element longer
    // than the read buffer, and a comma before the closing bracket.
    let long = "x".repeat(200_000);
    let contents = format!(
        "\u{feff} \r\n [{{\"chosen\": \"a, ] }} [\", \"rejected\": \"b \\\" \\\\\"}},\
         {{\"chosen\": [{{\"role\": \"assistant\", \"content\": \"[{{]}}\"}}],\
          \"rejected\": [{{\"role\": \"assistant\", \"content\": \"no\"}}], \"id\": [1, 2]}},\
         {{\"chosen\": \"{long}\", \"rejected\": \"r\"}} , ]\n\n"
    );
    let path = write(&dir, "pairs.json", contents.as_bytes());
    let rows = read_rows(&path);
    assert_eq!(rows[0], Ok(text_pair(0, None, "a, ] } [", "b \" \\")));
    let second = RawPair {
        chosen: messages(&[("assistant", "[{]}")]),
        rejected: messages(&[("assistant", "no")]),
        ..text_pair(1, None, "", "")
    };
    assert_eq!(
        quarantined(&rows),
        [(1, Some("id"), "id is a list, expected a string or an integer")]
    );
    let fixed = contents.replace(", \"id\": [1, 2]", "");
    let fixed_path = write(&dir, "fixed.json", fixed.as_bytes());
    let fixed_rows = read_rows(&fixed_path);
    assert_eq!(fixed_rows[1], Ok(second));
    assert_eq!(fixed_rows[2], Ok(text_pair(2, None, &long, "r")));
    assert_eq!(fixed_rows.len(), 3);
    assert_eq!(shipped(&fixed_path, 1), fixed_rows);
    assert_eq!(shipped(&path, 2), rows);
}

#[test]
fn bad_json_array_elements_are_quarantined_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut contents: Vec<u8> = Vec::new();
    contents.extend_from_slice(
        b"[{\"chosen\": \"c\", \"rejected\": \"r\"}, [\"c\", \"r\"], 7, {\"chosen\": tru},\n ,\n",
    );
    contents
        .extend_from_slice(b"{\"chosen\": \"\xff\", \"rejected\": \"r\"}, {\"rejected\": \"r\"},");
    contents.extend_from_slice(b"{\"chosen\": \"c\", \"rejected\": \"r\"}]");
    let path = write(&dir, "pairs.json", &contents);
    let rows = read_rows(&path);
    // Element 4 is blank (two commas in a row): no row, but it keeps its number.
    assert_eq!(
        quarantined(&rows),
        [
            (1, None, "element is not a JSON object"),
            (2, None, "element is not a JSON object"),
            (3, None, "element is not valid JSON"),
            (5, None, "element is not valid UTF-8"),
            (6, Some("chosen"), "chosen is missing"),
        ]
    );
    assert_eq!(pair_rows(&rows), [0, 7]);
    assert_eq!(shipped(&path, 3), rows);
}

#[test]
fn an_empty_json_array_has_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    for contents in ["[]", " [ \n ] \n"] {
        let path = write(&dir, "empty.json", contents.as_bytes());
        assert!(read_rows(&path).is_empty(), "{contents:?}");
        assert!(shipped(&path, 4).is_empty(), "{contents:?}");
    }
}

#[test]
fn a_broken_json_array_stops_with_the_file_and_the_place_named() {
    let dir = tempfile::tempdir().unwrap();
    let row = r#"{"chosen": "c", "rejected": "r"}"#;
    let cases = [
        (format!("[{row}, {row}"), "the JSON array is not closed: the file ends in element 1"),
        (
            format!("[{row}, {{\"chosen\": \"c]"),
            "the JSON array is not closed: the file ends in element 1, inside a string",
        ),
        (
            format!("[{row}, {row}]\n[{row}]\n"),
            "holds more after its JSON array of 2 elements closes; expected one array of \
             rows, or JSON Lines",
        ),
    ];
    for (contents, expected) in cases {
        let path = write(&dir, "broken.json", contents.as_bytes());
        let mut batches = read_pairs(&path, 0, &ColumnMap::identity(), 1).unwrap();
        // The rows before the break are read; then the file-level error, naming the file.
        let mut rows = 0;
        let error = loop {
            match batches.next() {
                Some(Ok(batch)) => rows += batch.len(),
                Some(Err(error)) => break error,
                None => panic!("{contents}: no error"),
            }
        };
        assert!(batches.next().is_none());
        match error {
            Error::File { file, reason } => {
                assert_eq!((file, reason.as_str()), (path.clone(), expected));
            }
            other => panic!("expected a file error, got {other:?}"),
        }
        assert!(rows >= 1, "{contents}");
        let shipped_error = json_record_batches(&path, 1)
            .unwrap()
            .find_map(Result::err)
            .map(|error| error.to_string());
        assert_eq!(shipped_error, Some(format!("{}: {expected}", path.display())));
    }
}

#[test]
fn a_json_array_without_a_required_column_is_a_file_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "pairs.json", br#"[{"a": "c", "b": "r"}, "x", {"a": "c"}]"#);
    assert_eq!(
        open_error(&path, &ColumnMap::identity()),
        "required column 'chosen' missing from the first 2 objects (keys found: a, b)"
    );
}

#[test]
fn json_lines_are_shipped_line_by_line_as_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let pair = r#"{"chosen": "c", "rejected": "r"}"#;
    let contents = format!("\u{feff}{pair}\n\n{{not json\n{pair}");
    let path = write(&dir, "pairs.json", contents.as_bytes());
    let batches = json_record_batches(&path, 3).unwrap();
    assert_eq!(batches.layout(), JsonLayout::Lines);
    let batches: Vec<RecordBatch> = batches.map(Result::unwrap).collect();
    assert_eq!(batches[0].schema().field(0).name(), LINE_COLUMN);
    let lines = batches[0].column(0).as_binary::<i64>();
    assert_eq!(lines.value(0), format!("{pair}\n").as_bytes());
    assert_eq!(lines.value(1), b"\n");
    let rows = read_rows(&path);
    assert_eq!(pair_rows(&rows), [0, 3]);
    assert_eq!(shipped(&path, 3), rows);
    let array = write(&dir, "array.json", b"[{\"chosen\": \"c\", \"rejected\": \"r\"}]");
    let batch = json_record_batches(&array, 3).unwrap().next().unwrap().unwrap();
    assert_eq!(batch.schema().field(0).name(), ELEMENT_COLUMN);
}
