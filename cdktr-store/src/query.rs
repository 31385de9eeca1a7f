//! QueryLogs: typed log queries, compiled to parameterized SQL.

use std::time::Duration;

use cdktr_log::{Level, LogMessage};
use duckdb::arrow::array::{Array, AsArray, RecordBatch};
use duckdb::arrow::datatypes::{DataType, Int64Type};
use duckdb::types::Value;

use crate::error::{Error, Result};
use crate::store::{chrono_now_ms, Store};

/// How far back a query looks when it names no start time.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Rows returned when a query names no limit.
pub const DEFAULT_LIMIT: usize = 1000;

/// Which levels a query matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelFilter {
    /// This level and every more severe one.
    AtLeast(Level),
    /// Exactly these levels.
    AnyOf(Vec<Level>),
}

/// Result order, by timestamp (ties in insertion order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (the default).
    #[default]
    OldestFirst,
    /// Newest first.
    NewestFirst,
}

/// A query over `logstore`. Every filter is optional; unset filters match
/// everything. No string in it is ever formatted into SQL text: each is a
/// bound parameter.
///
/// ```
/// use cdktr_store::{LogQuery, LevelFilter, Order};
/// use cdktr_log::Level;
///
/// let q = LogQuery {
///     workflow_instance_id: Some("etl-20261127-1".into()),
///     levels: Some(LevelFilter::AtLeast(Level::Warn)),
///     order: Order::NewestFirst,
///     limit: Some(50),
///     ..LogQuery::default()
/// };
/// # let _ = q;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// First millisecond included. Default: 24 hours before `end_ms`, or
    /// before now when there is no end either.
    pub start_ms: Option<i64>,
    /// First millisecond excluded. Default: no upper bound.
    pub end_ms: Option<i64>,
    /// Exact workflow id.
    pub workflow_id: Option<String>,
    /// Exact workflow instance id.
    pub workflow_instance_id: Option<String>,
    /// Exact task name.
    pub task_name: Option<String>,
    /// Exact task instance id.
    pub task_instance_id: Option<String>,
    /// Levels to match.
    pub levels: Option<LevelFilter>,
    /// Matches payloads containing this text, literally (case-sensitive; no
    /// wildcards).
    pub payload_contains: Option<String>,
    /// Most rows returned (default 1000; must not be 0).
    pub limit: Option<usize>,
    /// Result order.
    pub order: Order,
}

impl LogQuery {
    /// Parses level names (as [`Level`]'s `FromStr` accepts them) into an
    /// [`LevelFilter::AnyOf`].
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] naming the first unknown level.
    pub fn levels_from<S: AsRef<str>>(names: &[S]) -> Result<LevelFilter> {
        let levels = names
            .iter()
            .map(|n| {
                n.as_ref()
                    .parse::<Level>()
                    .map_err(|e| Error::InvalidQuery(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LevelFilter::AnyOf(levels))
    }

    /// The SQL text and its parameters.
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] when the start is after the end, the limit is
    /// 0, or the level set is empty.
    pub fn compile(&self) -> Result<(String, Vec<Value>)> {
        self.compile_at(chrono_now_ms())
    }

    fn compile_at(&self, now_ms: i64) -> Result<(String, Vec<Value>)> {
        let window = DEFAULT_WINDOW.as_millis() as i64;
        let start = self
            .start_ms
            .unwrap_or_else(|| self.end_ms.unwrap_or(now_ms).saturating_sub(window));
        if let Some(end) = self.end_ms {
            if start > end {
                return Err(Error::InvalidQuery(format!("start {start} is after end {end}")));
            }
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 {
            return Err(Error::InvalidQuery("limit must be at least 1".into()));
        }
        let mut sql = String::from(
            "SELECT workflow_id, workflow_name, workflow_instance_id, task_name, task_instance_id, \
             timestamp_ms, level, payload FROM logstore WHERE timestamp_ms >= ?",
        );
        let mut params = vec![Value::BigInt(start)];
        if let Some(end) = self.end_ms {
            sql.push_str(" AND timestamp_ms < ?");
            params.push(Value::BigInt(end));
        }
        for (column, value) in [
            ("workflow_id", &self.workflow_id),
            ("workflow_instance_id", &self.workflow_instance_id),
            ("task_name", &self.task_name),
            ("task_instance_id", &self.task_instance_id),
        ] {
            if let Some(v) = value {
                sql.push_str(" AND ");
                sql.push_str(column);
                sql.push_str(" = ?");
                params.push(Value::Text(v.clone()));
            }
        }
        if let Some(filter) = &self.levels {
            let levels: Vec<Level> = match filter {
                LevelFilter::AtLeast(min) => Level::ALL.into_iter().filter(|l| l >= min).collect(),
                LevelFilter::AnyOf(set) if set.is_empty() => {
                    return Err(Error::InvalidQuery("the set of levels is empty".into()))
                }
                LevelFilter::AnyOf(set) => set.clone(),
            };
            sql.push_str(" AND level IN (");
            for (i, l) in levels.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                params.push(Value::Text(l.as_str().into()));
            }
            sql.push(')');
        }
        if let Some(text) = &self.payload_contains {
            // strpos is literal: no LIKE wildcards to escape.
            sql.push_str(" AND strpos(payload, ?) > 0");
            params.push(Value::Text(text.clone()));
        }
        sql.push_str(match self.order {
            Order::OldestFirst => " ORDER BY timestamp_ms ASC, rowid ASC LIMIT ?",
            Order::NewestFirst => " ORDER BY timestamp_ms DESC, rowid DESC LIMIT ?",
        });
        params.push(Value::UBigInt(limit as u64));
        Ok((sql, params))
    }
}

impl Store {
    /// Runs a log query.
    ///
    /// Rows still pending in a [`Persister`](crate::Persister) are not in
    /// the database yet; call its `flush_now` first where freshness matters
    /// (the principal does, for every query it serves).
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] as [`LogQuery::compile`]; [`Error::Db`].
    pub fn query_logs(&self, query: &LogQuery) -> Result<Vec<LogMessage>> {
        let (sql, params) = query.compile()?;
        let conn = self.conn();
        let op = "querying logs";
        let mut stmt = conn.prepare_cached(&sql).map_err(Error::db(op))?;
        let batches: Vec<RecordBatch> = stmt
            .query_arrow(duckdb::params_from_iter(params))
            .map_err(Error::db(op))?
            .collect();
        let mut out = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
        for b in &batches {
            rows_from_batch(b, &mut out)?;
        }
        Ok(out)
    }
}

fn rows_from_batch(b: &RecordBatch, out: &mut Vec<LogMessage>) -> Result<()> {
    let text = |i: usize| -> Result<Vec<String>> { strings(b.column(i).as_ref()) };
    let (wid, wname, wiid, tname, tiid) = (text(0)?, text(1)?, text(2)?, text(3)?, text(4)?);
    let ts = b
        .column(5)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| Error::InvalidQuery("timestamp_ms is not BIGINT".into()))?;
    let (level, payload) = (text(6)?, text(7)?);
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
        out.push(LogMessage {
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
    Ok(())
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
        let (sql, params) = LogQuery::default().compile_at(100_000_000).unwrap();
        assert!(sql.ends_with("ORDER BY timestamp_ms ASC, rowid ASC LIMIT ?"), "{sql}");
        assert_eq!(
            params,
            vec![Value::BigInt(100_000_000 - 86_400_000), Value::UBigInt(1000)]
        );
        let q = LogQuery {
            end_ms: Some(90_000_000),
            ..Default::default()
        };
        let (_, params) = q.compile_at(100_000_000).unwrap();
        assert_eq!(params[0], Value::BigInt(90_000_000 - 86_400_000));
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
        let (sql, params) = q.compile().unwrap();
        assert!(!sql.contains("DROP"), "{sql}");
        assert_eq!(params.iter().filter(|p| **p == Value::Text(evil.clone())).count(), 5);
    }

    #[test]
    fn invalid_queries_are_typed_errors() {
        let bad = [
            LogQuery {
                start_ms: Some(10),
                end_ms: Some(9),
                ..Default::default()
            },
            LogQuery {
                limit: Some(0),
                ..Default::default()
            },
            LogQuery {
                levels: Some(LevelFilter::AnyOf(vec![])),
                ..Default::default()
            },
        ];
        for q in bad {
            assert!(matches!(q.compile(), Err(Error::InvalidQuery(_))), "{q:?}");
        }
        assert!(matches!(LogQuery::levels_from(&["warn", "loud"]), Err(Error::InvalidQuery(m)) if m.contains("loud")));
        assert_eq!(
            LogQuery::levels_from(&["warning", "ERROR"]).unwrap(),
            LevelFilter::AnyOf(vec![Level::Warn, Level::Error])
        );
    }
}
