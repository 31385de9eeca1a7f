//! Read-only SQL over the live database and its archive.
//!
//! Two walls, both DuckDB's own: its parser decides what a statement is
//! (only one SELECT runs: `json_serialize_sql` serializes SELECTs and
//! refuses everything else), and once [`Store::lock_down`] has run, DuckDB
//! opens no file but the database's and the archive's, and takes no
//! setting. The statement also runs in a transaction that is rolled back.

use cdktr_log::sql::{SqlColumn, SqlRows, SqlValue};
use duckdb::arrow::array::{Array, AsArray, RecordBatch};
use duckdb::arrow::datatypes::{self, DataType};
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::archive::{sql_string, LINE_COLUMNS};
use crate::error::{Error, Result};
use crate::store::Store;

/// The view of every line, hot and archived, that SQL statements read.
pub const HISTORY_VIEW: &str = "log_history";

impl Store {
    /// Closes the database to the outside, for good: from now on DuckDB
    /// reads and writes no file but the database's own, its spill space
    /// and the archive's directory, loads no extension, and refuses every
    /// `SET`. Call it after the settings and [`open_archive`](Self::open_archive);
    /// it is made again after a reopen.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub fn lock_down(&self) -> Result<()> {
        let dir = self.archive_read().dir.clone();
        let mut sql = String::new();
        if let Some(dir) = dir {
            sql.push_str(&format!("SET allowed_directories = [{}];", sql_string(&dir)));
        }
        // Archived files' footers are read once, not at every query.
        sql.push_str(
            "SET parquet_metadata_cache = true; SET enable_external_access = false; \
             SET allow_community_extensions = false; SET lock_configuration = true;",
        );
        self.set(sql, "closing the database to the outside")
    }

    /// Runs one read-only statement: a `SELECT` (or `FROM`, `WITH`,
    /// `VALUES`, `DESCRIBE`, `SUMMARIZE`, `PIVOT` …) over the tables and
    /// the [`HISTORY_VIEW`] of hot and archived lines. At most `max_rows`
    /// rows and about `max_bytes` of values come back; `truncated` says
    /// when more there were.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for a statement that writes, attaches, copies,
    /// exports, loads, changes a setting or reads a file outside the
    /// archive, and for more than one statement; [`Error::InvalidQuery`]
    /// for one DuckDB cannot parse or bind; [`Error::Db`].
    pub fn sql(&self, text: &str, max_rows: usize, max_bytes: usize) -> Result<SqlRows> {
        let archive = self.archive_read();
        let mut conn = self.conn();
        let parsed: String = conn
            .query_row("SELECT json_serialize_sql(?::VARCHAR)", [text], |r| r.get(0))
            .map_err(Error::db("parsing a statement"))?;
        check(text, &parsed)?;
        conn.ensure_history_view(&archive)?;
        conn.execute_batch("BEGIN TRANSACTION")
            .map_err(Error::db("starting a read-only transaction"))?;
        let result = run(&conn, text, max_rows.max(1), max_bytes);
        let _ = conn.execute_batch("ROLLBACK");
        result
    }
}

/// Decides from DuckDB's parse of `text` whether it may run.
fn check(text: &str, parsed: &str) -> Result<()> {
    let v: serde_json::Value =
        serde_json::from_str(parsed).map_err(|e| Error::InvalidQuery(format!("unreadable parse: {e}")))?;
    if v["error"].as_bool() == Some(true) {
        let message = v["error_message"].as_str().unwrap_or("");
        if message.starts_with("Only SELECT statements") {
            return Err(Error::Forbidden(refusal(text)));
        }
        return Err(Error::InvalidQuery(format!(
            "{}: {message}",
            v["error_type"].as_str().unwrap_or("error")
        )));
    }
    match v["statements"].as_array().map_or(0, Vec::len) {
        0 => Err(Error::InvalidQuery("no statement to run".into())),
        1 => Ok(()),
        n => Err(Error::Forbidden(format!(
            "{n} statements in one request; send one statement at a time"
        ))),
    }
}

/// Why a statement DuckDB parsed as something other than a SELECT is
/// refused, named after its first keyword (comments and strings aside).
fn refusal(text: &str) -> String {
    let words = keywords(text);
    let first = words.first().map(String::as_str).unwrap_or("");
    let verb = if first == "WITH" || first == "EXPLAIN" {
        words
            .iter()
            .find(|w| matches!(w.as_str(), "INSERT" | "UPDATE" | "DELETE" | "COPY"))
            .map_or(first, |w| w.as_str())
    } else {
        first
    };
    let why = match verb {
        "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE" | "MERGE" | "UPSERT" => "it writes rows",
        "CREATE" | "DROP" | "ALTER" | "COMMENT" => "it changes the schema",
        "ATTACH" | "DETACH" | "USE" => "it attaches or switches databases",
        "COPY" | "EXPORT" | "IMPORT" => "it copies data to or from files",
        "INSTALL" | "LOAD" | "FORCE" => "it installs or loads extensions",
        "SET" | "RESET" | "PRAGMA" => "it changes settings",
        "CALL" | "EXECUTE" | "PREPARE" | "DEALLOCATE" => "it calls a procedure or prepared statement",
        "CHECKPOINT" | "VACUUM" | "ANALYZE" => "it is maintenance",
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" => "it controls transactions",
        "EXPLAIN" => "EXPLAIN is not offered",
        _ => "it is not a query",
    };
    format!("{verb} is not read-only ({why}); only one SELECT statement runs here")
}

/// The upper-cased words of `text` outside comments, strings and quoted
/// names.
fn keywords(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    let mut word = String::new();
    while let Some(c) = chars.next() {
        let mut boundary = true;
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '\'' | '"' => {
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
            }
            c if c.is_alphanumeric() || c == '_' => {
                word.extend(c.to_uppercase());
                boundary = false;
            }
            _ => {}
        }
        if boundary && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn run(conn: &duckdb::Connection, text: &str, max_rows: usize, max_bytes: usize) -> Result<SqlRows> {
    let mut stmt = conn.prepare(text).map_err(statement_error)?;
    let stream = stmt.stream_arrow([]).map_err(statement_error)?;
    let schema = stream.get_schema();
    let mut out = SqlRows {
        columns: schema
            .fields()
            .iter()
            .map(|f| SqlColumn {
                name: f.name().clone(),
                type_name: type_name(f.data_type()),
            })
            .collect(),
        rows: Vec::new(),
        truncated: None,
    };
    let mut bytes = 0usize;
    for batch in stream {
        let batch = batch.map_err(statement_error)?;
        if let Some(why) = append(&batch, &mut out.rows, &mut bytes, max_rows, max_bytes)? {
            out.truncated = Some(why);
            break;
        }
    }
    Ok(out)
}

/// DuckDB's refusal to open a file is the outside wall: say so. A file
/// named as a table (`FROM '/etc/passwd'`) is not even looked at: DuckDB
/// then finds no such table, which is said as the refusal it is.
fn statement_error(e: duckdb::Error) -> Error {
    let m = e.to_string();
    let file_as_table = m
        .split("Table with name ")
        .nth(1)
        .and_then(|rest| rest.split(" does not exist").next())
        .is_some_and(|name| name.contains(['/', '\\']) || name.contains('.'));
    if m.contains("Permission Error") || m.contains("disabled by configuration") || file_as_table {
        Error::Forbidden(format!("it reaches outside the database and its archive: {m}"))
    } else if m.contains("Parser Error") || m.contains("Binder Error") || m.contains("Catalog Error") {
        Error::InvalidQuery(m)
    } else {
        Error::Db {
            op: "running a statement",
            source: e,
        }
    }
}

/// Appends a batch's rows; returns why it stopped early, if it did.
fn append(
    b: &RecordBatch,
    rows: &mut Vec<Vec<SqlValue>>,
    bytes: &mut usize,
    max_rows: usize,
    max_bytes: usize,
) -> Result<Option<String>> {
    let columns: Vec<Column<'_>> = b
        .columns()
        .iter()
        .map(|c| Column::new(c.as_ref()))
        .collect::<Result<_>>()?;
    for i in 0..b.num_rows() {
        if rows.len() >= max_rows {
            return Ok(Some(format!(
                "more than {max_rows} rows; add a LIMIT or narrow the query"
            )));
        }
        if *bytes >= max_bytes && !rows.is_empty() {
            return Ok(Some(format!(
                "more than {max_bytes} bytes of values; select fewer columns or rows"
            )));
        }
        let row: Vec<SqlValue> = columns.iter().map(|c| c.value(i)).collect();
        *bytes += row
            .iter()
            .map(|v| match v {
                SqlValue::Text(s) => s.len() + 1,
                _ => 8,
            })
            .sum::<usize>();
        rows.push(row);
    }
    Ok(None)
}

/// A column, read by type.
struct Column<'a> {
    array: &'a dyn Array,
    text: Option<ArrayFormatter<'a>>,
}

impl<'a> Column<'a> {
    fn new(array: &'a dyn Array) -> Result<Column<'a>> {
        let plain = matches!(
            array.data_type(),
            DataType::Null
                | DataType::Boolean
                | DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
                | DataType::Float32
                | DataType::Float64
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
        );
        let text = if plain {
            None
        } else {
            let options = FormatOptions::default().with_null("");
            Some(
                ArrayFormatter::try_new(array, &options)
                    .map_err(|e| Error::InvalidQuery(format!("a column cannot be written out: {e}")))?,
            )
        };
        Ok(Column { array, text })
    }

    fn value(&self, i: usize) -> SqlValue {
        let a = self.array;
        if a.is_null(i) {
            return SqlValue::Null;
        }
        if let Some(f) = &self.text {
            return SqlValue::Text(f.value(i).to_string());
        }
        match a.data_type() {
            DataType::Boolean => SqlValue::Bool(a.as_boolean().value(i)),
            DataType::Int8 => SqlValue::Int(a.as_primitive::<datatypes::Int8Type>().value(i).into()),
            DataType::Int16 => SqlValue::Int(a.as_primitive::<datatypes::Int16Type>().value(i).into()),
            DataType::Int32 => SqlValue::Int(a.as_primitive::<datatypes::Int32Type>().value(i).into()),
            DataType::Int64 => SqlValue::Int(a.as_primitive::<datatypes::Int64Type>().value(i)),
            DataType::UInt8 => SqlValue::Int(a.as_primitive::<datatypes::UInt8Type>().value(i).into()),
            DataType::UInt16 => SqlValue::Int(a.as_primitive::<datatypes::UInt16Type>().value(i).into()),
            DataType::UInt32 => SqlValue::Int(a.as_primitive::<datatypes::UInt32Type>().value(i).into()),
            DataType::UInt64 => {
                let n = a.as_primitive::<datatypes::UInt64Type>().value(i);
                i64::try_from(n).map_or(SqlValue::UInt(n), SqlValue::Int)
            }
            DataType::Float32 => SqlValue::Float(a.as_primitive::<datatypes::Float32Type>().value(i).into()),
            DataType::Float64 => SqlValue::Float(a.as_primitive::<datatypes::Float64Type>().value(i)),
            DataType::Utf8 => SqlValue::Text(a.as_string::<i32>().value(i).to_owned()),
            DataType::LargeUtf8 => SqlValue::Text(a.as_string::<i64>().value(i).to_owned()),
            DataType::Utf8View => SqlValue::Text(a.as_string_view().value(i).to_owned()),
            _ => SqlValue::Null,
        }
    }
}

/// An Arrow type by the name DuckDB gives it.
fn type_name(t: &DataType) -> String {
    match t {
        DataType::Null => "NULL".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => "BLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
            format!("{}[]", type_name(f.data_type()))
        }
        DataType::FixedSizeList(f, n) => format!("{}[{n}]", type_name(f.data_type())),
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {}", f.name(), type_name(f.data_type())))
                .collect();
            format!("STRUCT({})", inner.join(", "))
        }
        DataType::Map(_, _) => "MAP".into(),
        DataType::Dictionary(_, v) => type_name(v),
        other => other.to_string(),
    }
}

impl crate::store::Conn<'_> {
    /// (Re)creates this connection's temporary [`HISTORY_VIEW`] when the
    /// archive changed since it last did.
    fn ensure_history_view(&mut self, archive: &crate::archive::ArchiveState) -> Result<()> {
        if self.history_view() == Some(archive.generation) {
            return Ok(());
        }
        let paths = archive.paths_for(i64::MIN, None);
        let archived = if paths.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = paths.iter().map(|p| sql_string(p)).collect();
            format!(
                " UNION ALL SELECT {LINE_COLUMNS} FROM read_parquet([{}])",
                list.join(", ")
            )
        };
        let sql =
            format!("CREATE OR REPLACE TEMP VIEW {HISTORY_VIEW} AS SELECT {LINE_COLUMNS} FROM logstore{archived}");
        self.execute_batch(&sql)
            .map_err(Error::db("creating the history view"))?;
        self.set_history_view(archive.generation);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{keywords, refusal};

    #[test]
    fn keywords_skip_comments_strings_and_quoted_names() {
        let words = keywords("/* INSERT */ -- DROP\n select 'DELETE' AS \"update\", x FROM t");
        assert_eq!(words, ["SELECT", "AS", "X", "FROM", "T"]);
    }

    #[test]
    fn refusals_name_the_statement_hidden_behind_comments_and_casing() {
        assert!(refusal("-- just a comment\n/* x */ iNsErT INTO t VALUES (1)").starts_with("INSERT is not read-only"));
        assert!(refusal("WITH a AS (SELECT 1) DELETE FROM t").starts_with("DELETE"));
        assert!(refusal("attach 'x.db'").contains("attaches"));
    }
}
