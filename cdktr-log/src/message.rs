//! The log line and its severity.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Severity of a log line, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Step-by-step detail, normally off.
    Trace,
    /// Detail useful while debugging.
    Debug,
    /// Normal progress (a task's stdout, by default).
    Info,
    /// Something unexpected that the task survived (a task's stderr, by default).
    Warn,
    /// A failure.
    Error,
}

impl Level {
    /// All levels, least severe first.
    pub const ALL: [Level; 5] = [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error];

    /// The canonical upper-case name, as written on the wire and in the store.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Level {
    type Err = Error;

    /// Accepts the canonical names and common spellings (`warning`, `err`,
    /// `information`), in any case, ignoring surrounding white space.
    fn from_str(s: &str) -> Result<Level> {
        let t = s.trim();
        let level = [
            ("TRACE", Level::Trace),
            ("DEBUG", Level::Debug),
            ("INFO", Level::Info),
            ("INFORMATION", Level::Info),
            ("WARN", Level::Warn),
            ("WARNING", Level::Warn),
            ("ERROR", Level::Error),
            ("ERR", Level::Error),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(t))
        .map(|(_, level)| level);
        level.ok_or_else(|| Error::UnknownLevel(s.to_owned()))
    }
}

/// One log line with the context that traces it to its place in a workflow run.
///
/// The fields and their names are those of the `logstore` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMessage {
    /// The workflow definition's id; subscribers filter on it.
    pub workflow_id: String,
    /// The workflow's human-readable name.
    pub workflow_name: String,
    /// The run of the workflow this line belongs to.
    pub workflow_instance_id: String,
    /// The task that wrote the line.
    pub task_name: String,
    /// The run of the task that wrote the line.
    pub task_instance_id: String,
    /// When the line was written, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Its severity.
    pub level: Level,
    /// The line itself.
    pub payload: String,
}

/// A [`LogMessage`]'s fields, borrowed from wherever they are (a received
/// frame, a query's result, a publisher's task context): encoded, sized
/// and sent without building a `LogMessage` first. It reads (from a byte
/// slice) and writes what a `LogMessage` reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef<'a> {
    /// See [`LogMessage::workflow_id`].
    pub workflow_id: &'a str,
    /// See [`LogMessage::workflow_name`].
    pub workflow_name: &'a str,
    /// See [`LogMessage::workflow_instance_id`].
    pub workflow_instance_id: &'a str,
    /// See [`LogMessage::task_name`].
    pub task_name: &'a str,
    /// See [`LogMessage::task_instance_id`].
    pub task_instance_id: &'a str,
    /// See [`LogMessage::timestamp_ms`].
    pub timestamp_ms: i64,
    /// See [`LogMessage::level`].
    pub level: Level,
    /// See [`LogMessage::payload`].
    pub payload: &'a str,
}

impl<'a> From<&'a LogMessage> for MessageRef<'a> {
    fn from(m: &'a LogMessage) -> Self {
        MessageRef {
            workflow_id: &m.workflow_id,
            workflow_name: &m.workflow_name,
            workflow_instance_id: &m.workflow_instance_id,
            task_name: &m.task_name,
            task_instance_id: &m.task_instance_id,
            timestamp_ms: m.timestamp_ms,
            level: m.level,
            payload: &m.payload,
        }
    }
}

impl<'a> MessageRef<'a> {
    /// The message, as owned strings.
    pub fn to_message(self) -> LogMessage {
        LogMessage {
            workflow_id: self.workflow_id.to_owned(),
            workflow_name: self.workflow_name.to_owned(),
            workflow_instance_id: self.workflow_instance_id.to_owned(),
            task_name: self.task_name.to_owned(),
            task_instance_id: self.task_instance_id.to_owned(),
            timestamp_ms: self.timestamp_ms,
            level: self.level,
            payload: self.payload.to_owned(),
        }
    }

    /// As [`LogMessage::text_bytes`].
    pub fn text_bytes(&self) -> usize {
        self.workflow_id.len()
            + self.workflow_name.len()
            + self.workflow_instance_id.len()
            + self.task_name.len()
            + self.task_instance_id.len()
            + self.payload.len()
    }

    /// As [`LogMessage::to_json`].
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a MessageRef always serializes to JSON")
    }

    /// As [`LogMessage::display`].
    pub fn display(self) -> impl fmt::Display + 'a {
        self.display_styled("", "")
    }

    /// As [`LogMessage::display_styled`].
    pub fn display_styled(self, before: &'a str, after: &'a str) -> impl fmt::Display + 'a {
        Human { m: self, before, after }
    }
}

impl LogMessage {
    /// Bytes of its strings: what sizes a line in the byte budgets, a
    /// query's page and a reply.
    pub fn text_bytes(&self) -> usize {
        MessageRef::from(self).text_bytes()
    }

    /// The message as one JSON object (the field names above; `level` as its
    /// canonical name).
    pub fn to_json(&self) -> String {
        MessageRef::from(self).to_json()
    }

    /// A one-line human-readable form:
    /// `2026-11-27T08:30:00.123Z INFO  etl/etl-0001 extract/extract-0001: rows=10`.
    ///
    /// Control characters in any field are escaped so that one message is
    /// always one line.
    pub fn display(&self) -> impl fmt::Display + '_ {
        self.display_styled("", "")
    }

    /// As [`display`](Self::display), with `before` and `after` around the
    /// level name (a terminal colour, say), outside its padding.
    pub fn display_styled<'a>(&'a self, before: &'a str, after: &'a str) -> impl fmt::Display + 'a {
        MessageRef::from(self).display_styled(before, after)
    }
}

struct Human<'a> {
    m: MessageRef<'a>,
    before: &'a str,
    after: &'a str,
}

impl fmt::Display for Human<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.m;
        let pad = 5usize.saturating_sub(m.level.as_str().len());
        write!(
            f,
            "{} {}{}{}{:pad$} ",
            rfc3339_ms(m.timestamp_ms),
            self.before,
            m.level,
            self.after,
            ""
        )?;
        for (i, part) in [
            m.workflow_id,
            "/",
            m.workflow_instance_id,
            " ",
            m.task_name,
            "/",
            m.task_instance_id,
        ]
        .into_iter()
        .enumerate()
        {
            if i % 2 == 0 {
                write_escaped(f, part)?;
            } else {
                f.write_str(part)?;
            }
        }
        f.write_str(": ")?;
        write_escaped(f, m.payload)
    }
}

/// RFC 3339 in UTC with milliseconds; timestamps chrono cannot represent are
/// shown as the raw number rather than failing.
pub fn rfc3339_ms(timestamp_ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(timestamp_ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => format!("@{timestamp_ms}ms"),
    }
}

/// `s` with control characters escaped as in [`LogMessage::display`], so
/// that a hostile string cannot break a line or a table apart.
pub fn escape_control(s: &str) -> std::borrow::Cow<'_, str> {
    struct Escaped<'a>(&'a str);
    impl fmt::Display for Escaped<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_escaped(f, self.0)
        }
    }
    if s.chars().any(char::is_control) {
        Escaped(s).to_string().into()
    } else {
        s.into()
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if !s.chars().any(char::is_control) {
        return f.write_str(s);
    }
    for c in s.chars() {
        match c {
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
            c => fmt::Write::write_char(f, c)?,
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_parses_common_spellings_in_any_case() {
        for (s, l) in [
            ("trace", Level::Trace),
            ("Debug", Level::Debug),
            ("INFO", Level::Info),
            ("information", Level::Info),
            ("warn", Level::Warn),
            ("WARNING", Level::Warn),
            (" Warning ", Level::Warn),
            ("error", Level::Error),
            ("ERR", Level::Error),
        ] {
            assert_eq!(s.parse::<Level>().unwrap(), l, "{s}");
        }
        for bad in ["", "fatal", "inf", "warnings"] {
            assert!(matches!(bad.parse::<Level>(), Err(Error::UnknownLevel(_))), "{bad}");
        }
    }

    #[test]
    fn levels_are_ordered_by_severity() {
        assert!(Level::Trace < Level::Debug && Level::Debug < Level::Info);
        assert!(Level::Info < Level::Warn && Level::Warn < Level::Error);
    }

    fn sample() -> LogMessage {
        LogMessage {
            workflow_id: "etl".into(),
            workflow_name: "Nightly ETL".into(),
            workflow_instance_id: "etl-0001".into(),
            task_name: "extract".into(),
            task_instance_id: "extract-0001".into(),
            timestamp_ms: 1_795_768_200_123,
            level: Level::Warn,
            payload: "rows=10\nnext".into(),
        }
    }

    #[test]
    fn human_format_is_one_line_with_rfc3339_time() {
        let line = sample().display().to_string();
        assert_eq!(
            line,
            "2026-11-27T08:30:00.123Z WARN  etl/etl-0001 extract/extract-0001: rows=10\\nnext"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn json_has_every_field_and_round_trips() {
        let m = sample();
        let v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["timestamp_ms"], 1_795_768_200_123i64);
        assert_eq!(v["workflow_name"], "Nightly ETL");
        let back: LogMessage = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn out_of_range_timestamps_still_format() {
        assert_eq!(rfc3339_ms(i64::MAX), format!("@{}ms", i64::MAX));
    }
}
