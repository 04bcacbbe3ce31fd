//! Token-level preparation of preference pairs.
//!
//! Pure Rust, no Python: the `tokenpo-py` crate exposes this to Python over Arrow.
//! - [`diff`]: the token diff between a chosen and a rejected completion (Myers),
//!   for one pair or for whole Arrow columns in parallel.
//! - [`importance`]: per-token importance weights (JSON token classes, rarity, diff).
//! - [`io`]: reading raw pair files; writing prepared shards and their manifest.
//! - [`pair`]: a raw preference pair and the record of a quarantined row.
//! - [`tokenize`], [`prepare`], [`difficulty`]: the per-pair steps of `prep`.
//! - [`pipeline`]: `prep` itself, streaming and resumable.
//! - [`error`]: the one error type, carrying the file, row and field at fault.

#![forbid(unsafe_code)]

pub mod diff;
pub mod difficulty;
pub mod error;
pub mod importance;
pub mod io;
pub mod pair;
pub mod pipeline;
pub mod prepare;
pub mod token_lists;
pub mod tokenize;

pub use diff::{DiffOptions, DiffStats, TokenDiff, diff_tokens};
pub use error::{Error, Location, Result};
pub use pipeline::{PrepConfig, Progress, prep};
