//! The runs screen: recent workflow instances, filtered, one selected.

use cdktr_log::{RunStatus, WorkflowRun};
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Row, Table, TableState};
use ratatui::Frame;

use super::run::status_style;
use super::text::{clock, duration, sanitize};

#[derive(Debug, Default)]
pub struct RunsView {
    pub runs: Vec<WorkflowRun>,
    /// Shown when it is in the workflow id or instance id.
    pub filter: String,
    pub status: Option<RunStatus>,
    /// The selected instance, kept across refreshes.
    pub selected: Option<String>,
    pub loaded: bool,
}

impl RunsView {
    /// The runs that pass the filters.
    pub fn visible(&self) -> Vec<&WorkflowRun> {
        self.runs
            .iter()
            .filter(|r| self.status.is_none_or(|s| r.status == s))
            .filter(|r| {
                self.filter.is_empty()
                    || r.workflow_id.contains(&self.filter)
                    || r.workflow_instance_id.contains(&self.filter)
            })
            .collect()
    }

    fn position(&self) -> Option<usize> {
        let v = self.visible();
        match &self.selected {
            Some(s) => v
                .iter()
                .position(|r| r.workflow_instance_id == *s)
                .or((!v.is_empty()).then_some(0)),
            None => (!v.is_empty()).then_some(0),
        }
    }

    pub fn selected_run(&self) -> Option<WorkflowRun> {
        let v = self.visible();
        self.position().and_then(|i| v.get(i).map(|r| (*r).clone()))
    }

    pub fn move_by(&mut self, delta: isize) {
        let v = self.visible();
        if v.is_empty() {
            return;
        }
        let i = self.position().unwrap_or(0) as isize + delta;
        let i = i.clamp(0, v.len() as isize - 1) as usize;
        self.selected = Some(v[i].workflow_instance_id.clone());
    }

    pub fn cycle_status(&mut self) {
        self.status = match self.status {
            None => Some(RunStatus::ALL[0]),
            Some(s) => RunStatus::ALL.into_iter().skip_while(|&x| x != s).nth(1),
        };
    }

    pub fn render(&self, f: &mut Frame, area: Rect, now: i64) {
        let rows: Vec<Row> = self
            .visible()
            .into_iter()
            .map(|r| {
                let end = if r.status.is_final() { r.last_ms } else { now };
                Row::new(vec![
                    Cell::from(Span::styled(r.status.as_str(), status_style(r.status))),
                    Cell::from(sanitize(&r.workflow_id)),
                    Cell::from(sanitize(&r.workflow_instance_id)),
                    Cell::from(clock(r.first_ms)),
                    Cell::from(duration(end - r.first_ms)),
                ])
            })
            .collect();
        let mut title = vec![Span::raw(" runs ")];
        if let Some(s) = self.status {
            title.push(Span::styled(format!("status={s} "), status_style(s)));
        }
        if !self.filter.is_empty() {
            title.push(Span::raw(format!("/{} ", sanitize(&self.filter))));
        }
        if !self.loaded {
            title.push(Span::raw("loading… "));
        } else if rows.is_empty() {
            title.push(Span::raw("none "));
        }
        let widths = [
            Constraint::Length(9),
            Constraint::Fill(1),
            Constraint::Fill(2),
            Constraint::Length(12),
            Constraint::Length(8),
        ];
        let header = Row::new(["STATUS", "WORKFLOW", "INSTANCE", "STARTED", "DURATION"])
            .style(Style::new().add_modifier(Modifier::BOLD));
        let table = Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(Line::from(title)))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        let mut state = TableState::default().with_selected(self.position());
        f.render_stateful_widget(table, area, &mut state);
    }
}
