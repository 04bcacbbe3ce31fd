//! Reading the pair columns of Arrow record batches (from parquet or Arrow IPC).
//!
//! Which types a column may have is decided in one place, [`ColumnArray::new`]: the
//! schema check runs it on an empty array of each column's type, so a file is rejected
//! up front exactly when its batches could not be read.

use std::ops::Range;
use std::str::Utf8Error;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BinaryViewArray, Float64Array, GenericListArray,
    LargeBinaryArray, LargeStringArray, OffsetSizeTrait, RecordBatch, StringArray, StringViewArray,
    StructArray, new_empty_array,
};
use arrow_buffer::{ArrowNativeType, NullBuffer, OffsetBuffer};
use arrow_cast::cast;
use arrow_schema::{DataType, Schema};

use super::columns::{Column, ColumnMap};
use super::row::{Reason, RowFields, Slot, malformed_message, message, not_utf8};
use crate::pair::{Message, Turns};

/// The columns of a file that prep reads, found and type-checked against its schema.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Each column present in the file, with its name there.
    columns: Vec<(Column, String)>,
    /// Their indices in the file's schema, ascending (the columns to decode).
    pub projection: Vec<usize>,
}

impl Plan {
    /// Finds the columns in `schema`. The error says which required column is missing
    /// (listing the columns found) or which column has a type prep cannot read.
    pub(super) fn new(schema: &Schema, map: &ColumnMap) -> Result<Self, String> {
        let mut columns = Vec::new();
        let mut projection = Vec::new();
        for column in Column::ALL {
            let name = map.name_of(column);
            let Ok(index) = schema.index_of(name) else {
                if column.is_required() {
                    return Err(missing_column(schema, &map.describe(column)));
                }
                continue;
            };
            let data_type = schema.field(index).data_type();
            if ColumnArray::new(column, &new_empty_array(data_type)).is_none() {
                return Err(format!(
                    "column {} has type {data_type}, expected {}",
                    map.describe(column),
                    expected(column)
                ));
            }
            columns.push((column, name.to_owned()));
            projection.push(index);
        }
        projection.sort_unstable();
        projection.dedup();
        Ok(Self { columns, projection })
    }

    /// The names, in the file, of the columns to read.
    pub(super) fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|(_, name)| name.clone()).collect()
    }
}

fn missing_column(schema: &Schema, column: &str) -> String {
    let found: Vec<&str> = schema.fields().iter().map(|field| field.name().as_str()).collect();
    format!("required column {column} missing (columns found: {})", found.join(", "))
}

fn expected(column: Column) -> &'static str {
    match column {
        Column::Prompt | Column::Chosen | Column::Rejected => {
            "a string or a list of struct<role: string, content: string>"
        }
        Column::ScoreChosen | Column::ScoreRejected => "an integer or floating-point number",
        Column::Id => "a string or an integer",
    }
}

/// The pair columns of one record batch, ready to read row by row.
#[derive(Debug)]
pub(super) struct BatchColumns {
    columns: Vec<(Column, ColumnArray)>,
    rows: usize,
}

impl BatchColumns {
    /// Reads the planned columns of `batch`. Fails only when the batch does not have the
    /// schema the plan was made from.
    pub(super) fn new(batch: &RecordBatch, plan: &Plan) -> Result<Self, String> {
        let columns = plan
            .columns
            .iter()
            .map(|(column, name)| {
                batch
                    .column_by_name(name)
                    .and_then(|array| ColumnArray::new(*column, array))
                    .map(|array| (*column, array))
                    .ok_or_else(|| format!("a record batch lacks a readable column '{name}'"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { columns, rows: batch.num_rows() })
    }

    /// Rows in the batch.
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// The fields of row `row` of the batch.
    pub(super) fn row(&self, row: usize) -> ArrowRow<'_> {
        ArrowRow { columns: self, row }
    }

    fn get(&self, column: Column) -> Option<&ColumnArray> {
        self.columns.iter().find(|(candidate, _)| *candidate == column).map(|(_, array)| array)
    }
}

/// One row of a [`BatchColumns`].
pub(super) struct ArrowRow<'a> {
    columns: &'a BatchColumns,
    row: usize,
}

impl RowFields for ArrowRow<'_> {
    fn turns(&self, column: Column) -> Result<Slot<Turns>, Reason> {
        match self.columns.get(column) {
            Some(ColumnArray::Text(text)) => {
                text_slot(text, self.row, column).map(|slot| slot.map(Turns::Text))
            }
            Some(ColumnArray::Messages(messages)) => {
                Ok(messages.get(self.row, column)?.map(Turns::Messages))
            }
            Some(ColumnArray::Number(_)) | None => Ok(Slot::Missing),
        }
    }

    fn score(&self, column: Column) -> Result<Slot<f64>, Reason> {
        Ok(match self.columns.get(column) {
            Some(ColumnArray::Number(numbers)) if numbers.is_valid(self.row) => {
                Slot::Value(numbers.value(self.row))
            }
            Some(_) => Slot::Null,
            None => Slot::Missing,
        })
    }

    fn id(&self) -> Result<Slot<String>, Reason> {
        match self.columns.get(Column::Id) {
            Some(ColumnArray::Text(text)) => text_slot(text, self.row, Column::Id),
            Some(_) | None => Ok(Slot::Missing),
        }
    }
}

fn text_slot(text: &TextArray, row: usize, column: Column) -> Result<Slot<String>, Reason> {
    Ok(text.text(row, column)?.map_or(Slot::Null, |value| Slot::Value(value.to_owned())))
}

/// A column in the form rows are read from.
#[derive(Debug)]
enum ColumnArray {
    Text(TextArray),
    Messages(Box<MessagesArray>),
    Number(Float64Array),
}

impl ColumnArray {
    /// `array` as `column` is read, or `None` when its type does not fit the column.
    /// Integer ids become text, scores become `f64`; all-null columns are accepted.
    fn new(column: Column, array: &ArrayRef) -> Option<Self> {
        match column {
            Column::Prompt | Column::Chosen | Column::Rejected => {
                TextArray::new(array).map(Self::Text).or_else(|| {
                    MessagesArray::new(array).map(|messages| Self::Messages(Box::new(messages)))
                })
            }
            Column::ScoreChosen | Column::ScoreRejected => {
                if !(array.data_type().is_numeric() || array.data_type().is_null()) {
                    return None;
                }
                let numbers = cast(array, &DataType::Float64).ok()?;
                Some(Self::Number(numbers.as_primitive_opt::<Float64Type>()?.clone()))
            }
            Column::Id if array.data_type().is_integer() => {
                let text = cast(array, &DataType::Utf8).ok()?;
                TextArray::new(&text).map(Self::Text)
            }
            Column::Id => TextArray::new(array).map(Self::Text),
        }
    }
}

/// A column of strings, or of bytes that should be UTF-8.
#[derive(Debug)]
enum TextArray {
    Utf8(StringArray),
    LargeUtf8(LargeStringArray),
    Utf8View(StringViewArray),
    Binary(BinaryArray),
    LargeBinary(LargeBinaryArray),
    BinaryView(BinaryViewArray),
}

impl TextArray {
    /// `array` as text: string and binary types, dictionaries of them, all-null columns.
    fn new(array: &ArrayRef) -> Option<Self> {
        match array.data_type() {
            DataType::Utf8 => Some(Self::Utf8(array.as_string().clone())),
            DataType::LargeUtf8 => Some(Self::LargeUtf8(array.as_string().clone())),
            DataType::Utf8View => Some(Self::Utf8View(array.as_string_view().clone())),
            DataType::Binary => Some(Self::Binary(array.as_binary().clone())),
            DataType::LargeBinary => Some(Self::LargeBinary(array.as_binary().clone())),
            DataType::BinaryView => Some(Self::BinaryView(array.as_binary_view().clone())),
            DataType::Dictionary(_, values) if is_text(values) => {
                Self::new(&cast(array, values).ok()?)
            }
            DataType::Null => Self::new(&cast(array, &DataType::Utf8).ok()?),
            _ => None,
        }
    }

    /// Row `row` of `column`: `None` when null, the reason when it is not UTF-8.
    fn text(&self, row: usize, column: Column) -> Result<Option<&str>, Reason> {
        self.get(row).transpose().map_err(|_| not_utf8(column))
    }

    fn get(&self, row: usize) -> Option<Result<&str, Utf8Error>> {
        match self {
            Self::Utf8(array) => array.is_valid(row).then(|| Ok(array.value(row))),
            Self::LargeUtf8(array) => array.is_valid(row).then(|| Ok(array.value(row))),
            Self::Utf8View(array) => array.is_valid(row).then(|| Ok(array.value(row))),
            Self::Binary(array) => {
                array.is_valid(row).then(|| std::str::from_utf8(array.value(row)))
            }
            Self::LargeBinary(array) => {
                array.is_valid(row).then(|| std::str::from_utf8(array.value(row)))
            }
            Self::BinaryView(array) => {
                array.is_valid(row).then(|| std::str::from_utf8(array.value(row)))
            }
        }
    }
}

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

/// A column of `list<struct<role, content>>` (other struct fields are ignored).
#[derive(Debug)]
struct MessagesArray {
    lists: Option<NullBuffer>,
    offsets: Offsets,
    messages: Option<NullBuffer>,
    role: TextArray,
    content: TextArray,
}

#[derive(Debug)]
enum Offsets {
    Small(OffsetBuffer<i32>),
    Large(OffsetBuffer<i64>),
}

impl MessagesArray {
    fn new(array: &ArrayRef) -> Option<Self> {
        match array.data_type() {
            DataType::List(_) => {
                let list = array.as_list::<i32>();
                Self::of_list(list, Offsets::Small(list.offsets().clone()))
            }
            DataType::LargeList(_) => {
                let list = array.as_list::<i64>();
                Self::of_list(list, Offsets::Large(list.offsets().clone()))
            }
            _ => None,
        }
    }

    fn of_list<O: OffsetSizeTrait>(list: &GenericListArray<O>, offsets: Offsets) -> Option<Self> {
        let messages: &StructArray = list.values().as_struct_opt()?;
        Some(Self {
            lists: list.nulls().cloned(),
            offsets,
            messages: messages.nulls().cloned(),
            role: TextArray::new(messages.column_by_name("role")?)?,
            content: TextArray::new(messages.column_by_name("content")?)?,
        })
    }

    fn get(&self, row: usize, column: Column) -> Result<Slot<Vec<Message>>, Reason> {
        if self.lists.as_ref().is_some_and(|nulls| nulls.is_null(row)) {
            return Ok(Slot::Null);
        }
        self.range(row)
            .map(|index| {
                let is_null = self.messages.as_ref().is_some_and(|nulls| nulls.is_null(index));
                let role = self.role.text(index, column)?;
                let content = self.content.text(index, column)?;
                message(role, content).filter(|_| !is_null).ok_or_else(|| malformed_message(column))
            })
            .collect::<Result<_, _>>()
            .map(Slot::Value)
    }

    fn range(&self, row: usize) -> Range<usize> {
        match &self.offsets {
            Offsets::Small(offsets) => offsets[row].as_usize()..offsets[row + 1].as_usize(),
            Offsets::Large(offsets) => offsets[row].as_usize()..offsets[row + 1].as_usize(),
        }
    }
}
