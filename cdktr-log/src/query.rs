//! QueryLogs: the typed query the store answers and the principal's API
//! carries. The store compiles it to parameterized SQL; nothing in it is
//! ever formatted into SQL text.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::message::{Level, LogMessage, MessageRef};

/// How far back a query looks when it names no start time.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Rows returned when a query names no limit.
pub const DEFAULT_LIMIT: usize = 1000;

/// Which levels a query matches. On the wire: `{"at_least": "WARN"}` or
/// `{"any_of": ["WARN", "ERROR"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelFilter {
    /// This level and every more severe one.
    AtLeast(Level),
    /// Exactly these levels.
    AnyOf(Vec<Level>),
}

impl LevelFilter {
    /// The levels matched, least severe first.
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] for an empty set.
    pub fn levels(&self) -> Result<Vec<Level>> {
        match self {
            LevelFilter::AtLeast(min) => Ok(Level::ALL.into_iter().filter(|l| l >= min).collect()),
            LevelFilter::AnyOf(set) if set.is_empty() => Err(Error::InvalidQuery("the set of levels is empty".into())),
            LevelFilter::AnyOf(set) => Ok(set.clone()),
        }
    }
}

/// Result order, by timestamp (ties in insertion order). On the wire:
/// `"oldest_first"` or `"newest_first"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Oldest first (the default).
    #[default]
    OldestFirst,
    /// Newest first.
    NewestFirst,
}

/// Where a page of results ended: pass it back as [`LogQuery::after`] for
/// the next page. Opaque to clients; it names the last row returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The last row's timestamp.
    pub timestamp_ms: i64,
    /// The last row's line number (`line_id`), which orders rows with
    /// that timestamp.
    pub row: i64,
}

/// A stored line's identity: the publisher that sent it and its number in
/// that publisher's stream. The live stream carries the same pair
/// ([`Envelope`](crate::wire::Envelope)), which is how a follower tells a
/// live line it has already read from history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    /// The publisher's id.
    pub publisher_id: String,
    /// The line's number in its publisher's stream, from 1.
    pub seq: u64,
}

/// The stored history pinned at one moment, for reading it page by page
/// while lines keep arriving (see `Request::Snapshot`).
///
/// Everything the principal had received when the snapshot was taken is
/// in it. Pass `row` as [`LogQuery::as_of`] and every page sees exactly
/// the lines stored then; a line of publisher `p` numbered above
/// `persisted[p]` was not stored then, and so is in no page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The number (`line_id`) of the newest stored line when it was taken
    /// (-1 for none).
    pub row: i64,
    /// Per publisher, the highest number stored then: each publisher's
    /// stored lines are the first `persisted[p]` of its stream (lines
    /// declared lost aside).
    pub persisted: BTreeMap<String, u64>,
}

/// One page of a log query's results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// The lines, in the query's order.
    pub lines: Vec<LogMessage>,
    /// Each line's identity, in the same order; `None` for lines stored
    /// before the schema kept it (version 3).
    #[serde(default)]
    pub origins: Vec<Option<Origin>>,
    /// Set when more lines may follow: the query's `after` for the next
    /// page.
    pub next: Option<Cursor>,
}

impl LogPage {
    /// The page of `lines`, owned: each line's strings copied, and its
    /// origin.
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = PageLine<'a>>, next: Option<Cursor>) -> LogPage {
        let lines = lines.into_iter();
        let n = lines.size_hint().0;
        let (mut owned, mut origins) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for l in lines {
            owned.push(l.message.to_message());
            origins.push(l.to_origin());
        }
        LogPage {
            lines: owned,
            origins,
            next,
        }
    }

    /// Its lines, each with its origin, borrowed.
    pub fn lines_with_origins(&self) -> Vec<PageLine<'_>> {
        PageLine::zip(
            self.lines.iter().map(MessageRef::from),
            (self.origins.iter()).map(|o| o.as_ref().map(|o| (o.publisher_id.as_str(), o.seq))),
        )
    }
}

/// A page's line and its origin, borrowed from wherever the rows are
/// (DuckDB's result, a [`LogPage`]). A `Logs` reply is written from these
/// ([`Response::logs_bytes`](crate::api::Response::logs_bytes)), so a
/// server sends a page without owning every string of it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLine<'a> {
    /// The line.
    pub message: MessageRef<'a>,
    /// The line's [`Origin`]: its publisher's id and its `seq`.
    pub origin: Option<(&'a str, u64)>,
}

impl<'a> PageLine<'a> {
    /// `message` with `origin`.
    pub fn new(message: &'a LogMessage, origin: Option<&'a Origin>) -> PageLine<'a> {
        PageLine {
            message: message.into(),
            origin: origin.map(|o| (o.publisher_id.as_str(), o.seq)),
        }
    }

    /// Each line with its origin, by position; lines past the origins (a
    /// principal before schema version 3 sent none) have none.
    pub(crate) fn zip(
        lines: impl IntoIterator<Item = MessageRef<'a>>,
        origins: impl IntoIterator<Item = Option<(&'a str, u64)>>,
    ) -> Vec<PageLine<'a>> {
        let mut origins = origins.into_iter();
        (lines.into_iter())
            .map(|message| PageLine {
                message,
                origin: origins.next().flatten(),
            })
            .collect()
    }

    /// The origin, owned.
    pub fn to_origin(&self) -> Option<Origin> {
        self.origin.map(|(id, seq)| Origin {
            publisher_id: id.to_owned(),
            seq,
        })
    }
}

/// A query over the stored logs. Every filter is optional; unset filters
/// match everything. On the wire it is a map with these field names; a
/// field this version does not know is an error, so that a misspelt filter
/// is never silently ignored.
///
/// ```
/// use cdktr_log::query::{LevelFilter, LogQuery, Order};
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    /// Continue after this row: the `next` of the previous page.
    pub after: Option<Cursor>,
    /// Only lines stored when the [`Snapshot`] with this `row` was taken,
    /// so that paging meets no line stored since. (Left out of the request
    /// when unset, so that principals from before it read the query.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<i64>,
    /// Only lines stored after the [`Snapshot`] with this `row` was taken:
    /// what a follower missed while the principal was away.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_after: Option<i64>,
}

impl LogQuery {
    /// Parses level names (as [`Level`]'s `FromStr` accepts them) into an
    /// [`LevelFilter::AnyOf`].
    ///
    /// # Errors
    /// [`Error::UnknownLevel`] naming the first unknown level.
    pub fn levels_from<S: AsRef<str>>(names: &[S]) -> Result<LevelFilter> {
        let levels = names
            .iter()
            .map(|n| n.as_ref().parse::<Level>())
            .collect::<Result<Vec<_>>>()?;
        Ok(LevelFilter::AnyOf(levels))
    }

    /// The effective time range and limit, checked: `(start_ms, end_ms,
    /// limit)` as of `now_ms`.
    ///
    /// # Errors
    /// [`Error::InvalidQuery`] when the start is after the end, the limit is
    /// 0, or the level set is empty.
    pub fn resolve(&self, now_ms: i64) -> Result<(i64, Option<i64>, usize)> {
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
        if let Some(l) = &self.levels {
            l.levels()?;
        }
        Ok((start, self.end_ms, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_the_last_24_hours_and_1000_rows() {
        assert_eq!(
            LogQuery::default().resolve(100_000_000).unwrap(),
            (100_000_000 - 86_400_000, None, 1000)
        );
        let q = LogQuery {
            end_ms: Some(90_000_000),
            ..Default::default()
        };
        assert_eq!(q.resolve(100_000_000).unwrap().0, 90_000_000 - 86_400_000);
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
            assert!(matches!(q.resolve(0), Err(Error::InvalidQuery(_))), "{q:?}");
        }
        assert!(matches!(LogQuery::levels_from(&["warn", "loud"]), Err(Error::UnknownLevel(m)) if m == "loud"));
        assert_eq!(
            LogQuery::levels_from(&["warning", "ERROR"]).unwrap(),
            LevelFilter::AnyOf(vec![Level::Warn, Level::Error])
        );
    }

    #[test]
    fn a_misspelt_filter_is_an_error_not_ignored() {
        let bytes = rmp_serde::to_vec_named(&serde_json::json!({"workflow": "etl"})).unwrap();
        assert!(rmp_serde::from_slice::<LogQuery>(&bytes).is_err());
        let bytes = rmp_serde::to_vec_named(&serde_json::json!({"workflow_id": "etl", "levels": {"at_least": "WARN"}}))
            .unwrap();
        let q: LogQuery = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(q.workflow_id.as_deref(), Some("etl"));
        assert_eq!(q.levels, Some(LevelFilter::AtLeast(Level::Warn)));
    }
}
