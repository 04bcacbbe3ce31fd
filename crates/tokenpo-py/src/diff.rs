//! `diff_tokens` and `diff_batch`.

use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3_arrow::PyRecordBatch;
use pyo3_arrow::input::AnyArray;
use tokenpo_core::diff::{self, DEFAULT_MAX_EDIT_DISTANCE, DiffOptions};
use tokenpo_core::{Error, Location};

use crate::error::NativeError;

/// The diff of one pair of token sequences.
#[pyclass(frozen, module = "tokenpo._native")]
pub struct TokenDiff {
    inner: diff::TokenDiff,
}

#[pymethods]
impl TokenDiff {
    /// One int per token of `a`: 1 where it lies outside the longest common subsequence.
    #[getter]
    fn a_mask<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.inner.a_mask)
    }

    /// One int per token of `b`: 1 where it lies outside the longest common subsequence.
    #[getter]
    fn b_mask<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.inner.b_mask)
    }

    /// Insertions plus deletions turning `a` into `b` (`len(a) + len(b)` if unaligned).
    #[getter]
    fn edit_distance(&self) -> u32 {
        self.inner.stats.edit_distance
    }

    /// Length of the longest common subsequence (0 if unaligned).
    #[getter]
    fn lcs_len(&self) -> u32 {
        self.inner.stats.lcs_len
    }

    /// Number of leading tokens both sequences share.
    #[getter]
    fn shared_prefix_len(&self) -> u32 {
        self.inner.stats.shared_prefix_len
    }

    /// The edit distance exceeded `max_edit_distance`; every token is marked.
    #[getter]
    fn unaligned(&self) -> bool {
        self.inner.stats.unaligned
    }

    fn __repr__(&self) -> String {
        let stats = &self.inner.stats;
        format!(
            "TokenDiff(edit_distance={}, lcs_len={}, shared_prefix_len={}, unaligned={}, a_mask={:?}, b_mask={:?})",
            stats.edit_distance,
            stats.lcs_len,
            stats.shared_prefix_len,
            if stats.unaligned { "True" } else { "False" },
            self.inner.a_mask,
            self.inner.b_mask,
        )
    }
}

/// Diffs two sequences of token ids.
#[pyfunction]
#[expect(clippy::needless_pass_by_value, reason = "pyo3 extracts arguments as owned values")]
#[pyo3(signature = (a, b, *, max_edit_distance = DEFAULT_MAX_EDIT_DISTANCE))]
pub fn diff_tokens(
    a: Vec<i64>,
    b: Vec<i64>,
    max_edit_distance: u32,
) -> Result<TokenDiff, NativeError> {
    check_non_negative(&a, "a")?;
    check_non_negative(&b, "b")?;
    let inner = diff::diff_tokens(&a, &b, DiffOptions { max_edit_distance });
    Ok(TokenDiff { inner })
}

/// Diffs two pyarrow columns of token lists row by row, in parallel, without the GIL.
#[pyfunction]
#[pyo3(signature = (chosen, rejected, *, max_edit_distance = DEFAULT_MAX_EDIT_DISTANCE))]
pub fn diff_batch(
    py: Python<'_>,
    chosen: AnyArray,
    rejected: AnyArray,
    max_edit_distance: u32,
) -> PyResult<Bound<'_, PyAny>> {
    let (chosen, _) = chosen.into_chunked_array()?.into_inner();
    let (rejected, _) = rejected.into_chunked_array()?.into_inner();
    let options = DiffOptions { max_edit_distance };
    let batch =
        py.detach(|| diff::diff_batch(&chosen, &rejected, options)).map_err(NativeError::from)?;
    PyRecordBatch::new(batch).into_pyarrow(py)
}

fn check_non_negative(tokens: &[i64], field: &str) -> Result<(), Error> {
    match tokens.iter().position(|&token| token < 0) {
        None => Ok(()),
        Some(position) => Err(Error::InvalidRow {
            location: Location::field(field),
            reason: format!("token id {} at position {position} is negative", tokens[position]),
        }),
    }
}
