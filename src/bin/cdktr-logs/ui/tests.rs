//! The screens drawn on ratatui's TestBackend, and keys applied to the
//! state, without a terminal.

use cdktr_log::api::PrincipalStats;
use cdktr_log::{Level, LogMessage, RunStatus, StatusChange, WorkflowRun};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;
use ratatui::Terminal;

use super::app::{App, Effect, Msg, Screen};

const T0: i64 = 1_795_768_200_000;

fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn code(k: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(k, KeyModifiers::NONE))
}

fn run(id: &str, status: RunStatus, first: i64, last: i64) -> WorkflowRun {
    WorkflowRun {
        workflow_id: "etl".into(),
        workflow_instance_id: id.into(),
        status,
        first_ms: first,
        last_ms: last,
    }
}

fn line(task: &str, level: Level, payload: &str, i: i64) -> LogMessage {
    LogMessage {
        workflow_id: "etl".into(),
        workflow_name: "ETL".into(),
        workflow_instance_id: "etl-1".into(),
        task_name: task.into(),
        task_instance_id: format!("{task}-1"),
        timestamp_ms: T0 + i,
        level,
        payload: payload.into(),
    }
}

fn draw(app: &mut App, w: u16, h: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| app.render(f, T0 + 60_000)).unwrap();
    t.backend().buffer().clone()
}

fn rows(b: &Buffer) -> Vec<String> {
    let w = usize::from(b.area.width);
    b.content()
        .chunks(w)
        .map(|r| r.iter().map(|c| c.symbol()).collect::<String>())
        .collect()
}

fn screen(b: &Buffer) -> String {
    rows(b).join("\n")
}

/// An app on the run screen of `etl-1` with lines of two tasks.
fn run_app(n: i64) -> App {
    let mut app = App::new("tcp://127.0.0.1:5561".into(), 1_000);
    app.open("etl-1".into(), Some("etl".into()));
    let lines = (0..n)
        .map(|i| {
            let level = if i % 10 == 7 { Level::Error } else { Level::Info };
            line(
                if i % 2 == 0 { "extract" } else { "load" },
                level,
                &format!("row {i}"),
                i,
            )
        })
        .collect();
    app.handle(Msg::Lines("etl-1".into(), lines));
    app
}

#[test]
fn the_runs_screen_lists_runs_with_status_start_and_duration() {
    let mut app = App::new("tcp://127.0.0.1:5561".into(), 1_000);
    app.handle(Msg::Runs(vec![
        run("etl-2", RunStatus::Running, T0, T0 + 5_000),
        run("etl-1", RunStatus::Failed, T0 - 90_000, T0 - 30_000),
    ]));
    let s = screen(&draw(&mut app, 90, 10));
    assert!(s.contains("RUNNING") && s.contains("etl-2"), "{s}");
    assert!(s.contains("FAILED") && s.contains("etl-1"), "{s}");
    // A running run's duration ticks (to now); a finished one's is fixed.
    assert!(s.contains("1m00s") && s.contains("08:30:00.000"), "{s}");
    // Filter by status: FAILED only.
    for _ in 0..5 {
        app.handle(key('f'));
    }
    let s = screen(&draw(&mut app, 90, 10));
    assert!(s.contains("status=FAILED") && !s.contains("etl-2"), "{s}");
    app.handle(code(KeyCode::Esc));
    // Filter by text.
    for m in [key('/'), key('-'), key('2'), code(KeyCode::Enter)] {
        app.handle(m);
    }
    let s = screen(&draw(&mut app, 90, 10));
    assert!(s.contains("etl-2") && !s.contains("etl-1 "), "{s}");
}

#[test]
fn enter_opens_the_selected_run_and_q_goes_back_then_quits() {
    let mut app = App::new("p".into(), 1_000);
    app.handle(Msg::Runs(vec![
        run("etl-2", RunStatus::Running, T0, T0),
        run("etl-1", RunStatus::Completed, T0, T0),
    ]));
    app.handle(key('j'));
    app.handle(code(KeyCode::Enter));
    assert_eq!(
        app.effects.drain(..).collect::<Vec<_>>(),
        [Effect::Open("etl-1".into())]
    );
    assert!(matches!(&app.screen, Screen::Run(r) if r.instance == "etl-1"));
    app.handle(key('q'));
    assert_eq!(app.effects.drain(..).collect::<Vec<_>>(), [Effect::Close]);
    assert!(matches!(app.screen, Screen::Runs) && !app.quit);
    app.handle(key('q'));
    assert!(app.quit);
}

#[test]
fn the_timeline_draws_a_bar_per_task_coloured_by_outcome() {
    let mut app = run_app(0);
    let change = |task: Option<(&str, &str)>, status, at| StatusChange {
        task: task.map(|(a, b)| (a.to_string(), b.to_string())),
        status,
        timestamp_ms: T0 + at,
    };
    app.handle(Msg::Timeline(
        "etl-1".into(),
        vec![
            change(None, RunStatus::Running, 0),
            change(Some(("extract", "extract-1")), RunStatus::Running, 0),
            change(Some(("extract", "extract-1")), RunStatus::Completed, 10_000),
            change(Some(("load", "load-1")), RunStatus::Running, 10_000),
            change(Some(("load", "load-1")), RunStatus::Failed, 40_000),
            change(None, RunStatus::Failed, 40_000),
        ],
    ));
    let b = draw(&mut app, 80, 24);
    let r = rows(&b);
    let extract = r
        .iter()
        .position(|l| l.contains("extract ") && l.contains("COMPLETED"))
        .unwrap();
    let load = r
        .iter()
        .position(|l| l.contains("load ") && l.contains("FAILED"))
        .unwrap();
    assert!(
        r[extract].contains("10.0s") && r[load].contains("30.0s"),
        "{}",
        screen(&b)
    );
    // extract's bar starts at the left and is a quarter as long as the axis;
    // load's starts where extract's ends and runs to the end.
    let bar = |row: usize| -> (usize, usize) {
        let cells: Vec<&str> = r[row].split("").collect();
        let first = cells.iter().position(|&c| c == "█").unwrap();
        let last = cells.iter().rposition(|&c| c == "█").unwrap();
        (first, last)
    };
    let (e0, e1) = bar(extract);
    let (l0, l1) = bar(load);
    assert!(
        e1 < l0 + 1 && l1 > e1 && l1 - l0 > 2 * (e1 - e0),
        "{:?} {:?}\n{}",
        (e0, e1),
        (l0, l1),
        screen(&b)
    );
    let colour = |row: usize, x: usize| b.cell((x as u16 - 1, row as u16)).unwrap().fg;
    assert_eq!(colour(extract, e0), Color::Green);
    assert_eq!(colour(load, l0), Color::Red);
    assert!(
        r.iter().any(|l| l.contains("etl-1") && l.contains("FAILED")),
        "the run's status in the title"
    );
}

#[test]
fn search_highlights_matches_and_n_jumps_between_them() {
    let mut app = run_app(200);
    for m in [
        key('/'),
        key('r'),
        key('o'),
        key('w'),
        key(' '),
        key('1'),
        key('5'),
        code(KeyCode::Enter),
    ] {
        app.handle(m);
    }
    let b = draw(&mut app, 80, 24);
    let s = screen(&b);
    assert!(s.contains("/row 15 (11 matches)"), "{s}");
    assert!(s.contains("PAUSED"), "jumping to a match pauses the follow: {s}");
    // Following, the search lands on the newest match.
    let r = rows(&b);
    let y = r.iter().position(|l| l.contains("row 159")).unwrap();
    let x = r[y].find("row 159").unwrap();
    let x = r[y][..x].chars().count() as u16;
    assert_eq!(
        b.cell((x, y as u16)).unwrap().bg,
        Color::Yellow,
        "the match is highlighted"
    );
    // From the top, n goes down through the matches and N back up.
    let top_line = |app: &mut App| {
        rows(&draw(app, 80, 24))
            .into_iter()
            .find(|l| l.contains(" INFO ") || l.contains(" ERROR "))
            .unwrap()
    };
    app.handle(key('g'));
    app.handle(key('n'));
    let top = top_line(&mut app);
    assert!(
        top.trim_end().trim_end_matches('│').trim_end().ends_with("row 15"),
        "{top}"
    );
    app.handle(key('n'));
    let top = top_line(&mut app);
    assert!(
        top.trim_end().trim_end_matches('│').trim_end().ends_with("row 150"),
        "{top}"
    );
    app.handle(key('N'));
    let top = top_line(&mut app);
    assert!(
        top.trim_end().trim_end_matches('│').trim_end().ends_with("row 15"),
        "{top}"
    );
    app.handle(key('G'));
    let s = screen(&draw(&mut app, 80, 24));
    assert!(s.contains("FOLLOW") && s.contains("row 199"), "{s}");
}

#[test]
fn log_pane_keys_pause_filter_and_jump() {
    let mut app = run_app(300);
    let pane = |app: &App| match &app.screen {
        Screen::Run(r) => (
            r.pane.follow,
            r.pane.shown(),
            r.pane.min_level,
            r.pane.task.clone(),
            r.pane.wrap,
        ),
        Screen::Runs => unreachable!(),
    };
    draw(&mut app, 80, 24);
    assert!(pane(&app).0, "follows from the start");
    app.handle(code(KeyCode::Up));
    assert!(!pane(&app).0, "scrolling up pauses");
    app.handle(key('G'));
    assert!(pane(&app).0, "G follows again");
    app.handle(key('F'));
    assert!(!pane(&app).0);
    app.handle(key('F'));
    assert!(pane(&app).0);
    // l: DEBUG, INFO, WARN (only the ERROR lines pass), ERROR, all.
    for _ in 0..3 {
        app.handle(key('l'));
    }
    assert_eq!(pane(&app).1, 30);
    assert_eq!(pane(&app).2, Some(Level::Warn));
    app.handle(key('l'));
    app.handle(key('l'));
    assert_eq!((pane(&app).1, pane(&app).2), (300, None));
    // t: extract, load, all.
    app.handle(key('t'));
    assert_eq!((pane(&app).1, pane(&app).3.as_deref()), (150, Some("extract")));
    app.handle(key('t'));
    assert_eq!(pane(&app).3.as_deref(), Some("load"));
    app.handle(key('t'));
    assert_eq!((pane(&app).1, pane(&app).3), (300, None));
    // e: the next ERROR from the top.
    app.handle(key('g'));
    app.handle(key('e'));
    let s = screen(&draw(&mut app, 80, 24));
    let first_row = rows(&draw(&mut app, 80, 24))
        .into_iter()
        .find(|l| l.contains(" INFO ") || l.contains(" ERROR "))
        .unwrap();
    assert!(first_row.contains("ERROR") && first_row.contains("row 7 "), "{s}");
    app.handle(key('w'));
    assert!(pane(&app).4);
    app.handle(key('?'));
    assert!(screen(&draw(&mut app, 80, 24)).contains("minimum level"));
    app.handle(key('x'));
    assert!(!app.help);
}

#[test]
fn the_scrollback_is_bounded_and_says_what_left() {
    let mut app = App::new("p".into(), 100);
    app.open("etl-1".into(), None);
    let lines = (0..250)
        .map(|i| line("t", Level::Info, &format!("row {i}"), i))
        .collect();
    app.handle(Msg::Lines("etl-1".into(), lines));
    let s = screen(&draw(&mut app, 100, 30));
    assert!(
        s.contains("150 older lines left the scrollback") && s.contains("100 lines"),
        "{s}"
    );
    assert!(s.contains("row 249") && !s.contains("row 149 "), "{s}");
}

#[test]
fn an_unreachable_principal_shows_a_banner_until_it_answers() {
    let mut app = App::new("tcp://127.0.0.1:5561".into(), 100);
    app.handle(Msg::Unreachable("no answer within 2s".into()));
    let s = screen(&draw(&mut app, 100, 8));
    assert!(
        s.contains("principal tcp://127.0.0.1:5561 unreachable — retrying: no answer within 2s"),
        "{s}"
    );
    app.handle(Msg::Stats(Box::new(PrincipalStats {
        received: 42,
        persisted: 40,
        ..Default::default()
    })));
    let s = screen(&draw(&mut app, 100, 8));
    assert!(!s.contains("unreachable") && s.contains("received 42"), "{s}");
}

#[test]
fn hostile_lines_and_tiny_terminals_never_break_the_screen() {
    let hostile = [
        "\x1b[2J\x1b[31mred and a clear screen\x1b[0m",
        "tabs\there\tand\tthere",
        "bell\x07 backspace\x08 nul\0 del\x7f c1\u{9b}",
        "wide: 日本語のログ 🎉🎉 👩‍👩‍👧 e\u{301}",
        &"long ".repeat(2_000),
        "",
    ];
    let mut app = App::new("p".into(), 1_000);
    app.handle(Msg::Runs(vec![run("\x1b]0;title\x07", RunStatus::Running, T0, T0)]));
    for (w, h) in [(20, 5), (1, 1), (0, 0), (3, 2), (80, 24), (200, 60), (20, 5)] {
        draw(&mut app, w, h);
    }
    app.open("etl-1".into(), None);
    let lines = hostile
        .iter()
        .enumerate()
        .map(|(i, p)| line("t\x1b", Level::Warn, p, i as i64))
        .collect();
    app.handle(Msg::Lines("etl-1".into(), lines));
    for wrap in [false, true] {
        if wrap {
            app.handle(key('w'));
        }
        for (w, h) in [(20, 5), (1, 1), (0, 0), (7, 3), (80, 24), (200, 60), (20, 5)] {
            let b = draw(&mut app, w, h);
            for c in b.content() {
                assert!(!c.symbol().chars().any(char::is_control), "{:?} at {w}x{h}", c.symbol());
            }
        }
    }
    app.handle(key('w'));
    let s = screen(&draw(&mut app, 200, 40));
    assert!(s.contains("\\u{1b}[2J"), "escapes shown as text: {s}");
    let wide = rows(&draw(&mut app, 200, 40))
        .into_iter()
        .find(|r| r.contains('日'))
        .unwrap();
    assert!(
        wide.contains('グ') && wide.ends_with('│'),
        "wide characters keep the border in place: {wide}"
    );
}
