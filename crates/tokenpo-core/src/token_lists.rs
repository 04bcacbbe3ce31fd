//! Arrow list columns of token ids, viewed as one slice per row without copying.
//!
//! Accepts `list` and `large_list` of `int32`, `uint32` or `int64`, in one or several
//! chunks, sliced or not. Nulls and negative ids are errors that name the row.

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, GenericListArray, OffsetSizeTrait};
use arrow_schema::DataType;

use crate::error::{Error, Location, Result};

/// The token id types a column may hold.
pub trait TokenId: Copy + Eq + Send + Sync + std::fmt::Display {
    /// True when the id cannot be a vocabulary index.
    fn is_negative(self) -> bool;
}

impl TokenId for i32 {
    fn is_negative(self) -> bool {
        self < 0
    }
}

impl TokenId for u32 {
    fn is_negative(self) -> bool {
        false
    }
}

impl TokenId for i64 {
    fn is_negative(self) -> bool {
        self < 0
    }
}

/// The element type of a column of token lists, or `None` when it has no chunks.
pub fn token_value_type(chunks: &[ArrayRef], field: &str) -> Result<Option<DataType>> {
    let Some(first) = chunks.first() else {
        return Ok(None);
    };
    let value_type = match first.data_type() {
        DataType::List(item) | DataType::LargeList(item) => item.data_type().clone(),
        other => return Err(schema_error(field, other)),
    };
    if matches!(value_type, DataType::Int32 | DataType::UInt32 | DataType::Int64) {
        Ok(Some(value_type))
    } else {
        Err(schema_error(field, first.data_type()))
    }
}

/// One slice of token ids per row, across all chunks, in row order. Nulls and negative
/// ids are errors naming the row.
pub fn token_rows<'a, T>(chunks: &'a [ArrayRef], field: &str) -> Result<Vec<&'a [T::Native]>>
where
    T: ArrowPrimitiveType,
    T::Native: TokenId,
{
    let rows = list_rows::<T>(chunks, field)?;
    if let Some((row, position, value)) = first_negative(&rows) {
        let reason = format!("token id {value} at position {position} is negative");
        return Err(Error::InvalidRow { location: Location::row(field, row), reason });
    }
    Ok(rows)
}

/// One slice of values per row of a list column, across all chunks, in row order.
/// A null row or a null value is an error naming the row.
pub fn list_rows<'a, T: ArrowPrimitiveType>(
    chunks: &'a [ArrayRef],
    field: &str,
) -> Result<Vec<&'a [T::Native]>> {
    let mut rows = Vec::with_capacity(chunks.iter().map(Array::len).sum());
    for chunk in chunks {
        let first_row = rows.len();
        match chunk.data_type() {
            DataType::List(_) => push_rows::<i32, T>(chunk.as_list(), first_row, field, &mut rows),
            DataType::LargeList(_) => {
                push_rows::<i64, T>(chunk.as_list(), first_row, field, &mut rows)
            }
            other => Err(schema_error(field, other)),
        }?;
    }
    Ok(rows)
}

fn push_rows<'a, O, T>(
    list: &'a GenericListArray<O>,
    first_row: usize,
    field: &str,
    rows: &mut Vec<&'a [T::Native]>,
) -> Result<()>
where
    O: OffsetSizeTrait,
    T: ArrowPrimitiveType,
{
    if let Some(row) = (0..list.len()).find(|&row| list.is_null(row)) {
        let reason = "is null".to_owned();
        return Err(Error::InvalidRow { location: Location::row(field, first_row + row), reason });
    }
    let values = list
        .values()
        .as_primitive_opt::<T>()
        .ok_or_else(|| schema_error(field, list.data_type()))?;
    let offsets = list.value_offsets();
    if values.null_count() > 0 {
        if let Some(error) = null_token_error(values, offsets, first_row, field) {
            return Err(error);
        }
    }
    let tokens: &'a [T::Native] = values.values();
    rows.extend(offsets.windows(2).map(|ends| &tokens[ends[0].as_usize()..ends[1].as_usize()]));
    Ok(())
}

/// Names the first row that holds a null token. Nulls outside every row's range (in
/// the unused part of a sliced child array) are not an error.
fn null_token_error<O: OffsetSizeTrait>(
    values: &dyn Array,
    offsets: &[O],
    first_row: usize,
    field: &str,
) -> Option<Error> {
    offsets.windows(2).enumerate().find_map(|(row, ends)| {
        let position = (ends[0].as_usize()..ends[1].as_usize()).position(|i| values.is_null(i))?;
        let reason = format!("token at position {position} is null");
        Some(Error::InvalidRow { location: Location::row(field, first_row + row), reason })
    })
}

fn first_negative<T: TokenId>(rows: &[&[T]]) -> Option<(usize, usize, T)> {
    rows.iter().enumerate().find_map(|(row, tokens)| {
        let position = tokens.iter().position(|token| token.is_negative())?;
        Some((row, position, tokens[position]))
    })
}

fn schema_error(field: &str, found: &DataType) -> Error {
    Error::Schema {
        location: Location::field(field),
        expected: "a list or large_list of int32, uint32 or int64 token ids".to_owned(),
        found: found.clone(),
    }
}
