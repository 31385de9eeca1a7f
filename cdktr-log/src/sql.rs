//! The result of a read-only SQL statement run by the principal
//! ([`crate::api::Request::Sql`]): column names and types, rows of plain
//! values, and whether the caps cut it short.

use serde::{Deserialize, Serialize};

/// Most rows one statement returns, whatever the request asks.
pub const MAX_SQL_ROWS: usize = 10_000;
/// A result stops adding rows once its values hold this many bytes.
pub const MAX_SQL_BYTES: usize = 8 << 20;

/// A statement's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlRows {
    /// The columns, in order.
    pub columns: Vec<SqlColumn>,
    /// The rows, each with one value per column.
    pub rows: Vec<Vec<SqlValue>>,
    /// Set when rows were left out: why (the row or byte cap).
    #[serde(default)]
    pub truncated: Option<String>,
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlColumn {
    /// Its name.
    pub name: String,
    /// Its type, as DuckDB names it (`BIGINT`, `VARCHAR`, `TIMESTAMP`, …).
    #[serde(rename = "type")]
    pub type_name: String,
}

/// One value. Numbers, booleans, strings and NULL travel as themselves;
/// every other type (dates, timestamps, decimals, lists, structs, blobs)
/// as its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// A BOOLEAN.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer too large for `Int`.
    UInt(u64),
    /// A FLOAT or DOUBLE.
    Float(f64),
    /// Text: a VARCHAR, or any other type written out.
    Text(String),
}

impl SqlValue {
    /// The value as text, for tables and CSV; NULL is empty.
    pub fn to_text(&self) -> String {
        match self {
            SqlValue::Null => String::new(),
            SqlValue::Bool(b) => b.to_string(),
            SqlValue::Int(n) => n.to_string(),
            SqlValue::UInt(n) => n.to_string(),
            SqlValue::Float(f) => f.to_string(),
            SqlValue::Text(s) => s.clone(),
        }
    }
}
