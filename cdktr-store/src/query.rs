//! QueryLogs: typed log queries, compiled to parameterized SQL.

use cdktr_log::{Level, LogMessage};

pub use cdktr_log::query::{
    Cursor, LevelFilter, LogPage, LogQuery, Order, Origin, Snapshot, DEFAULT_LIMIT, DEFAULT_WINDOW,
};
use duckdb::arrow::array::{Array, AsArray, RecordBatch};
use std::collections::HashMap;

use duckdb::arrow::datatypes::{DataType, Int64Type, UInt32Type, UInt64Type};
use duckdb::types::Value;

use crate::archive::{history_source, ArchiveState};
use crate::error::{Error, Result};
use crate::store::{chrono_now_ms, Store};

/// Compiles a query to SQL text and its parameters, as of `now_ms`. The
/// SQL also selects `rowid`, last, for the page cursor. With `max_bytes`,
/// rows stop once the text of those before them reaches it (the first row
/// always comes).
fn compile(
    q: &LogQuery,
    now_ms: i64,
    max_bytes: Option<usize>,
    archive: &ArchiveState,
) -> Result<(String, Vec<Value>)> {
    let (start, end, limit) = q.resolve(now_ms)?;
    let (filters, mut params) = where_clause(q, start, end)?;
    let source = history_source(archive, start, end);
    let mut sql = format!(
        "SELECT workflow_id, workflow_name, workflow_instance_id, task_name, task_instance_id, \
         timestamp_ms, level, payload, publisher_key, seq, line_id AS row_n FROM {source} WHERE {filters}"
    );
    let (cmp, dir) = match q.order {
        Order::OldestFirst => (">", "ASC"),
        Order::NewestFirst => ("<", "DESC"),
    };
    if let Some(after) = q.after {
        sql.push_str(&format!(
            " AND (timestamp_ms {cmp} ? OR (timestamp_ms = ? AND line_id {cmp} ?))"
        ));
        params.extend([
            Value::BigInt(after.timestamp_ms),
            Value::BigInt(after.timestamp_ms),
            Value::BigInt(after.row),
        ]);
    }
    let order = format!(" ORDER BY timestamp_ms {dir}, row_n {dir}");
    sql.push_str(&order);
    sql.push_str(" LIMIT ?");
    params.push(Value::UBigInt(limit as u64));
    if let Some(max) = max_bytes {
        // Sizes are summed over the limited rows only, never the whole table.
        sql = format!(
            "SELECT * EXCLUDE (bytes_before) FROM ( \
                 SELECT *, count(*) OVER () AS limited_n, sum(strlen(payload) + strlen(workflow_id) + strlen(workflow_name) \
                              + strlen(workflow_instance_id) + strlen(task_name) + strlen(task_instance_id)) \
                          OVER (ORDER BY timestamp_ms {dir}, row_n {dir} \
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS bytes_before \
                 FROM ({sql})) \
             WHERE coalesce(bytes_before, 0) < ?{order}"
        );
        params.push(Value::UBigInt(max as u64));
    }
    Ok((sql, params))
}

/// The filters of `q` (everything but order, limit and cursor) as a
/// WHERE clause and its parameters.
fn where_clause(q: &LogQuery, start: i64, end: Option<i64>) -> Result<(String, Vec<Value>)> {
    let mut sql = String::from("timestamp_ms >= ?");
    let mut params = vec![Value::BigInt(start)];
    if let Some(end) = end {
        sql.push_str(" AND timestamp_ms < ?");
        params.push(Value::BigInt(end));
    }
    for (column, value) in [
        ("workflow_id", &q.workflow_id),
        ("workflow_instance_id", &q.workflow_instance_id),
        ("task_name", &q.task_name),
        ("task_instance_id", &q.task_instance_id),
    ] {
        if let Some(v) = value {
            sql.push_str(" AND ");
            sql.push_str(column);
            sql.push_str(" = ?");
            params.push(Value::Text(v.clone()));
        }
    }
    if let Some(filter) = &q.levels {
        let levels = filter.levels().map_err(|e| Error::InvalidQuery(e.to_string()))?;
        sql.push_str(" AND level IN (");
        for (i, l) in levels.iter().enumerate() {
            sql.push_str(if i == 0 { "?" } else { ", ?" });
            params.push(Value::Text(l.as_str().into()));
        }
        sql.push(')');
    }
    if let Some(text) = &q.payload_contains {
        // strpos is literal: no LIKE wildcards to escape.
        sql.push_str(" AND strpos(payload, ?) > 0");
        params.push(Value::Text(text.clone()));
    }
    // Lines are numbered in the order they were stored.
    if let Some(row) = q.as_of {
        sql.push_str(" AND line_id <= ?");
        params.push(Value::BigInt(row));
    }
    if let Some(row) = q.stored_after {
        sql.push_str(" AND line_id > ?");
        params.push(Value::BigInt(row));
    }
    Ok((sql, params))
}

/// `SELECT count(*)` of the rows `q` matches, whatever its limit.
fn compile_count(q: &LogQuery, now_ms: i64, archive: &ArchiveState) -> Result<(String, Vec<Value>)> {
    let (start, end, _) = q.resolve(now_ms).map_err(|e| Error::InvalidQuery(e.to_string()))?;
    let (filters, params) = where_clause(q, start, end)?;
    let source = history_source(archive, start, end);
    Ok((format!("SELECT count(*) FROM {source} WHERE {filters}"), params))
}

impl Store {
    /// Runs a log query.
    ///
    /// Rows still pending in a [`Persister`](crate::Persister) are not in
    /// the database yet; call its `flush_now` first where freshness matters
    /// (the principal does, for every query it serves).
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] for a query that cannot be answered as stated
    /// (start after end, limit 0, no level); [`Error::Db`].
    pub fn query_logs(&self, query: &LogQuery) -> Result<Vec<LogMessage>> {
        Ok(self.run(query, None)?.lines)
    }

    /// How many stored lines `query` matches (its limit, order and cursor
    /// aside).
    ///
    /// # Errors
    /// As [`query_logs`](Self::query_logs).
    pub fn count_logs(&self, query: &LogQuery) -> Result<u64> {
        let archive = self.archive_read();
        let (sql, params) = compile_count(query, chrono_now_ms(), &archive)?;
        let conn = self.conn();
        conn.prepare_cached(&sql)
            .and_then(|mut s| s.query_row(duckdb::params_from_iter(params), |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(Error::db("counting logs"))
    }

    /// Completes a snapshot pinned at `row` by
    /// [`Persister::pin`](crate::Persister::pin): per publisher, the
    /// highest number among the stored lines `query` matches (its limit,
    /// order, cursor and `as_of` aside). A follower drops a live line of
    /// publisher `p` numbered at or below `persisted[p]`: it matches the
    /// query and was stored, so the history has it.
    ///
    /// # Errors
    /// As [`query_logs`](Self::query_logs).
    pub fn snapshot(&self, query: &LogQuery, row: i64) -> Result<Snapshot> {
        let q = LogQuery {
            as_of: Some(row),
            ..query.clone()
        };
        let (start, end, _) = q.resolve(chrono_now_ms())?;
        let (filters, params) = where_clause(&q, start, end)?;
        let archive = self.archive_read();
        let source = history_source(&archive, start, end);
        let sql = format!(
            "SELECT publisher_key, max(seq) FROM {source} WHERE {filters} AND publisher_key IS NOT NULL \
             GROUP BY publisher_key"
        );
        let op = "reading a snapshot";
        let marks: Vec<(u32, u64)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&sql).map_err(Error::db(op))?;
            let rows = stmt
                .query_map(duckdb::params_from_iter(params), |r| {
                    Ok((r.get::<_, u32>(0)?, r.get::<_, u64>(1)?))
                })
                .map_err(Error::db(op))?;
            rows.collect::<duckdb::Result<_>>().map_err(Error::db(op))?
        };
        let keys: Vec<u32> = marks.iter().map(|m| m.0).collect();
        let ids = self.publisher_ids(&keys)?;
        let persisted = marks
            .into_iter()
            .filter_map(|(k, seq)| Some((ids.get(&k)?.clone(), seq)))
            .collect();
        Ok(Snapshot { row, persisted })
    }

    /// Runs a log query for one page: at most the query's limit in lines,
    /// and no more lines once `max_bytes` of text is reached (one line
    /// always comes). `next` is set when more lines may follow; pass it as
    /// the query's `after` to continue. Rows that arrive meanwhile with a
    /// timestamp before the cursor are not seen by later pages.
    ///
    /// # Errors
    /// As [`query_logs`](Self::query_logs).
    pub fn query_page(&self, query: &LogQuery, max_bytes: usize) -> Result<LogPage> {
        self.run(query, Some(max_bytes))
    }

    fn run(&self, query: &LogQuery, max_bytes: Option<usize>) -> Result<LogPage> {
        // Held until the rows are read: the archive does not change under
        // the query (a move commits and renames under the write lock).
        let archive = self.archive_read();
        let (sql, params) = compile(query, chrono_now_ms(), max_bytes, &archive)?;
        let conn = self.conn();
        let op = "querying logs";
        let mut stmt = conn.prepare_cached(&sql).map_err(Error::db(op))?;
        let batches: Vec<RecordBatch> = stmt
            .query_arrow(duckdb::params_from_iter(params))
            .map_err(Error::db(op))?
            .collect();
        let n = batches.iter().map(RecordBatch::num_rows).sum();
        let mut page = LogPage {
            lines: Vec::with_capacity(n),
            origins: Vec::with_capacity(n),
            next: None,
        };
        let (mut last, mut limited) = (None, 0);
        let mut keys: Vec<u32> = Vec::new();
        for b in &batches {
            if let Some(c) = b.columns().get(8).and_then(|c| c.as_primitive_opt::<UInt32Type>()) {
                keys.extend(c.iter().flatten());
            }
        }
        keys.sort_unstable();
        keys.dedup();
        drop(stmt);
        drop(conn);
        drop(archive);
        let ids = self.publisher_ids(&keys)?;
        for b in &batches {
            if let Some((cursor, n)) = rows_from_batch(b, &ids, &mut page)? {
                (last, limited) = (Some(cursor), n);
            }
        }
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        // Full, or cut short by the byte cap: more may follow.
        let more = page.lines.len() >= limit || limited > page.lines.len();
        page.next = if more { last } else { None };
        Ok(page)
    }
}

/// Appends a batch's rows; returns the cursor of its last row and, when
/// the byte cap applied, how many rows the limit alone would have given.
fn rows_from_batch(b: &RecordBatch, ids: &HashMap<u32, String>, out: &mut LogPage) -> Result<Option<(Cursor, usize)>> {
    let text = |i: usize| -> Result<Vec<String>> { strings(b.column(i).as_ref()) };
    let (wid, wname, wiid, tname, tiid) = (text(0)?, text(1)?, text(2)?, text(3)?, text(4)?);
    let ts = b
        .column(5)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| Error::InvalidQuery("timestamp_ms is not BIGINT".into()))?;
    let (level, payload) = (text(6)?, text(7)?);
    let publisher = b
        .column(8)
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| Error::InvalidQuery("publisher_key is not UINTEGER".into()))?;
    let seq = b
        .column(9)
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| Error::InvalidQuery("seq is not UBIGINT".into()))?;
    for i in 0..b.num_rows() {
        let id = (!publisher.is_null(i) && !seq.is_null(i))
            .then(|| ids.get(&publisher.value(i)))
            .flatten();
        out.origins.push(id.map(|id| Origin {
            publisher_id: id.clone(),
            seq: seq.value(i),
        }));
    }
    let row_n = b
        .column(10)
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| Error::InvalidQuery("line_id is not UBIGINT".into()))?;
    let rows = wid
        .into_iter()
        .zip(wname)
        .zip(wiid)
        .zip(tname)
        .zip(tiid)
        .zip(level)
        .zip(payload)
        .enumerate();
    for (
        i,
        ((((((workflow_id, workflow_name), workflow_instance_id), task_name), task_instance_id), level), payload),
    ) in rows
    {
        out.lines.push(LogMessage {
            workflow_id,
            workflow_name,
            workflow_instance_id,
            task_name,
            task_instance_id,
            timestamp_ms: ts.value(i),
            // Only this crate writes the table, always with canonical names;
            // a row written by hand with another name reads as INFO.
            level: level.parse().unwrap_or(Level::Info),
            payload,
        });
    }
    let n = b.num_rows();
    let limited = match b.columns().get(11).and_then(|c| c.as_primitive_opt::<Int64Type>()) {
        Some(c) if n > 0 => c.value(0) as usize,
        _ => 0,
    };
    Ok((n > 0).then(|| {
        let cursor = Cursor {
            timestamp_ms: ts.value(n - 1),
            row: row_n.value(n - 1) as i64,
        };
        (cursor, limited)
    }))
}

/// A string column as owned strings, whichever Arrow string layout DuckDB
/// chose.
pub(crate) fn strings(a: &dyn Array) -> Result<Vec<String>> {
    let v: Vec<String> = match a.data_type() {
        DataType::Utf8 => a
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap_or_default().to_owned())
            .collect(),
        DataType::LargeUtf8 => a
            .as_string::<i64>()
            .iter()
            .map(|s| s.unwrap_or_default().to_owned())
            .collect(),
        DataType::Utf8View => a
            .as_string_view()
            .iter()
            .map(|s| s.unwrap_or_default().to_owned())
            .collect(),
        DataType::Dictionary(_, _) => {
            let cast = duckdb::arrow::compute::cast(a, &DataType::Utf8)
                .map_err(|e| Error::InvalidQuery(format!("unexpected column type: {e}")))?;
            return strings(cast.as_ref());
        }
        other => return Err(Error::InvalidQuery(format!("unexpected column type {other}"))),
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_the_last_24_hours_and_1000_rows() {
        let (sql, params) = compile(&LogQuery::default(), 100_000_000, None, &ArchiveState::default()).unwrap();
        assert!(sql.ends_with("ORDER BY timestamp_ms ASC, row_n ASC LIMIT ?"), "{sql}");
        assert_eq!(
            params,
            vec![Value::BigInt(100_000_000 - 86_400_000), Value::UBigInt(1000)]
        );
    }

    #[test]
    fn user_strings_never_reach_the_sql_text() {
        let evil = "'; DROP TABLE logstore; --".to_string();
        let q = LogQuery {
            workflow_id: Some(evil.clone()),
            workflow_instance_id: Some(evil.clone()),
            task_name: Some(evil.clone()),
            task_instance_id: Some(evil.clone()),
            payload_contains: Some(evil.clone()),
            ..Default::default()
        };
        let (sql, params) = compile(&q, 0, Some(10), &ArchiveState::default()).unwrap();
        assert!(!sql.contains("DROP"), "{sql}");
        assert_eq!(params.iter().filter(|p| **p == Value::Text(evil.clone())).count(), 5);
    }

    #[test]
    fn invalid_queries_are_typed_errors() {
        let q = LogQuery {
            limit: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            compile(&q, 0, None, &ArchiveState::default()),
            Err(Error::InvalidQuery(_))
        ));
    }
}
