//! The log pane: a bounded scrollback of a run's lines, followed live or
//! paused, filtered by level and task, searched, wrapped, saved.

use std::collections::VecDeque;
use std::path::PathBuf;

use cdktr_log::{Level, LogMessage};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use super::text::{clock, sanitize};

/// Lines kept unless `--scrollback` says otherwise.
pub const DEFAULT_SCROLLBACK: usize = 100_000;

#[derive(Debug)]
pub struct LogPane {
    /// The lines as received: made safe for the terminal only when drawn,
    /// so a burst costs no copies of lines never seen.
    lines: VecDeque<LogMessage>,
    /// Absolute number of `lines[0]`: lines that left the scrollback before it.
    base: usize,
    capacity: usize,
    /// Absolute numbers of the lines that pass the filters, in order.
    view: VecDeque<usize>,
    /// Following: the newest lines are shown as they come.
    pub follow: bool,
    /// Paused: the position in `view` of the first line shown.
    top: usize,
    /// Rows of the pane last drawn, for paging.
    height: usize,
    pub min_level: Option<Level>,
    pub task: Option<String>,
    pub wrap: bool,
    pub search: Option<String>,
}

impl LogPane {
    pub fn new(capacity: usize) -> LogPane {
        LogPane {
            lines: VecDeque::new(),
            base: 0,
            capacity: capacity.max(1),
            view: VecDeque::new(),
            follow: true,
            top: 0,
            height: 10,
            min_level: None,
            task: None,
            wrap: false,
            search: None,
        }
    }

    /// Lines that have left the scrollback.
    pub fn evicted(&self) -> usize {
        self.base
    }

    /// Lines passing the filters.
    pub fn shown(&self) -> usize {
        self.view.len()
    }

    pub fn push(&mut self, m: LogMessage) {
        let line = m;
        if self.passes(&line) {
            self.view.push_back(self.base + self.lines.len());
        }
        self.lines.push_back(line);
        while self.lines.len() > self.capacity {
            self.lines.pop_front();
            self.base += 1;
            if self.view.front().is_some_and(|&a| a < self.base) {
                self.view.pop_front();
                self.top = self.top.saturating_sub(1);
            }
        }
    }

    fn passes(&self, l: &LogMessage) -> bool {
        self.min_level.is_none_or(|m| l.level >= m) && self.task.as_ref().is_none_or(|t| *t == l.task_name)
    }

    fn line(&self, absolute: usize) -> &LogMessage {
        &self.lines[absolute - self.base]
    }

    fn refilter(&mut self) {
        let anchor = self.view.get(self.top).copied();
        self.view = (0..self.lines.len())
            .filter(|&i| self.passes(&self.lines[i]))
            .map(|i| self.base + i)
            .collect();
        self.top = anchor.map_or(0, |a| self.view.partition_point(|&v| v < a));
    }

    /// The first line shown, in `view`.
    fn first_shown(&self) -> usize {
        if self.follow {
            self.view.len().saturating_sub(self.height)
        } else {
            self.top.min(self.view.len().saturating_sub(1))
        }
    }

    fn pause_at(&mut self, top: usize) {
        self.follow = false;
        self.top = top.min(self.view.len().saturating_sub(self.height.max(1)));
    }

    pub fn scroll_up(&mut self, n: usize) {
        let top = self.first_shown().saturating_sub(n);
        self.pause_at(top);
    }

    pub fn scroll_down(&mut self, n: usize) {
        if self.follow {
            return;
        }
        let top = self.first_shown() + n;
        if top + self.height >= self.view.len() {
            self.follow = true;
        } else {
            self.top = top;
        }
    }

    pub fn page_up(&mut self) {
        self.scroll_up(self.height.saturating_sub(1).max(1));
    }

    pub fn page_down(&mut self) {
        self.scroll_down(self.height.saturating_sub(1).max(1));
    }

    pub fn go_top(&mut self) {
        self.follow = false;
        self.top = 0;
    }

    pub fn go_bottom(&mut self) {
        self.follow = true;
    }

    pub fn toggle_follow(&mut self) {
        if self.follow {
            let top = self.first_shown();
            self.pause_at(top);
        } else {
            self.follow = true;
        }
    }

    pub fn cycle_level(&mut self) {
        self.min_level = match self.min_level {
            None => Some(Level::Debug),
            Some(Level::Error) => None,
            Some(l) => Level::ALL.into_iter().find(|&n| n > l),
        };
        self.refilter();
    }

    /// The next task name after the one filtered to (none after the last).
    pub fn cycle_task(&mut self) {
        let mut tasks: Vec<&str> = self.lines.iter().map(|l| l.task_name.as_str()).collect();
        tasks.sort_unstable();
        tasks.dedup();
        self.task = match &self.task {
            None => tasks.first().map(|t| t.to_string()),
            Some(t) => tasks.iter().find(|&&n| n > t.as_str()).map(|t| t.to_string()),
        };
        self.refilter();
    }

    fn find(&self, from: usize, forward: bool, hit: impl Fn(&LogMessage) -> bool) -> Option<usize> {
        let n = self.view.len();
        if forward {
            (from..n).find(|&i| hit(self.line(self.view[i])))
        } else {
            (0..from.min(n)).rev().find(|&i| hit(self.line(self.view[i])))
        }
    }

    /// Shows the next (or previous) line matching the search; false when
    /// there is none.
    pub fn jump_match(&mut self, forward: bool) -> bool {
        let Some(needle) = self.search.clone() else {
            return false;
        };
        let from = if forward {
            self.first_shown() + 1
        } else {
            self.first_shown()
        };
        match self.find(from, forward, |l| l.payload.contains(needle.as_str())) {
            Some(i) => {
                self.pause_at(i);
                true
            }
            None => false,
        }
    }

    /// Shows the next ERROR line; false when there is none.
    pub fn next_error(&mut self) -> bool {
        let from = self.first_shown() + usize::from(!self.follow);
        match self.find(from, true, |l| l.level == Level::Error) {
            Some(i) => {
                self.pause_at(i);
                true
            }
            None => false,
        }
    }

    pub fn matches(&self) -> usize {
        match &self.search {
            Some(s) => self
                .view
                .iter()
                .filter(|&&a| self.line(a).payload.contains(s.as_str()))
                .count(),
            None => 0,
        }
    }

    /// Writes the lines passing the filters to `path`, one per line as
    /// `cdktr-logs query` prints them.
    pub fn save(&self, path: &PathBuf) -> std::io::Result<usize> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for &a in &self.view {
            writeln!(out, "{}", self.line(a).display())?;
        }
        out.flush()?;
        Ok(self.view.len())
    }

    pub fn render(&mut self, f: &mut Frame, area: Rect, title: Line<'static>) {
        let block = Block::bordered().title(title);
        let inner = block.inner(area);
        self.height = usize::from(inner.height).max(1);
        let width = usize::from(inner.width).max(1);
        let rows_of = |l: &Line| if self.wrap { l.width().div_ceil(width).max(1) } else { 1 };
        let mut first = self.first_shown();
        if self.follow && self.wrap {
            // From the bottom up, as many lines as fit once wrapped.
            let (mut used, mut i) = (0, self.view.len());
            while i > 0 {
                let h = rows_of(&self.render_line(self.line(self.view[i - 1])));
                if used + h > self.height && used > 0 {
                    break;
                }
                used += h;
                i -= 1;
            }
            first = i;
        }
        let mut rows: Vec<Line> = Vec::new();
        let mut used = 0;
        for &a in self.view.iter().skip(first) {
            if used >= self.height {
                break;
            }
            let line = self.render_line(self.line(a));
            used += rows_of(&line);
            rows.push(line);
        }
        let mut p = Paragraph::new(rows).block(block);
        if self.wrap {
            p = p.wrap(Wrap { trim: false });
        }
        f.render_widget(p, area);
    }

    fn render_line(&self, m: &LogMessage) -> Line<'static> {
        let text = sanitize(&m.payload);
        let mut spans = vec![
            Span::styled(clock(m.timestamp_ms), Style::new().fg(Color::DarkGray)),
            Span::raw(" "),
            Span::styled(format!("{:<5}", m.level.as_str()), level_style(m.level)),
            Span::raw(" "),
            Span::styled(sanitize(&m.task_name), Style::new().fg(Color::Cyan)),
            Span::raw(" "),
        ];
        match self.search.as_deref().filter(|s| !s.is_empty()) {
            Some(needle) => {
                let hit = Style::new().bg(Color::Yellow).fg(Color::Black);
                let mut rest = text.as_str();
                while let Some(at) = rest.find(needle) {
                    spans.push(Span::raw(rest[..at].to_string()));
                    spans.push(Span::styled(needle.to_string(), hit));
                    rest = &rest[at + needle.len()..];
                }
                spans.push(Span::raw(rest.to_string()));
            }
            None => spans.push(Span::raw(text)),
        }
        Line::from(spans)
    }
}

pub fn level_style(level: Level) -> Style {
    match level {
        Level::Trace | Level::Debug => Style::new().fg(Color::DarkGray),
        Level::Info => Style::new().fg(Color::Green),
        Level::Warn => Style::new().fg(Color::Yellow),
        Level::Error => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}
