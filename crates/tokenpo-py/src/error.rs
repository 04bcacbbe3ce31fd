//! Core errors as the exceptions of `tokenpo.exceptions`.
//!
//! The exception classes are defined in Python (one hierarchy, documented there) and
//! looked up here, so both sides raise the same types.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokenpo_core::{Error, Location};

/// A core error on its way to Python.
pub struct NativeError(pub Error);

impl From<Error> for NativeError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl From<NativeError> for PyErr {
    fn from(NativeError(error): NativeError) -> Self {
        Python::attach(|py| match to_python(py, &error) {
            Ok(exception) => exception,
            // tokenpo.exceptions failed to import: still say what went wrong.
            Err(import_error) => PyRuntimeError::new_err(format!("{error} ({import_error})")),
        })
    }
}

fn to_python(py: Python<'_>, error: &Error) -> PyResult<PyErr> {
    let kwargs = PyDict::new(py);
    let class_name = match error {
        Error::InvalidRow { location, .. } => {
            set_location(&kwargs, location)?;
            "InvalidRowError"
        }
        Error::Schema { location, .. } => {
            set_location(&kwargs, location)?;
            "SchemaError"
        }
        Error::LengthMismatch { .. } => "LengthMismatchError",
        Error::File { file, .. } => {
            kwargs.set_item("file", file.display().to_string())?;
            "InputError"
        }
        Error::Tokenizer { file, .. } => {
            kwargs.set_item("file", file.display().to_string())?;
            "TokenizerError"
        }
        Error::NoPairs { rows_read, quarantine, .. } => {
            kwargs.set_item("rows_read", *rows_read)?;
            kwargs.set_item("quarantine", quarantine.display().to_string())?;
            "NoPairsError"
        }
        Error::Config { .. } | Error::TooManyTokens { .. } => "ConfigError",
        Error::Arrow { .. } => "TokenpoError",
    };
    let class = py.import("tokenpo.exceptions")?.getattr(class_name)?;
    let exception = class.call((error.to_string(),), Some(&kwargs))?;
    Ok(PyErr::from_value(exception))
}

fn set_location(kwargs: &Bound<'_, PyDict>, location: &Location) -> PyResult<()> {
    let Location { file, row, field } = location;
    kwargs.set_item("file", file.as_ref().map(|path| path.display().to_string()))?;
    kwargs.set_item("row", *row)?;
    kwargs.set_item("field", field.as_deref())
}
