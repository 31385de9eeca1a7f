//! How the CLI writes: text coloured as `--color` and `NO_COLOR` say (through
//! anstream, which strips the styles where colour is off), or JSON lines.

use std::io::{StdoutLock, Write};

use anstream::{AutoStream, ColorChoice};
use anstyle::{AnsiColor, Style};
use cdktr_log::message::MessageRef;
use cdktr_log::{Level, RunStatus};

/// Standard output, with colour decided once.
pub struct Out {
    stream: AutoStream<StdoutLock<'static>>,
    pub json: bool,
}

impl Out {
    pub fn new(color: ColorChoice, json: bool) -> Out {
        Out {
            stream: AutoStream::new(std::io::stdout().lock(), color),
            json,
        }
    }

    /// Writes one line; false once the reader has gone (`| head`), which
    /// ends the command successfully.
    pub fn line(&mut self, line: std::fmt::Arguments<'_>) -> bool {
        writeln!(self.stream, "{line}").is_ok()
    }

    /// Flushes what is written; false once the reader has gone.
    pub fn flush(&mut self) -> bool {
        self.stream.flush().is_ok()
    }

    /// One log line, as text or JSON.
    pub fn log_line(&mut self, m: MessageRef<'_>) -> bool {
        if self.json {
            return self.line(format_args!("{}", m.to_json()));
        }
        let style = level_style(m.level);
        let (before, after) = (style.render().to_string(), style.render_reset().to_string());
        let written = self.line(format_args!("{}", m.display_styled(&before, &after)));
        written
    }

    /// A table whose columns are padded to their widest cell; styles do not
    /// count towards widths.
    pub fn table(&mut self, rows: &[Vec<Cell>]) -> bool {
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                rows.iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.text.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(&format!(
                    "{}{}{}",
                    cell.style.render(),
                    cell.text,
                    cell.style.render_reset()
                ));
                if c + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', widths[c] - cell.text.chars().count() + 2));
                }
            }
            if !self.line(format_args!("{line}")) {
                return false;
            }
        }
        true
    }
}

/// A table cell: plain text and how to colour it.
pub struct Cell {
    text: String,
    style: Style,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            style: Style::new(),
        }
    }

    pub fn header(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            style: Style::new().bold(),
        }
    }

    pub fn status(status: RunStatus) -> Cell {
        let color = match status {
            RunStatus::Completed => AnsiColor::Green,
            RunStatus::Running => AnsiColor::Cyan,
            RunStatus::Pending | RunStatus::Waiting => AnsiColor::Yellow,
            RunStatus::Failed | RunStatus::Crashed => AnsiColor::Red,
        };
        let style = Style::new().fg_color(Some(color.into()));
        Cell {
            text: status.to_string(),
            style: if matches!(status, RunStatus::Failed | RunStatus::Crashed) {
                style.bold()
            } else {
                style
            },
        }
    }
}

fn level_style(level: Level) -> Style {
    match level {
        Level::Trace | Level::Debug => Style::new().dimmed(),
        Level::Info => Style::new().fg_color(Some(AnsiColor::Green.into())),
        Level::Warn => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
        Level::Error => Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
    }
}
