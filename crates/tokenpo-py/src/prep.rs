//! `prep`: the data stage, run without the GIL, reporting progress to a Python callable.

use std::path::PathBuf;

use pyo3::prelude::*;
use tokenpo_core::importance::ImportanceConfig;
use tokenpo_core::pipeline::{PrepConfig, Progress, prep as run_prep};
use tokenpo_core::{Error, Result};

use crate::error::NativeError;

/// Prepares raw pair files into shards; returns the manifest as JSON.
///
/// `config_json` holds the fields of the core `PrepConfig` (missing ones take their
/// defaults). `progress`, when given, is called as `progress(kind, a, b, c)` with
/// `("tokenized", rows, pairs, quarantined)` or `("written", shards, total, 0)`; an
/// exception it raises (Ctrl-C included) stops the run and is re-raised here.
#[pyfunction]
#[pyo3(signature = (inputs, tokenizer, out, config_json, progress = None))]
#[expect(clippy::needless_pass_by_value, reason = "pyo3 extracts arguments as owned values")]
pub fn prep(
    py: Python<'_>,
    inputs: Vec<PathBuf>,
    tokenizer: PathBuf,
    out: PathBuf,
    config_json: &str,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let config: PrepConfig = serde_json::from_str(config_json).map_err(|error| {
        NativeError(Error::Config { field: "config".into(), reason: error.to_string() })
    })?;
    let mut callback_error: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut report = |event: Progress| -> Result<()> {
            let Some(callback) = &progress else { return Ok(()) };
            let args = match event {
                Progress::Tokenized { rows, pairs, quarantined } => {
                    ("tokenized", rows, pairs, quarantined)
                }
                Progress::Written { shards, total } => ("written", shards as u64, total as u64, 0),
            };
            Python::attach(|py| {
                py.check_signals().and_then(|()| callback.call1(py, args).map(drop))
            })
            .map_err(|error| {
                callback_error = Some(error);
                Error::Config { field: "progress".into(), reason: "interrupted".into() }
            })
        };
        run_prep(&inputs, &tokenizer, &out, &config, &mut report)
    });
    if let Some(error) = callback_error {
        return Err(error);
    }
    let manifest = result.map_err(NativeError::from)?;
    serde_json::to_string(&manifest).map_err(|error| {
        NativeError(Error::Config { field: "manifest".into(), reason: error.to_string() }).into()
    })
}

/// The importance coefficients of a named preset, as JSON: `default` or `tabpo_authors`.
#[pyfunction]
pub fn importance_preset(name: &str) -> Result<String, NativeError> {
    let preset = match name {
        "default" => ImportanceConfig::default(),
        "tabpo_authors" => ImportanceConfig::tabpo_authors(),
        other => {
            return Err(NativeError(Error::Config {
                field: "importance".into(),
                reason: format!("unknown preset {other:?}; choose default or tabpo_authors"),
            }));
        }
    };
    serde_json::to_string(&preset).map_err(|error| {
        NativeError(Error::Config { field: "importance".into(), reason: error.to_string() })
    })
}

/// The readable name of a token class of the `*_class` columns, for a run's importance
/// coefficients as JSON (the manifest's `config.importance`).
#[pyfunction]
pub fn token_class_name(token_class: u8, importance_json: &str) -> Result<String, NativeError> {
    let config: ImportanceConfig = serde_json::from_str(importance_json).map_err(|error| {
        NativeError(Error::Config { field: "importance".into(), reason: error.to_string() })
    })?;
    Ok(tokenpo_core::importance::class_name(token_class, &config))
}
