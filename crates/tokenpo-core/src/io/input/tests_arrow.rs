//! Tests of reading parquet and Arrow IPC files, written here with arrow-rs writers.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, BinaryArray, DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array,
    LargeListArray, LargeStringArray, ListArray, NullArray, RecordBatch, StringArray,
    StringViewArray, StructArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_ipc::writer::{FileWriter, StreamWriter};
use arrow_schema::{DataType, Field, Fields};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

use super::ColumnMap;
use super::test_support::{
    messages, open_error, pair_rows, quarantined, read_batches, read_rows, text_pair,
};
use crate::error::Error;
use crate::pair::RawPair;

fn text(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn strings(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn message_fields() -> Fields {
    Fields::from(vec![
        Field::new("role", DataType::Utf8, true),
        Field::new("content", DataType::Utf8, true),
    ])
}

/// A `list<struct<role, content>>` column; `None` rows are null lists.
fn conversations(rows: &[Option<&[(&str, &str)]>]) -> ArrayRef {
    let turns: Vec<(&str, &str)> =
        rows.iter().flatten().flat_map(|row| row.iter().copied()).collect();
    let roles: Vec<Option<&str>> = turns.iter().map(|(role, _)| Some(*role)).collect();
    let contents: Vec<Option<&str>> = turns.iter().map(|(_, content)| Some(*content)).collect();
    let lengths: Vec<Option<usize>> = rows.iter().map(|row| row.map(<[_]>::len)).collect();
    messages_column(&lengths, &roles, &contents, None)
}

/// A `list<struct<role, content>>` column from its parts, for malformed messages.
fn messages_column(
    lengths: &[Option<usize>],
    roles: &[Option<&str>],
    contents: &[Option<&str>],
    message_nulls: Option<NullBuffer>,
) -> ArrayRef {
    let structs =
        StructArray::new(message_fields(), vec![text(roles), text(contents)], message_nulls);
    let offsets = OffsetBuffer::from_lengths(lengths.iter().map(|length| length.unwrap_or(0)));
    let list_nulls: NullBuffer = lengths.iter().map(Option::is_some).collect();
    let field = Arc::new(Field::new_list_field(DataType::Struct(message_fields()), true));
    Arc::new(ListArray::new(field, offsets, Arc::new(structs), Some(list_nulls)))
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

fn write_parquet(path: &Path, batches: &[RecordBatch], row_group_rows: usize) {
    let properties =
        WriterProperties::builder().set_max_row_group_row_count(Some(row_group_rows)).build();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), batches[0].schema(), Some(properties))
            .unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
}

fn write_ipc_file(path: &Path, batches: &[RecordBatch]) {
    let mut writer =
        FileWriter::try_new(File::create(path).unwrap(), &batches[0].schema()).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
}

fn write_ipc_stream(path: &Path, batches: &[RecordBatch]) {
    let mut writer =
        StreamWriter::try_new(File::create(path).unwrap(), &batches[0].schema()).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
}

/// Writes `batches` to `name` in `dir` in the format its extension names.
fn write(dir: &tempfile::TempDir, name: &str, batches: &[RecordBatch]) -> PathBuf {
    let path = dir.path().join(name);
    if name.ends_with(".parquet") {
        write_parquet(&path, batches, 1024);
    } else {
        write_ipc_file(&path, batches);
    }
    path
}

#[test]
fn parquet_input_reads_text_rows_with_ids_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let hello: &[(&str, &str)] = &[("user", "x")];
    let rows = batch(vec![
        // A nested column before the pair columns: its leaves must not shift the projection.
        ("meta", conversations(&[Some(hello), None])),
        ("prompt", strings(&["2+2=", "Capital of France?"])),
        ("chosen", strings(&["4", "Paris"])),
        ("rejected", strings(&["5", "Lyon"])),
        ("id", Arc::new(Int64Array::from(vec![Some(17), None]))),
        ("score_chosen", Arc::new(Int32Array::from(vec![Some(3), None]))),
        ("score_rejected", Arc::new(Float32Array::from(vec![0.5, -1.25]))),
        ("noise", Arc::new(Int64Array::from(vec![1, 2]))),
    ]);
    let path = write(&dir, "pairs.parquet", &[rows]);
    let expected = vec![
        Ok(RawPair {
            id: Some("17".into()),
            score_chosen: Some(3.0),
            score_rejected: Some(0.5),
            ..text_pair(0, Some("2+2="), "4", "5")
        }),
        Ok(RawPair {
            score_rejected: Some(-1.25),
            ..text_pair(1, Some("Capital of France?"), "Paris", "Lyon")
        }),
    ];
    assert_eq!(read_rows(&path), expected);
}

#[test]
fn ipc_input_reads_conversations_in_file_and_stream_format() {
    let dir = tempfile::tempdir().unwrap();
    let (user, good, bad) = (("user", "hi"), ("assistant", "hello"), ("assistant", "go away"));
    let rows = batch(vec![
        ("chosen", conversations(&[Some(&[user, good])])),
        ("rejected", conversations(&[Some(&[user, bad])])),
        ("id", strings(&["a"])),
    ]);
    let expected = vec![Ok(RawPair {
        id: Some("a".into()),
        prompt: None,
        chosen: messages(&[user, good]),
        rejected: messages(&[user, bad]),
        ..text_pair(0, None, "", "")
    })];
    let file = write(&dir, "pairs.arrow", std::slice::from_ref(&rows));
    assert_eq!(read_rows(&file), expected);
    // The stream format under a file-format extension: the missing magic tells them apart.
    let stream = dir.path().join("stream.feather");
    write_ipc_stream(&stream, &[rows]);
    assert_eq!(read_rows(&stream), expected);
}

#[test]
fn arrow_input_reads_every_string_and_list_type() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Int32Array::from(vec![1, 0]);
    let dictionary = DictionaryArray::<Int32Type>::try_new(keys, strings(&["r0", "r1"])).unwrap();
    let rows = batch(vec![
        ("prompt", Arc::new(LargeStringArray::from(vec!["p0", "p1"]))),
        ("chosen", Arc::new(StringViewArray::from(vec!["c0", "c1"]))),
        ("rejected", Arc::new(dictionary)),
        ("id", Arc::new(BinaryArray::from(vec![&b"i0"[..], &b"i1"[..]]))),
        ("score_chosen", Arc::new(NullArray::new(2))),
    ]);
    let path = write(&dir, "types.arrow", &[rows]);
    let expected: Vec<_> = [("p0", "c0", "r1", "i0"), ("p1", "c1", "r0", "i1")]
        .into_iter()
        .enumerate()
        .map(|(row, (prompt, chosen, rejected, id))| {
            Ok(RawPair {
                id: Some(id.into()),
                ..text_pair(row as u64, Some(prompt), chosen, rejected)
            })
        })
        .collect();
    assert_eq!(read_rows(&path), expected);

    let large_fields = Fields::from(vec![
        Field::new("content", DataType::LargeUtf8, true),
        Field::new("role", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, true),
    ]);
    let large = |content: &str| -> ArrayRef {
        let structs = StructArray::new(
            large_fields.clone(),
            vec![
                Arc::new(LargeStringArray::from(vec![content])),
                strings(&["assistant"]),
                text(&[None]),
            ],
            None,
        );
        let field = Arc::new(Field::new_list_field(DataType::Struct(large_fields.clone()), true));
        Arc::new(LargeListArray::new(
            field,
            OffsetBuffer::from_lengths([1]),
            Arc::new(structs),
            None,
        ))
    };
    let rows = batch(vec![
        ("prompt", Arc::new(NullArray::new(1))),
        ("chosen", large("yes")),
        ("rejected", large("no")),
    ]);
    let path = write(&dir, "large.arrow", &[rows]);
    let expected = vec![Ok(RawPair {
        prompt: None,
        chosen: messages(&[("assistant", "yes")]),
        rejected: messages(&[("assistant", "no")]),
        ..text_pair(0, None, "", "")
    })];
    assert_eq!(read_rows(&path), expected);
}

fn numbered(rows: std::ops::Range<usize>) -> RecordBatch {
    let chosen: Vec<String> = rows.clone().map(|row| format!("c{row}")).collect();
    let rejected: Vec<String> = rows.map(|row| format!("r{row}")).collect();
    batch(vec![
        ("chosen", Arc::new(StringArray::from(chosen))),
        ("rejected", Arc::new(StringArray::from(rejected))),
    ])
}

/// Checks the batch sizes, and that rows are numbered 0.. in file order.
fn assert_batches(path: &Path, batch_rows: usize, sizes: &[usize]) {
    let batches = read_batches(path, &ColumnMap::identity(), batch_rows);
    let found: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(found, sizes, "{} in batches of {batch_rows}", path.display());
    for (row, outcome) in batches.into_iter().flatten().enumerate() {
        assert_eq!(
            outcome,
            Ok(text_pair(row as u64, None, &format!("c{row}"), &format!("r{row}")))
        );
    }
}

#[test]
fn parquet_input_numbers_rows_across_batches_and_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.parquet");
    write_parquet(&path, &[numbered(0..6), numbered(6..10)], 3);
    let metadata = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
    assert!(metadata.metadata().num_row_groups() >= 3);
    assert_batches(&path, 4, &[4, 4, 2]);
    assert_batches(&path, 1, &[1; 10]);
    assert_batches(&path, 100, &[10]);
}

#[test]
fn ipc_input_gathers_record_batches_into_batches_of_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "pairs.ipc", &[numbered(0..3), numbered(3..3), numbered(3..10)]);
    assert_batches(&path, 4, &[4, 4, 2]);
    assert_batches(&path, 100, &[10]);
}

#[test]
fn parquet_input_follows_the_column_map() {
    let dir = tempfile::tempdir().unwrap();
    let rows = batch(vec![
        ("chosen", Arc::new(Int64Array::from(vec![1]))),
        ("response_a", strings(&["a"])),
        ("response_b", strings(&["b"])),
    ]);
    let path = write(&dir, "mapped.parquet", &[rows]);
    let map = ColumnMap::parse("chosen=response_a,rejected=response_b").unwrap();
    let rows: Vec<_> = read_batches(&path, &map, 8).into_iter().flatten().collect();
    assert_eq!(rows, vec![Ok(text_pair(0, None, "a", "b"))]);
}

#[test]
fn arrow_input_quarantines_bad_text_rows() {
    let dir = tempfile::tempdir().unwrap();
    let chosen: Vec<Option<&[u8]>> =
        vec![Some(b"c"), None, Some(b"c"), Some(b"\xff"), Some(b"c"), Some(b"c"), Some(b"c")];
    let rows = batch(vec![
        ("prompt", text(&[Some("p"), Some("p"), Some("p"), Some("p"), Some("p"), Some("p"), None])),
        ("chosen", Arc::new(BinaryArray::from(chosen))),
        ("rejected", strings(&["r", "r", "", "r", "r", "r", "r"])),
        (
            "score_chosen",
            Arc::new(Float64Array::from(vec![0.0, 0.0, 0.0, 0.0, f64::NAN, f64::INFINITY, 0.0])),
        ),
    ]);
    let path = write(&dir, "text.parquet", &[rows]);
    let rows = read_rows(&path);
    assert_eq!(
        quarantined(&rows),
        [
            (1, Some("chosen"), "chosen is null"),
            (2, Some("rejected"), "rejected is empty"),
            (3, Some("chosen"), "chosen is not valid UTF-8"),
            (4, Some("score_chosen"), "score_chosen is not finite"),
            (5, Some("score_chosen"), "score_chosen is not finite"),
        ]
    );
    assert_eq!(pair_rows(&rows), [0, 6]);
    assert_eq!(rows[6], Ok(RawPair { score_chosen: Some(0.0), ..text_pair(6, None, "c", "r") }));
}

#[test]
fn arrow_input_quarantines_bad_conversation_rows() {
    let dir = tempfile::tempdir().unwrap();
    let good: &[(&str, &str)] = &[("assistant", "x")];
    // Row 3 holds a message with no role, row 4 a null message.
    let chosen = messages_column(
        &[Some(1), Some(1), None, Some(1), Some(1), Some(1)],
        &[Some("a"), Some("a"), None, Some("a"), Some("a")],
        &[Some("x"), Some("x"), Some("x"), Some("x"), Some("x")],
        Some(NullBuffer::from(vec![true, true, true, false, true])),
    );
    let rejected =
        conversations(&[Some(good), Some(good), Some(good), Some(good), Some(good), Some(&[])]);
    let rows = batch(vec![
        ("prompt", text(&[None, Some("p"), None, None, None, None])),
        ("chosen", chosen),
        ("rejected", rejected),
    ]);
    let path = write(&dir, "conversations.arrow", &[rows]);
    let rows = read_rows(&path);
    let malformed = "chosen has a message without a string role and content";
    assert_eq!(
        quarantined(&rows),
        [
            (1, Some("prompt"), "prompt and completions mix text and messages"),
            (2, Some("chosen"), "chosen is null"),
            (3, Some("chosen"), malformed),
            (4, Some("chosen"), malformed),
            (5, Some("rejected"), "rejected is empty"),
        ]
    );
    assert_eq!(pair_rows(&rows), [0]);
    assert_eq!(rows[0].as_ref().unwrap().chosen, messages(&[("a", "x")]));

    let rows = batch(vec![("chosen", strings(&["c"])), ("rejected", conversations(&[Some(good)]))]);
    let path = write(&dir, "mixed.parquet", &[rows]);
    assert_eq!(
        quarantined(&read_rows(&path)),
        [(0, None, "chosen and rejected mix text and messages")]
    );
}

#[test]
fn arrow_input_rejects_unusable_files_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let identity = ColumnMap::identity();
    let missing = dir.path().join("missing.parquet");
    assert!(open_error(&missing, &identity).contains("No such file"));
    for (name, reason) in [
        ("text.parquet", "not a readable parquet file: "),
        ("text.arrow", "not an Arrow IPC file or stream: "),
        ("empty.arrow", "not an Arrow IPC file or stream: "),
    ] {
        let path = dir.path().join(name);
        fs::write(&path, if name.starts_with("empty") { "" } else { "prompt,chosen\na,b\n" })
            .unwrap();
        let found = open_error(&path, &identity);
        assert!(found.starts_with(reason), "{name}: {found}");
    }
}

#[test]
fn arrow_input_rejects_missing_columns_listing_the_columns_found() {
    let dir = tempfile::tempdir().unwrap();
    let rows = batch(vec![("prompt", strings(&["p"])), ("chosen", strings(&["c"]))]);
    for name in ["pairs.parquet", "pairs.arrow"] {
        let path = write(&dir, name, std::slice::from_ref(&rows));
        assert_eq!(
            open_error(&path, &ColumnMap::identity()),
            "required column 'rejected' missing (columns found: prompt, chosen)"
        );
        let map = ColumnMap::parse("chosen=response_a").unwrap();
        assert_eq!(
            open_error(&path, &map),
            "required column 'response_a' (chosen) missing (columns found: prompt, chosen)"
        );
    }
}

#[test]
fn arrow_input_rejects_columns_of_unusable_types() {
    let dir = tempfile::tempdir().unwrap();
    let pair = || vec![("chosen", strings(&["c"])), ("rejected", strings(&["r"]))];
    let no_content = Fields::from(vec![Field::new("role", DataType::Utf8, true)]);
    let role_only = Arc::new(StructArray::new(no_content.clone(), vec![strings(&["user"])], None));
    let list_field = Arc::new(Field::new_list_field(DataType::Struct(no_content), true));
    let role_list: ArrayRef =
        Arc::new(ListArray::new(list_field, OffsetBuffer::from_lengths([1]), role_only, None));
    let conversation = "a string or a list of struct<role: string, content: string>";
    let cases: Vec<(&str, ArrayRef, String)> = vec![
        (
            "chosen",
            Arc::new(Int64Array::from(vec![1])),
            format!("has type Int64, expected {conversation}"),
        ),
        (
            "prompt",
            role_list,
            format!("has type List(Struct(\"role\": Utf8)), expected {conversation}"),
        ),
        (
            "score_chosen",
            strings(&["high"]),
            "has type Utf8, expected an integer or floating-point number".into(),
        ),
        (
            "id",
            Arc::new(Float64Array::from(vec![1.5])),
            "has type Float64, expected a string or an integer".into(),
        ),
    ];
    for (column, array, reason) in cases {
        let mut columns = pair();
        columns.retain(|(name, _)| *name != column);
        columns.push((column, array));
        let path = write(&dir, &format!("{column}.arrow"), &[batch(columns)]);
        assert_eq!(
            open_error(&path, &ColumnMap::identity()),
            format!("column '{column}' {reason}")
        );
    }
}

#[test]
fn read_pairs_rejects_batches_of_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "pairs.arrow", &[numbered(0..1)]);
    match super::read_pairs(&path, 0, &ColumnMap::identity(), 0) {
        Err(Error::Config { field, .. }) => assert_eq!(field, "batch_rows"),
        Err(other) => panic!("expected a config error, got {other:?}"),
        Ok(_) => panic!("batch_rows 0 accepted"),
    }
}
