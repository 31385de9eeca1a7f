//! A batch of lines as Arrow columns, in `logstore`'s column order: DuckDB's
//! appender takes them a vector (2,048 rows) at a time, where appending row
//! by row cost a call and three allocations per value.

use std::sync::Arc;

use cdktr_log::Line;
use duckdb::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringBuilder, UInt32Array, UInt64Array};
use duckdb::arrow::datatypes::{DataType, Field, Schema};

/// Rows per record batch: DuckDB's vector size.
pub(super) const CHUNK: usize = 2048;

/// `logstore`'s columns, as stored (`migrations.rs`); the appender matches
/// them by position.
const COLUMNS: [(&str, DataType); 11] = [
    ("workflow_id", DataType::Utf8),
    ("workflow_name", DataType::Utf8),
    ("workflow_instance_id", DataType::Utf8),
    ("task_name", DataType::Utf8),
    ("task_instance_id", DataType::Utf8),
    ("timestamp_ms", DataType::Int64),
    ("level", DataType::Utf8),
    ("payload", DataType::Utf8),
    ("publisher_key", DataType::UInt32),
    ("seq", DataType::UInt64),
    ("line_id", DataType::UInt64),
];

/// The rows of `lines` (each with its publisher's key), numbered from
/// `first_line`.
pub(super) fn logstore(lines: &[Line], keys: &[u32], first_line: u64) -> duckdb::Result<RecordBatch> {
    let n = lines.len();
    let text = |f: fn(&Line) -> &str| {
        let bytes = lines.iter().map(|e| f(e).len()).sum();
        let mut b = StringBuilder::with_capacity(n, bytes);
        for e in lines {
            b.append_value(f(e));
        }
        Arc::new(b.finish()) as ArrayRef
    };
    let columns: Vec<ArrayRef> = vec![
        text(Line::workflow_id),
        text(Line::workflow_name),
        text(Line::workflow_instance_id),
        text(Line::task_name),
        text(Line::task_instance_id),
        Arc::new(Int64Array::from_iter_values(lines.iter().map(|e| e.timestamp_ms))),
        text(|e| e.level.as_str()),
        text(Line::payload),
        Arc::new(UInt32Array::from_iter_values(keys.iter().copied())),
        Arc::new(UInt64Array::from_iter_values(lines.iter().map(|e| e.seq))),
        Arc::new(UInt64Array::from_iter_values(first_line..first_line + n as u64)),
    ];
    let schema = COLUMNS
        .iter()
        .map(|(name, t)| Field::new(*name, t.clone(), false))
        .collect::<Vec<_>>();
    RecordBatch::try_new(Arc::new(Schema::new(schema)), columns)
        .map_err(|e| duckdb::Error::ToSqlConversionFailure(Box::new(e)))
}
