//! QueryLogs: typed log queries, compiled to parameterized SQL.

use std::ops::Range;

use cdktr_log::LogMessage;

pub use cdktr_log::query::{
    Cursor, LevelFilter, LogPage, LogQuery, Order, Origin, PageLine, Snapshot, DEFAULT_LIMIT, DEFAULT_WINDOW,
};
use duckdb::arrow::array::RecordBatch;
use duckdb::types::Value;
use duckdb::Connection;

mod page;
pub use page::{Lines, StoredPage};

use crate::archive::{history_source, ArchiveState, LINE_COLUMNS};
use crate::error::{Error, Result};
use crate::migrations::INSTANCE_BLOCK_LINES;
use crate::store::{chrono_now_ms, Store};

/// Compiles a query to SQL text and its parameters, as of `now_ms`; `hot`
/// is where its instance's lines are in `logstore`
/// ([`Store::instance_lines`]). The SQL also selects `publisher_key`,
/// `seq` and `line_id`, last, for the origins and the page cursor.
fn compile(q: &LogQuery, now_ms: i64, archive: &ArchiveState, hot: Option<Range<u64>>) -> Result<(String, Vec<Value>)> {
    let (start, end, limit) = q.resolve(now_ms)?;
    let (matched, mut params) = matching(q, start, end, archive, hot)?;
    let mut sql = format!(
        "SELECT workflow_id, workflow_name, workflow_instance_id, task_name, task_instance_id, \
         timestamp_ms, level, payload, publisher_key, seq, line_id FROM {matched}"
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
    // The byte cap is applied while reading the rows: a window over the
    // limited rows cost 3 ms of a 4 ms query (issue 15).
    sql.push_str(&format!(" ORDER BY timestamp_ms {dir}, line_id {dir} LIMIT ?"));
    params.push(Value::UBigInt(limit as u64));
    Ok((sql, params))
}

/// `<source> WHERE <filters>`: the lines `q` matches, stamped in
/// `[start, end)`, read from [`source`]; and the parameters of that SQL.
fn matching(
    q: &LogQuery,
    start: i64,
    end: Option<i64>,
    archive: &ArchiveState,
    hot: Option<Range<u64>>,
) -> Result<(String, Vec<Value>)> {
    let (source, mut params) = source(archive, start, end, hot);
    let (filters, filter_params) = where_clause(q, start, end)?;
    params.extend(filter_params);
    Ok((format!("{source} WHERE {filters}"), params))
}

/// The lines a query reads, and the parameters of that SQL: with `hot`,
/// only those line numbers of `logstore` (the archive's files are read
/// whole: lines archived before schema version 5 are not indexed).
fn source(archive: &ArchiveState, start: i64, end: Option<i64>, hot: Option<Range<u64>>) -> (String, Vec<Value>) {
    match hot {
        None => (history_source(archive, start, end, "logstore"), Vec::new()),
        Some(lines) => {
            let hot = format!("(SELECT {LINE_COLUMNS} FROM logstore WHERE line_id >= ? AND line_id < ?)");
            let params = vec![Value::UBigInt(lines.start), Value::UBigInt(lines.end)];
            (history_source(archive, start, end, &hot), params)
        }
    }
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
fn compile_count(
    q: &LogQuery,
    now_ms: i64,
    archive: &ArchiveState,
    hot: Option<Range<u64>>,
) -> Result<(String, Vec<Value>)> {
    let (start, end, _) = q.resolve(now_ms).map_err(|e| Error::InvalidQuery(e.to_string()))?;
    let (matched, params) = matching(q, start, end, archive, hot)?;
    Ok((format!("SELECT count(*) FROM {matched}"), params))
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
        Ok(self.run(query, None)?.lines().map(|l| l.message.to_message()).collect())
    }

    /// How many stored lines `query` matches (its limit, order and cursor
    /// aside).
    ///
    /// # Errors
    /// As [`query_logs`](Self::query_logs).
    pub fn count_logs(&self, query: &LogQuery) -> Result<u64> {
        let archive = self.archive_read();
        let conn = self.conn();
        let hot = instance_lines(&conn, query)?;
        let (sql, params) = compile_count(query, chrono_now_ms(), &archive, hot)?;
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
        let archive = self.archive_read();
        let op = "reading a snapshot";
        let marks: Vec<(u32, u64)> = {
            let conn = self.conn();
            let (matched, params) = matching(&q, start, end, &archive, instance_lines(&conn, &q)?)?;
            let sql = format!(
                "SELECT publisher_key, max(seq) FROM {matched} AND publisher_key IS NOT NULL GROUP BY publisher_key"
            );
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
        Ok(self.run(query, Some(max_bytes))?.to_page())
    }

    /// As [`query_page`](Self::query_page), the lines left where DuckDB
    /// put them: read them borrowed, with no string copied
    /// ([`StoredPage::lines`]).
    ///
    /// # Errors
    /// As [`query_logs`](Self::query_logs).
    pub fn read_page(&self, query: &LogQuery, max_bytes: usize) -> Result<StoredPage> {
        self.run(query, Some(max_bytes))
    }

    fn run(&self, query: &LogQuery, max_bytes: Option<usize>) -> Result<StoredPage> {
        // Held until the rows are read: the archive does not change under
        // the query (a move commits and renames under the write lock).
        let archive = self.archive_read();
        let conn = self.conn();
        let hot = instance_lines(&conn, query)?;
        let (sql, params) = compile(query, chrono_now_ms(), &archive, hot)?;
        let op = "querying logs";
        let mut stmt = conn.prepare_cached(&sql).map_err(Error::db(op))?;
        let batches: Vec<RecordBatch> = stmt
            .query_arrow(duckdb::params_from_iter(params))
            .map_err(Error::db(op))?
            .collect();
        drop(stmt);
        drop(conn);
        drop(archive);
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        StoredPage::new(&batches, limit, max_bytes.unwrap_or(usize::MAX), |keys| {
            self.publisher_ids(keys)
        })
    }
}

/// For a query that names an instance, the line numbers of `logstore`
/// that can hold its lines: the blocks `instance_block` lists (an empty
/// range for none). Lines stored after this look are in later blocks, so
/// a query bounded by it answers as of a moment before or at it.
fn instance_lines(conn: &Connection, q: &LogQuery) -> Result<Option<Range<u64>>> {
    let Some(instance) = &q.workflow_instance_id else {
        return Ok(None);
    };
    let (first, last) = conn
        .prepare_cached("SELECT min(block), max(block) FROM instance_block WHERE workflow_instance_id = ?")
        .and_then(|mut s| {
            s.query_row([instance], |r| {
                Ok((r.get::<_, Option<u64>>(0)?, r.get::<_, Option<u64>>(1)?))
            })
        })
        .map_err(Error::db("finding an instance's lines"))?;
    Ok(Some(match (first, last) {
        (Some(first), Some(last)) => first * INSTANCE_BLOCK_LINES..(last + 1) * INSTANCE_BLOCK_LINES,
        _ => 0..0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_the_last_24_hours_and_1000_rows() {
        let (sql, params) = compile(&LogQuery::default(), 100_000_000, &ArchiveState::default(), None).unwrap();
        assert!(sql.ends_with("ORDER BY timestamp_ms ASC, line_id ASC LIMIT ?"), "{sql}");
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
        let (sql, params) = compile(&q, 0, &ArchiveState::default(), None).unwrap();
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
            compile(&q, 0, &ArchiveState::default(), None),
            Err(Error::InvalidQuery(_))
        ));
    }
}
