//! Text safe to put on a terminal: nothing a log line carries reaches it as
//! a control character.

/// `s` with tabs as spaces (to the next multiple of 4) and every other
/// control character (C0, DEL, C1: ESC of an ANSI sequence among them)
/// shown escaped, `\n`, `\r` or `\u{1b}`, so one log line is one line and
/// sends the terminal nothing but text.
pub fn sanitize(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut column = 0;
    for c in s.chars() {
        match c {
            '\t' => {
                let n = 4 - column % 4;
                out.extend(std::iter::repeat_n(' ', n));
                column += n;
                continue;
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
        column += 1;
    }
    out
}

/// Hours, minutes, seconds and milliseconds (UTC) of a timestamp.
pub fn clock(timestamp_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(timestamp_ms)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| "??:??:??.???".into())
}

/// A duration as people read it: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_tabs_expanded() {
        assert_eq!(sanitize("plain ünïcode 日本 🎉"), "plain ünïcode 日本 🎉");
        assert_eq!(sanitize("a\tb"), "a   b");
        assert_eq!(sanitize("\x1b[31mred\x1b[0m"), "\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(sanitize("one\ntwo\r"), "one\\ntwo\\r");
        assert_eq!(sanitize("\u{7f}\u{9b}"), "\\u{7f}\\u{9b}");
        assert!(!sanitize("\x07\x08\x00\x1b").chars().any(char::is_control));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(245_000), "4m05s");
        assert_eq!(duration(7_380_000), "2h03m");
        assert_eq!(duration(-5), "0ms");
        assert_eq!(clock(1_795_768_200_123), "08:30:00.123");
    }
}
