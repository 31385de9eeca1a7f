//! The run screen: the run's tasks as a timeline, and its log pane.

use cdktr_log::message::now_ms;
use cdktr_log::{RunStatus, StatusChange};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::logpane::LogPane;
use super::text::{duration, sanitize};

/// One task's bar: from its first change (RUNNING, normally) to its last.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpan {
    pub task: String,
    pub start_ms: i64,
    /// `None` while it runs.
    pub end_ms: Option<i64>,
    pub status: RunStatus,
}

/// The spans of a timeline's tasks, in the order they started, and the
/// workflow's own current status.
pub fn spans(changes: &[StatusChange]) -> (Option<RunStatus>, Vec<TaskSpan>) {
    let mut workflow = None;
    let mut tasks: Vec<(String, TaskSpan)> = Vec::new();
    for c in changes {
        let Some((task_id, task_instance)) = &c.task else {
            workflow = Some(c.status);
            continue;
        };
        let span = match tasks.iter_mut().find(|(id, _)| id == task_instance) {
            Some((_, s)) => s,
            None => {
                tasks.push((
                    task_instance.clone(),
                    TaskSpan {
                        task: task_id.clone(),
                        start_ms: c.timestamp_ms,
                        end_ms: None,
                        status: c.status,
                    },
                ));
                &mut tasks.last_mut().expect("just pushed").1
            }
        };
        if c.status == RunStatus::Running && span.status != RunStatus::Running && span.end_ms.is_none() {
            span.start_ms = c.timestamp_ms;
        }
        span.status = c.status;
        span.end_ms = c.status.is_final().then_some(c.timestamp_ms);
    }
    (workflow, tasks.into_iter().map(|(_, s)| s).collect())
}

pub fn status_style(status: RunStatus) -> Style {
    match status {
        RunStatus::Completed => Style::new().fg(Color::Green),
        RunStatus::Running => Style::new().fg(Color::Cyan),
        RunStatus::Pending | RunStatus::Waiting => Style::new().fg(Color::Yellow),
        RunStatus::Failed | RunStatus::Crashed => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

/// The run being viewed.
#[derive(Debug)]
pub struct RunView {
    pub instance: String,
    pub workflow: Option<String>,
    pub changes: Vec<StatusChange>,
    pub pane: LogPane,
    /// Why the follow is not live, when it is not.
    pub follow_error: Option<String>,
}

impl RunView {
    pub fn new(instance: String, workflow: Option<String>, scrollback: usize) -> RunView {
        RunView {
            instance,
            workflow,
            changes: Vec::new(),
            pane: LogPane::new(scrollback),
            follow_error: None,
        }
    }

    pub fn render(&mut self, f: &mut Frame, area: Rect) {
        let (status, tasks) = spans(&self.changes);
        // The timeline takes a row per task, at most a third of the screen.
        let wanted = u16::try_from(tasks.len()).unwrap_or(u16::MAX).saturating_add(2);
        let timeline_height = wanted.min(area.height / 3).max(3.min(area.height / 2));
        let [timeline, logs] = Layout::vertical([Constraint::Length(timeline_height), Constraint::Min(0)]).areas(area);
        let name = match &self.workflow {
            Some(w) => format!(" {} / {} ", sanitize(w), sanitize(&self.instance)),
            None => format!(" {} ", sanitize(&self.instance)),
        };
        let mut title = vec![Span::styled(name, Style::new().add_modifier(Modifier::BOLD))];
        if let Some(s) = status {
            title.push(Span::styled(format!("{s} "), status_style(s)));
        }
        let block = Block::bordered().title(Line::from(title));
        let inner = block.inner(timeline);
        f.render_widget(
            Paragraph::new(timeline_lines(&tasks, inner.width, now_ms())).block(block),
            timeline,
        );

        let p = &self.pane;
        let mut t = vec![Span::raw(" logs ")];
        t.push(if p.follow {
            Span::styled("FOLLOW ", Style::new().fg(Color::Green))
        } else {
            Span::styled("PAUSED (G to follow) ", Style::new().fg(Color::Yellow))
        });
        if let Some(l) = p.min_level {
            t.push(Span::raw(format!("level≥{} ", l.as_str())));
        }
        if let Some(task) = &p.task {
            t.push(Span::raw(format!("task={} ", sanitize(task))));
        }
        if p.wrap {
            t.push(Span::raw("wrap "));
        }
        if let Some(s) = &p.search {
            t.push(Span::raw(format!("/{} ({} matches) ", sanitize(s), p.matches())));
        }
        t.push(Span::raw(format!("{} lines ", p.shown())));
        if p.evicted() > 0 {
            t.push(Span::styled(
                format!("{} older lines left the scrollback ", p.evicted()),
                Style::new().fg(Color::DarkGray),
            ));
        }
        if let Some(e) = &self.follow_error {
            t.push(Span::styled(format!("{} ", sanitize(e)), Style::new().fg(Color::Red)));
        }
        self.pane.render(f, logs, Line::from(t));
    }
}

/// One line per task: its name, a bar placed on the run's time axis, its
/// duration and status.
pub fn timeline_lines(tasks: &[TaskSpan], width: u16, now: i64) -> Vec<Line<'static>> {
    if tasks.is_empty() {
        return vec![Line::styled("no task has started", Style::new().fg(Color::DarkGray))];
    }
    let t0 = tasks.iter().map(|t| t.start_ms).min().unwrap_or(now);
    let t1 = tasks
        .iter()
        .map(|t| t.end_ms.unwrap_or(now))
        .max()
        .unwrap_or(now)
        .max(t0 + 1);
    let name_w = tasks.iter().map(|t| t.task.chars().count()).max().unwrap_or(0).min(20);
    // name, space, bar, space, "12.3s COMPLETED"
    let bar_w = usize::from(width).saturating_sub(name_w + 19).max(1);
    tasks
        .iter()
        .map(|t| {
            let end = t.end_ms.unwrap_or(now);
            let col = |ms: i64| ((ms - t0) as f64 / (t1 - t0) as f64 * bar_w as f64) as usize;
            let (from, to) = (col(t.start_ms).min(bar_w - 1), col(end).min(bar_w));
            let len = to.saturating_sub(from).max(1);
            let name: String = sanitize(&t.task).chars().take(name_w).collect();
            Line::from(vec![
                Span::raw(format!("{name:<name_w$} ")),
                Span::raw(" ".repeat(from)),
                Span::styled("█".repeat(len), status_style(t.status)),
                Span::raw(" ".repeat(bar_w.saturating_sub(from + len))),
                Span::raw(format!(" {:>6} ", duration(end - t.start_ms))),
                Span::styled(t.status.as_str(), status_style(t.status)),
            ])
        })
        .collect()
}
