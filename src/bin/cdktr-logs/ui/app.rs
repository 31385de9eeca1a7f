//! The UI's state and what keys and data do to it: no terminal here, so
//! tests drive it directly.

use std::collections::VecDeque;

use cdktr_log::api::PrincipalStats;
use cdktr_log::{LogMessage, StatusChange, WorkflowRun};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Sparkline};
use ratatui::Frame;

use super::run::RunView;
use super::runs::RunsView;
use super::text::sanitize;

/// What reaches the UI thread: input, and data from the workers.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize,
    Runs(Vec<WorkflowRun>),
    Stats(Box<PrincipalStats>),
    Unreachable(String),
    Timeline(String, Vec<StatusChange>),
    Lines(String, Vec<LogMessage>),
    /// The follow of an instance: `None` when live, else why not.
    Follow(String, Option<String>),
}

/// What the UI asks of the workers.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    Open(String),
    Close,
}

#[derive(Debug)]
pub enum Screen {
    Runs,
    Run(Box<RunView>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    RunsFilter(String),
    Search(String),
}

/// Samples of lines/s kept for the header's sparkline.
const RATE_SAMPLES: usize = 60;

const HELP: &[(&str, &str)] = &[
    ("Enter", "open the selected run"),
    ("/  f", "runs: filter by text / cycle the status shown"),
    ("↑ ↓  j k", "move; in the logs, scroll a line"),
    ("PgUp PgDn  wheel", "scroll a page / three lines"),
    ("g  G", "top / bottom (G follows again)"),
    ("F", "follow on or off (scrolling up pauses)"),
    ("l", "minimum level: all, DEBUG, INFO, WARN, ERROR"),
    ("/  n  N", "search (matches highlighted) / next / previous"),
    ("e", "next ERROR line"),
    ("t", "one task at a time, then all"),
    ("w", "wrap long lines"),
    ("s", "save the lines shown to a file"),
    ("q  Esc", "back; q on the runs screen quits"),
    ("?", "this help"),
];

#[derive(Debug)]
pub struct App {
    pub principal: String,
    pub screen: Screen,
    pub runs: RunsView,
    pub input: Option<Input>,
    pub help: bool,
    pub unreachable: Option<String>,
    pub stats: Option<PrincipalStats>,
    rates: VecDeque<u64>,
    last_received: Option<(u64, u64)>,
    pub notice: Option<String>,
    pub quit: bool,
    pub scrollback: usize,
    pub effects: Vec<Effect>,
}

impl App {
    pub fn new(principal: String, scrollback: usize) -> App {
        App {
            principal,
            screen: Screen::Runs,
            runs: RunsView::default(),
            input: None,
            help: false,
            unreachable: None,
            stats: None,
            rates: VecDeque::new(),
            last_received: None,
            notice: None,
            quit: false,
            scrollback,
            effects: Vec::new(),
        }
    }

    /// Opens a run's screen (and asks the workers to follow it).
    pub fn open(&mut self, instance: String, workflow: Option<String>) {
        self.screen = Screen::Run(Box::new(RunView::new(instance.clone(), workflow, self.scrollback)));
        self.effects.push(Effect::Open(instance));
    }

    pub fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Key(k) => self.key(k),
            Msg::Mouse(m) => self.mouse(m),
            Msg::Resize => {}
            Msg::Runs(runs) => {
                self.runs.runs = runs;
                self.runs.loaded = true;
                self.unreachable = None;
            }
            Msg::Stats(s) => self.stats_in(*s),
            Msg::Unreachable(why) => self.unreachable = Some(why),
            Msg::Timeline(instance, changes) => {
                if let Screen::Run(r) = &mut self.screen {
                    if r.instance == instance {
                        r.changes = changes;
                    }
                }
            }
            Msg::Lines(instance, lines) => {
                if let Screen::Run(r) = &mut self.screen {
                    if r.instance == instance {
                        for l in lines {
                            r.pane.push(l);
                        }
                    }
                }
            }
            Msg::Follow(instance, error) => {
                if let Screen::Run(r) = &mut self.screen {
                    if r.instance == instance {
                        r.follow_error = error;
                    }
                }
            }
        }
    }

    fn stats_in(&mut self, s: PrincipalStats) {
        if let Some((at, received)) = self.last_received {
            let secs = s.uptime_ms.saturating_sub(at).max(1) as f64 / 1000.0;
            if s.uptime_ms > at {
                self.rates
                    .push_back((s.received.saturating_sub(received) as f64 / secs) as u64);
                if self.rates.len() > RATE_SAMPLES {
                    self.rates.pop_front();
                }
            }
        }
        self.last_received = Some((s.uptime_ms, s.received));
        self.stats = Some(s);
        self.unreachable = None;
    }

    fn key(&mut self, k: KeyEvent) {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.help {
            self.help = false;
            return;
        }
        if let Some(input) = self.input.take() {
            return self.typing(input, k);
        }
        self.notice = None;
        if k.code == KeyCode::Char('?') {
            self.help = true;
            return;
        }
        match &mut self.screen {
            Screen::Runs => self.runs_key(k),
            Screen::Run(_) => self.run_key(k),
        }
    }

    fn typing(&mut self, input: Input, k: KeyEvent) {
        let (mut text, search) = match input {
            Input::RunsFilter(t) => (t, false),
            Input::Search(t) => (t, true),
        };
        match k.code {
            KeyCode::Esc => return,
            KeyCode::Enter => {
                if search {
                    if let Screen::Run(r) = &mut self.screen {
                        r.pane.search = (!text.is_empty()).then_some(text);
                        // Following, everything is above: the newest match.
                        let down = !r.pane.follow;
                        if r.pane.search.is_some() && !r.pane.jump_match(down) {
                            self.notice = Some(format!("no match {}", if down { "below" } else { "above" }));
                        }
                    }
                } else {
                    self.runs.filter = text;
                }
                return;
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) if !c.is_control() => text.push(c),
            _ => {}
        }
        self.input = Some(if search {
            Input::Search(text)
        } else {
            Input::RunsFilter(text)
        });
    }

    fn runs_key(&mut self, k: KeyEvent) {
        let r = &mut self.runs;
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Esc => {
                r.filter.clear();
                r.status = None;
            }
            KeyCode::Up | KeyCode::Char('k') => r.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => r.move_by(1),
            KeyCode::PageUp => r.move_by(-10),
            KeyCode::PageDown => r.move_by(10),
            KeyCode::Char('g') | KeyCode::Home => r.move_by(isize::MIN / 2),
            KeyCode::Char('G') | KeyCode::End => r.move_by(isize::MAX / 2),
            KeyCode::Char('/') => self.input = Some(Input::RunsFilter(r.filter.clone())),
            KeyCode::Char('f') => r.cycle_status(),
            KeyCode::Enter => {
                if let Some(run) = r.selected_run() {
                    self.open(run.workflow_instance_id, Some(run.workflow_id));
                }
            }
            _ => {}
        }
    }

    fn run_key(&mut self, k: KeyEvent) {
        let Screen::Run(r) = &mut self.screen else { return };
        let p = &mut r.pane;
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => {
                self.screen = Screen::Runs;
                self.effects.push(Effect::Close);
            }
            KeyCode::Up | KeyCode::Char('k') => p.scroll_up(1),
            KeyCode::Down | KeyCode::Char('j') => p.scroll_down(1),
            KeyCode::PageUp => p.page_up(),
            KeyCode::PageDown => p.page_down(),
            KeyCode::Char('g') | KeyCode::Home => p.go_top(),
            KeyCode::Char('G') | KeyCode::End => p.go_bottom(),
            KeyCode::Char('F') => p.toggle_follow(),
            KeyCode::Char('l') => p.cycle_level(),
            KeyCode::Char('t') => p.cycle_task(),
            KeyCode::Char('w') => p.wrap = !p.wrap,
            KeyCode::Char('/') => self.input = Some(Input::Search(p.search.clone().unwrap_or_default())),
            KeyCode::Char('n') if !p.jump_match(true) => self.notice = Some("no further match".into()),
            KeyCode::Char('N') if !p.jump_match(false) => self.notice = Some("no earlier match".into()),
            KeyCode::Char('e') if !p.next_error() => self.notice = Some("no ERROR line below".into()),
            KeyCode::Char('s') => {
                let name: String = r
                    .instance
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let path = std::path::PathBuf::from(format!("cdktr-{name}-{}.log", cdktr_log::message::now_ms()));
                self.notice = Some(match p.save(&path) {
                    Ok(n) => format!("saved {n} lines to {}", path.display()),
                    Err(e) => format!("cannot save to {}: {e}", path.display()),
                });
            }
            _ => {}
        }
    }

    fn mouse(&mut self, m: MouseEvent) {
        match (&mut self.screen, m.kind) {
            (Screen::Run(r), MouseEventKind::ScrollUp) => r.pane.scroll_up(3),
            (Screen::Run(r), MouseEventKind::ScrollDown) => r.pane.scroll_down(3),
            (Screen::Runs, MouseEventKind::ScrollUp) => self.runs.move_by(-1),
            (Screen::Runs, MouseEventKind::ScrollDown) => self.runs.move_by(1),
            _ => {}
        }
    }

    pub fn render(&mut self, f: &mut Frame, now: i64) {
        let area = f.area();
        let [header, body, footer] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)]).areas(area);
        self.render_header(f, header);
        match &mut self.screen {
            Screen::Runs => self.runs.render(f, body, now),
            Screen::Run(r) => r.render(f, body),
        }
        let foot = match (&self.input, &self.notice) {
            (Some(Input::RunsFilter(t)), _) => Line::from(format!("filter runs: {}▏", sanitize(t))),
            (Some(Input::Search(t)), _) => Line::from(format!("search: {}▏", sanitize(t))),
            (None, Some(n)) => Line::styled(sanitize(n), Style::new().fg(Color::Yellow)),
            (None, None) => Line::styled("? keys  q quit/back", Style::new().fg(Color::DarkGray)),
        };
        f.render_widget(Paragraph::new(foot), footer);
        if self.help {
            render_help(f, area);
        }
    }

    fn render_header(&self, f: &mut Frame, area: Rect) {
        if let Some(why) = &self.unreachable {
            let text = format!(
                " principal {} unreachable — retrying: {}",
                self.principal,
                sanitize(why)
            );
            f.render_widget(
                Paragraph::new(text).style(
                    Style::new()
                        .bg(Color::Red)
                        .fg(Color::White)
                        .add_modifier(Modifier::BOLD),
                ),
                area,
            );
            return;
        }
        let rate = self.rates.back().copied().unwrap_or(0);
        let text = match &self.stats {
            Some(s) => format!(
                " cdktr {}  received {}  persisted {}  {rate} lines/s ",
                self.principal, s.received, s.persisted
            ),
            None => format!(" cdktr {}  connecting… ", self.principal),
        };
        let width = u16::try_from(text.chars().count()).unwrap_or(u16::MAX);
        let [left, right] = Layout::horizontal([Constraint::Length(width), Constraint::Min(0)]).areas(area);
        f.render_widget(
            Paragraph::new(Span::styled(text, Style::new().add_modifier(Modifier::BOLD))),
            left,
        );
        let data: Vec<u64> = self.rates.iter().copied().collect();
        f.render_widget(
            Sparkline::default().data(&data).style(Style::new().fg(Color::Cyan)),
            right,
        );
    }
}

fn render_help(f: &mut Frame, area: Rect) {
    let w = area.width.min(64);
    let h = area.height.min(u16::try_from(HELP.len()).unwrap_or(u16::MAX) + 2);
    let x = area.x + (area.width - w) / 2;
    let y = area.y + (area.height - h) / 2;
    let rect = Rect::new(x, y, w, h);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:>18} "), Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(*what),
            ])
        })
        .collect();
    f.render_widget(Clear, rect);
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" keys ")), rect);
}
