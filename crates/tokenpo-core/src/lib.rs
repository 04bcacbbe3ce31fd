//! Token-level preparation of preference pairs.
//!
//! Pure Rust, no Python: the `tokenpo-py` crate exposes this to Python over Arrow.
//! - [`diff`]: the token diff between a chosen and a rejected completion (Myers),
//!   for one pair or for whole Arrow columns in parallel.
//! - [`error`]: the one error type, carrying the file, row and field at fault.

#![forbid(unsafe_code)]

pub mod diff;
pub mod error;
pub mod token_lists;

pub use diff::{DiffOptions, DiffStats, TokenDiff, diff_tokens};
pub use error::{Error, Location, Result};
