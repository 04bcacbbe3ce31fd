//! The diff of whole Arrow columns of chosen and rejected token lists, in parallel.

use std::sync::{Arc, LazyLock};

use arrow_array::types::{Int32Type, Int64Type, UInt32Type};
use arrow_array::{
    ArrayRef, ArrowPrimitiveType, BooleanArray, ListArray, RecordBatch, UInt8Array, UInt32Array,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;

use super::{DiffOptions, DiffScratch, DiffStats, diff_into};
use crate::error::{Error, Location, Result};
use crate::token_lists::{TokenId, token_rows, token_value_type};

const CHOSEN: &str = "chosen";
const REJECTED: &str = "rejected";
/// Rows per rayon task: one pair takes about a microsecond, so batch them.
const MIN_ROWS_PER_TASK: usize = 256;

/// The schema of [`diff_batch`]'s output.
#[must_use]
pub fn diff_output_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mask = DataType::List(Arc::new(Field::new_list_field(DataType::UInt8, true)));
        Arc::new(Schema::new(vec![
            Field::new("chosen_diff", mask.clone(), false),
            Field::new("rejected_diff", mask, false),
            Field::new("edit_distance", DataType::UInt32, false),
            Field::new("lcs_len", DataType::UInt32, false),
            Field::new("shared_prefix_len", DataType::UInt32, false),
            Field::new("unaligned", DataType::Boolean, false),
        ]))
    });
    SCHEMA.clone()
}

/// Diffs row `i` of `chosen` against row `i` of `rejected` for every row, on all cores.
///
/// Each side is a column of token lists in one or more chunks (see [`crate::token_lists`]);
/// the chunk boundaries of the two sides need not agree. Returns one row per pair with
/// the schema of [`diff_output_schema`].
pub fn diff_batch(
    chosen: &[ArrayRef],
    rejected: &[ArrayRef],
    options: DiffOptions,
) -> Result<RecordBatch> {
    let chosen_rows: usize = chosen.iter().map(|chunk| chunk.len()).sum();
    let rejected_rows: usize = rejected.iter().map(|chunk| chunk.len()).sum();
    if chosen_rows != rejected_rows {
        return Err(Error::LengthMismatch {
            left_field: CHOSEN.to_owned(),
            left_rows: chosen_rows,
            right_field: REJECTED.to_owned(),
            right_rows: rejected_rows,
        });
    }
    let chosen_type = token_value_type(chosen, CHOSEN)?;
    let rejected_type = token_value_type(rejected, REJECTED)?;
    match (chosen_type, rejected_type) {
        (None, _) | (_, None) => build_output::<u32>(&[], &[], Vec::new(), Vec::new(), &[]),
        (Some(a), Some(b)) if a == b => match a {
            DataType::Int32 => diff_rows::<Int32Type>(chosen, rejected, options),
            DataType::UInt32 => diff_rows::<UInt32Type>(chosen, rejected, options),
            _ => diff_rows::<Int64Type>(chosen, rejected, options),
        },
        // The two sides hold different id types: widen both to int64 (a copy, but rare).
        (Some(_), Some(_)) => {
            let chosen = widen_to_int64(chosen, CHOSEN)?;
            let rejected = widen_to_int64(rejected, REJECTED)?;
            diff_rows::<Int64Type>(&chosen, &rejected, options)
        }
    }
}

fn diff_rows<T>(
    chosen: &[ArrayRef],
    rejected: &[ArrayRef],
    options: DiffOptions,
) -> Result<RecordBatch>
where
    T: ArrowPrimitiveType,
    T::Native: TokenId,
{
    let chosen_rows = token_rows::<T>(chosen, CHOSEN)?;
    let rejected_rows = token_rows::<T>(rejected, REJECTED)?;
    let mut chosen_masks = vec![0u8; total_tokens(&chosen_rows, CHOSEN)?];
    let mut rejected_masks = vec![0u8; total_tokens(&rejected_rows, REJECTED)?];
    let mut jobs: Vec<_> = chosen_rows
        .iter()
        .zip(&rejected_rows)
        .zip(
            split_rows(&mut chosen_masks, &chosen_rows)
                .zip(split_rows(&mut rejected_masks, &rejected_rows)),
        )
        .collect();
    let stats: Vec<DiffStats> = jobs
        .par_iter_mut()
        .with_min_len(MIN_ROWS_PER_TASK)
        .map_init(
            DiffScratch::default,
            |scratch, ((chosen, rejected), (chosen_mask, rejected_mask))| {
                diff_into(chosen, rejected, chosen_mask, rejected_mask, options, scratch)
            },
        )
        .collect();
    drop(jobs);
    build_output(&chosen_rows, &rejected_rows, chosen_masks, rejected_masks, &stats)
}

/// Output list offsets are i32 (`list<uint8>`), so a column may hold at most `i32::MAX` tokens.
fn total_tokens<T>(rows: &[&[T]], field: &str) -> Result<usize> {
    let total: usize = rows.iter().map(|row| row.len()).sum();
    if i32::try_from(total).is_err() {
        return Err(Error::InvalidRow {
            location: Location::field(field),
            reason: format!(
                "{total} tokens in one batch exceed the 2^31 - 1 a list<uint8> holds; pass smaller batches"
            ),
        });
    }
    Ok(total)
}

/// Cuts one flat mask buffer into a mutable slice per row, so threads write in place.
fn split_rows<'m, T>(mut masks: &'m mut [u8], rows: &[&[T]]) -> impl Iterator<Item = &'m mut [u8]> {
    let lengths: Vec<usize> = rows.iter().map(|row| row.len()).collect();
    lengths.into_iter().map(move |length| {
        let (row, rest) = std::mem::take(&mut masks).split_at_mut(length);
        masks = rest;
        row
    })
}

fn build_output<T>(
    chosen_rows: &[&[T]],
    rejected_rows: &[&[T]],
    chosen_masks: Vec<u8>,
    rejected_masks: Vec<u8>,
    stats: &[DiffStats],
) -> Result<RecordBatch> {
    let mask_column = |rows: &[&[T]], masks: Vec<u8>| -> ArrayRef {
        let offsets = OffsetBuffer::<i32>::from_lengths(rows.iter().map(|row| row.len()));
        let item = Arc::new(Field::new_list_field(DataType::UInt8, true));
        Arc::new(ListArray::new(item, offsets, Arc::new(UInt8Array::from(masks)), None))
    };
    let figure = |pick: fn(&DiffStats) -> u32| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(stats.iter().map(pick)))
    };
    let columns = vec![
        mask_column(chosen_rows, chosen_masks),
        mask_column(rejected_rows, rejected_masks),
        figure(|s| s.edit_distance),
        figure(|s| s.lcs_len),
        figure(|s| s.shared_prefix_len),
        Arc::new(stats.iter().map(|s| Some(s.unaligned)).collect::<BooleanArray>()),
    ];
    RecordBatch::try_new(diff_output_schema(), columns)
        .map_err(|source| Error::Arrow { location: Location::default(), source })
}

fn widen_to_int64(chunks: &[ArrayRef], field: &str) -> Result<Vec<ArrayRef>> {
    let target = DataType::LargeList(Arc::new(Field::new_list_field(DataType::Int64, true)));
    chunks
        .iter()
        .map(|chunk| {
            arrow_cast::cast(chunk, &target)
                .map_err(|source| Error::Arrow { location: Location::field(field), source })
        })
        .collect()
}
