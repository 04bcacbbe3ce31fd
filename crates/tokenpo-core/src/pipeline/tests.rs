//! Tests of whole runs: what a run without a single pair leaves behind and says.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{PrepConfig, prep};
use crate::error::Error;
use crate::tokenize::tests_template::{config, model_dir};

fn run(inputs: &[PathBuf], model: &Path, out: &Path) -> crate::error::Result<()> {
    prep(inputs, model, out, &PrepConfig::default(), &mut |_| Ok(())).map(drop)
}

#[test]
fn a_run_whose_rows_are_all_quarantined_is_an_error_that_keeps_them() {
    let model = model_dir(&[("tokenizer_config.json", &config(&json!({})))]);
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.jsonl");
    let second = dir.path().join("b.jsonl");
    fs::write(&first, "{\"chosen\": \"a\", \"rejected\": \"a\"}\nnot json\n").unwrap();
    fs::write(&second, "{\"chosen\": null, \"rejected\": \"b\"}\n").unwrap();
    let out = dir.path().join("out");
    let error = run(&[first.clone(), second.clone()], model.path(), &out).unwrap_err();
    let quarantine = out.join("quarantine.jsonl");
    let Error::NoPairs { rows_read, files, quarantine: named, .. } = &error else {
        panic!("expected no pairs, got {error:?}");
    };
    assert_eq!((*rows_read, files, named), (3, &vec![first.clone(), second.clone()], &quarantine));
    assert_eq!(
        error.to_string(),
        format!(
            "no pairs to prepare: all 3 rows read from {}, {} were quarantined (chosen and \
             rejected are identical after tokenization: 1; chosen is null: 1; line is not \
             valid JSON: 1); {} lists each row with its reason",
            first.display(),
            second.display(),
            quarantine.display()
        )
    );
    let records: Vec<serde_json::Value> = fs::read_to_string(&quarantine)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let rows: Vec<(String, u64)> = records
        .iter()
        .map(|record| {
            (record["file"].as_str().unwrap().to_owned(), record["row"].as_u64().unwrap())
        })
        .collect();
    let name = |path: &Path| path.display().to_string();
    assert_eq!(rows, [(name(&first), 0), (name(&first), 1), (name(&second), 0)]);
    // No manifest: the output is not taken for finished, and a rerun says the same.
    assert!(!out.join("manifest.json").exists());
    let again = run(&[first, second], model.path(), &out).unwrap_err();
    assert_eq!(again.to_string(), error.to_string());
}

#[test]
fn a_run_without_rows_is_an_error_naming_the_files() {
    let model = model_dir(&[("tokenizer_config.json", &config(&json!({})))]);
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jsonl");
    fs::write(&empty, "\n\n").unwrap();
    let array = dir.path().join("empty.json");
    fs::write(&array, "[]").unwrap();
    let error = run(&[empty.clone(), array.clone()], model.path(), &dir.path().join("out"));
    let error = error.unwrap_err();
    assert!(matches!(error, Error::NoPairs { rows_read: 0, .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "no pairs to prepare: the input files hold no rows ({}, {})",
            array.display(),
            empty.display()
        )
    );
}
