//! Reading fields: the workflow context a span or event carries, and an
//! event's message and other fields written out like logfmt.

use std::fmt::{self, Write as _};

use tracing_core::field::{Field, Visit};

/// The span and event fields that name a line's workflow and task.
pub const CONTEXT_FIELDS: [&str; 5] = [
    "workflow_id",
    "workflow_name",
    "workflow_instance_id",
    "task_name",
    "task_instance_id",
];

/// What a span (or event) says of the context: one slot per
/// [`CONTEXT_FIELDS`] entry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Context(pub [Option<String>; 5]);

impl Context {
    fn slot(name: &str) -> Option<usize> {
        CONTEXT_FIELDS.iter().position(|f| *f == name)
    }
}

impl Visit for Context {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(i) = Self::slot(field.name()) {
            self.0[i] = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(i) = Self::slot(field.name()) {
            self.0[i] = Some(format!("{value:?}"));
        }
    }
}

/// An event's payload: its message, then its other fields as
/// `key=value`, strings quoted only where logfmt needs it. Context fields
/// and the `log.*` fields of events bridged from `log` are left out.
#[derive(Debug, Default)]
pub struct Payload {
    pub message: String,
    pub fields: String,
    pub context: Context,
}

impl Payload {
    pub fn into_text(self, target: Option<&str>) -> String {
        let mut out = self.message;
        if let Some(t) = target {
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = write!(out, "target={}", quoted(t));
        }
        if !self.fields.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&self.fields);
        }
        out
    }

    fn field(&mut self, name: &str, value: &str, always_quote: bool) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        self.fields.push_str(name);
        self.fields.push('=');
        if always_quote {
            self.fields.push_str(&quote(value));
        } else {
            self.fields.push_str(value);
        }
    }

    fn skip(&mut self, field: &Field, text: impl FnOnce() -> String) -> bool {
        let name = field.name();
        if name.starts_with("log.") {
            return true;
        }
        if Context::slot(name).is_some() {
            self.context.0[Context::slot(name).unwrap_or(0)] = Some(text());
            return true;
        }
        false
    }
}

impl Visit for Payload {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if !self.skip(field, || value.to_owned()) {
            let v = quoted(value);
            self.field(field.name(), &v, false);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        let text = format!("{value:?}");
        if !self.skip(field, || text.clone()) {
            let v = quoted(&text);
            self.field(field.name(), &v, false);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if !self.skip(field, || value.to_string()) {
            self.field(field.name(), &value.to_string(), false);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !self.skip(field, || value.to_string()) {
            self.field(field.name(), &value.to_string(), false);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if !self.skip(field, || value.to_string()) {
            self.field(field.name(), &value.to_string(), false);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !self.skip(field, || value.to_string()) {
            self.field(field.name(), &value.to_string(), false);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let text = value.to_string();
        if !self.skip(field, || text.clone()) {
            self.field(field.name(), &text, true);
        }
    }
}

/// `s` as a logfmt value: bare when it can be, quoted otherwise.
pub fn quoted(s: &str) -> String {
    let bare = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c == '\\' || c.is_control());
    if bare {
        s.to_owned()
    } else {
        quote(s)
    }
}

/// `s` in double quotes, with `"` and `\` escaped and control characters
/// written as escapes (`\n`, `\u{1b}`), so that a line stays one line.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn values_are_bare_unless_logfmt_needs_quotes() {
        assert_eq!(quoted("plain"), "plain");
        assert_eq!(quoted("ünïcode"), "ünïcode");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("two words"), "\"two words\"");
        assert_eq!(quoted("a=b"), "\"a=b\"");
        assert_eq!(quoted("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quoted("back\\slash"), "\"back\\\\slash\"");
        assert_eq!(quoted("line\nbreak\x1b[2J"), "\"line\\nbreak\\u{1b}[2J\"");
    }
}
