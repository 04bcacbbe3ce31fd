//! Tests of glob expansion, input descriptions and the column map.

use std::fs;
use std::path::{Path, PathBuf};

use super::{ColumnMap, InputFormat, PairBatches, describe_input, expand_inputs};
use crate::error::Error;

fn touch(dir: &Path, names: &[&str]) {
    for name in names {
        fs::write(dir.join(name), b"").unwrap();
    }
}

fn file_reason(error: Error) -> (PathBuf, String) {
    match error {
        Error::File { file, reason } => (file, reason),
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[test]
fn expand_inputs_matches_file_names_sorted_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    touch(dir.path(), &["b.parquet", "a.parquet", "c.jsonl", ".hidden.parquet", "a.parquet.tmp"]);
    fs::create_dir(dir.path().join("sub.parquet")).unwrap();
    let patterns = [dir.path().join("*.parquet"), dir.path().join("a.parquet")];
    let files = expand_inputs(&patterns, &dir.path().join("out")).unwrap();
    assert_eq!(files, vec![dir.path().join("a.parquet"), dir.path().join("b.parquet")]);

    let patterns = [dir.path().join("c.jsonl"), dir.path().join("?.parquet")];
    let files = expand_inputs(&patterns, &dir.path().join("out")).unwrap();
    let expected: Vec<PathBuf> =
        ["a.parquet", "b.parquet", "c.jsonl"].iter().map(|name| dir.path().join(name)).collect();
    assert_eq!(files, expected);
}

#[test]
fn expand_inputs_names_a_pattern_that_matches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    touch(dir.path(), &["a.jsonl"]);
    for pattern in [dir.path().join("*.parquet"), dir.path().join("missing.jsonl")] {
        let (file, reason) =
            file_reason(expand_inputs(std::slice::from_ref(&pattern), &out).unwrap_err());
        assert_eq!((file, reason.as_str()), (pattern, "no file matches"));
    }
    let (file, reason) = file_reason(expand_inputs(&[dir.path().to_owned()], &out).unwrap_err());
    assert_eq!(file, dir.path());
    assert!(reason.starts_with("is a directory"), "{reason}");
    // Wildcards in directory parts are literal: there is no directory named `*`.
    let pattern = dir.path().join("*").join("a.jsonl");
    assert!(expand_inputs(&[pattern], &out).is_err());
}

#[test]
fn expand_inputs_refuses_files_of_the_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(data.join("shards")).unwrap();
    touch(&data, &["a.jsonl", "quarantine.jsonl"]);
    touch(&data.join("shards"), &["b.jsonl"]);
    // The output directory as prep leaves it after a run: a wildcard over the inputs
    // would match its quarantine.jsonl, and a rerun would read it back.
    let glob = data.join("*.jsonl");
    let (file, reason) =
        file_reason(expand_inputs(std::slice::from_ref(&glob), &data).unwrap_err());
    let canonical = fs::canonicalize(&data).unwrap();
    assert_eq!(file, glob);
    assert_eq!(
        reason,
        format!(
            "matches 2 files in the output directory {}, whose files prep writes and never \
             reads (a rerun would read its own quarantine.jsonl back); keep the output \
             directory apart from the inputs",
            canonical.display()
        )
    );
    // Named by another path to the same directory, and named file by file.
    let other_path = data.join("shards").join("..");
    let named = data.join("a.jsonl");
    let (file, reason) =
        file_reason(expand_inputs(std::slice::from_ref(&named), &other_path).unwrap_err());
    assert_eq!(file, named);
    assert!(reason.starts_with("is in the output directory"), "{reason}");
    // A subdirectory of the output directory, and a sibling, hold no file prep writes.
    let inner = data.join("shards").join("*.jsonl");
    assert_eq!(expand_inputs(&[inner], &data).unwrap(), [data.join("shards").join("b.jsonl")]);
    assert_eq!(expand_inputs(&[glob], &data.join("shards")).unwrap().len(), 2);
}

#[test]
fn describe_input_hashes_the_contents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.JSONL");
    fs::write(&path, "{\"chosen\": \"a\", \"rejected\": \"b\"}\n").unwrap();
    let input = describe_input(&path).unwrap();
    assert_eq!(input.path, path);
    assert_eq!(input.format, InputFormat::Jsonl);
    assert_eq!(input.bytes, 33);
    // From `sha256sum`.
    assert_eq!(input.sha256, "a000ee11d9cfb0780aa50cde148672f87a6897ff612167290de0614720067bfe");
}

#[test]
fn input_format_comes_from_the_extension() {
    for (name, format) in [
        ("a.parquet", InputFormat::Parquet),
        ("a.arrow", InputFormat::Ipc),
        ("a.Feather", InputFormat::Ipc),
        ("a.ipc", InputFormat::Ipc),
        ("a.json", InputFormat::Json),
        ("a.jsonl", InputFormat::Jsonl),
    ] {
        assert_eq!(InputFormat::of(Path::new(name)).unwrap(), format, "{name}");
    }
    let (file, reason) = file_reason(InputFormat::of(Path::new("data/a.csv")).unwrap_err());
    assert_eq!(file, Path::new("data/a.csv"));
    assert_eq!(
        reason,
        "unknown extension '.csv'; accepted: .parquet, .pq, .arrow, .feather, .ipc, .arrows, \
         .jsonl, .json, .ndjson"
    );
    let (_, reason) = file_reason(InputFormat::of(Path::new("pairs")).unwrap_err());
    assert!(reason.starts_with("no extension; accepted: .parquet"), "{reason}");
}

#[test]
fn column_map_parses_renames() {
    let map = ColumnMap::parse(" chosen = response_a,rejected=response_b ,").unwrap();
    assert_eq!(map.actual("chosen"), Some("response_a"));
    assert_eq!(map.actual("rejected"), Some("response_b"));
    assert_eq!(map.actual("prompt"), Some("prompt"));
    assert_eq!(map.actual("other"), None);
    assert_eq!(map.to_string(), "chosen=response_a,rejected=response_b");
    assert_eq!(ColumnMap::parse(&map.to_string()).unwrap(), map);
    let pairs =
        [("rejected".to_owned(), "response_b".to_owned()), ("chosen".into(), "response_a".into())];
    assert_eq!(ColumnMap::from_pairs(&pairs.into_iter().collect()).unwrap(), map);
    assert_eq!(ColumnMap::parse("").unwrap(), ColumnMap::identity());
}

#[test]
fn column_map_rejects_bad_specs_naming_the_problem() {
    for (spec, expected) in [
        (
            "answer=response_a",
            "unknown column 'answer' (expected one of: prompt, chosen, rejected, score_chosen, \
             score_rejected, id)",
        ),
        ("chosen", "'chosen' is not of the form canonical=actual"),
        ("chosen=", "column 'chosen' is mapped to an empty name"),
        ("chosen=a,chosen=b", "column 'chosen' is mapped twice"),
    ] {
        match ColumnMap::parse(spec).unwrap_err() {
            Error::Config { field, reason } => {
                assert_eq!((field.as_str(), reason.as_str()), ("column_map", expected));
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn input_batches_can_move_to_another_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<PairBatches>();
}
