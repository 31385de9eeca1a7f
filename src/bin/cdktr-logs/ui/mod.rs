//! `cdktr-logs ui`: pick a run, watch its logs scroll by.
//!
//! Synchronous, as the rest of cdktr: input, the poller and the follower
//! each have a thread and send [`Msg`]s to this one, which applies them and
//! draws at most 30 frames a second, so a burst of lines never delays a key.
//! The terminal is restored however the UI ends: on return, on a panic
//! (a hook), on SIGTERM, SIGINT or SIGHUP (a flag the loop watches), or
//! Ctrl-C (a key in raw mode).

mod app;
mod logpane;
mod run;
mod runs;
pub(crate) mod text;
mod workers;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdktr_log::api::LazyClient;
use clap::{value_parser, Arg, ArgMatches, Command};
use crossbeam_channel::{bounded, select, Receiver, Sender};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event, KeyEventKind};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::Terminal;

use self::app::{App, Effect, Msg};
use self::logpane::DEFAULT_SCROLLBACK;
use crate::{Principal, Result};

/// Shortest time between two frames.
const FRAME: Duration = Duration::from_millis(33);
/// Longest: running durations tick.
const TICK: Duration = Duration::from_secs(1);

pub fn command() -> Command {
    Command::new("ui")
        .about("Browse runs and watch their logs in the terminal")
        .arg(
            Arg::new("instance")
                .short('i')
                .long("instance")
                .help("Open this workflow instance straight away"),
        )
        .arg(
            Arg::new("workflow")
                .short('w')
                .long("workflow")
                .help("Only runs of this workflow id"),
        )
        .arg(
            Arg::new("scrollback")
                .long("scrollback")
                .value_name("LINES")
                .value_parser(value_parser!(u64).range(1..))
                .help("Lines a run's log pane keeps [default: 100000]"),
        )
}

/// Raw mode and the alternate screen, undone on drop.
struct Screen;

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        enable_raw_mode()?;
        let screen = Screen;
        execute!(
            std::io::stdout(),
            EnterAlternateScreen,
            EnableMouseCapture,
            cursor::Hide,
            Clear(ClearType::All)
        )?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

fn restore() {
    let _ = execute!(
        std::io::stdout(),
        DisableMouseCapture,
        LeaveAlternateScreen,
        cursor::Show
    );
    let _ = disable_raw_mode();
}

pub fn run(m: &ArgMatches, p: &Principal) -> Result {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err("`ui` needs a terminal (use `tail` or `query` in scripts)".into());
    }
    let scrollback = m
        .get_one::<u64>("scrollback")
        .map_or(DEFAULT_SCROLLBACK, |&n| usize::try_from(n).unwrap_or(usize::MAX));
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, signalled.clone())?;
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        hook(info);
    }));

    // Keys on a channel of their own, looked at before any data: a burst
    // of lines never queues ahead of a key.
    let (tx, rx) = bounded::<Msg>(256);
    let (keys_tx, keys) = bounded::<Msg>(256);
    let open = Arc::new(Mutex::new(None::<String>));
    let _poller = workers::poller(
        LazyClient::new(&p.api, Duration::from_secs(2)).curve(p.keys.clone()),
        m.get_one::<String>("workflow").cloned(),
        open.clone(),
        tx.clone(),
    )?;
    let mut app = App::new(p.api.endpoint(), scrollback);
    if let Some(i) = m.get_one::<String>("instance") {
        app.open(i.clone(), None);
    }

    let _screen = Screen::enter()?;
    // Not `terminal.clear()`: it asks the terminal where its cursor is,
    // which some terminals never answer.
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    let input = input_thread(keys_tx)?;
    let mut follower: Option<workers::Worker> = None;
    let mut next_frame = Instant::now();
    let mut last_draw = Instant::now() - TICK;
    let mut dirty = true;
    loop {
        let wait = if dirty {
            next_frame.saturating_duration_since(Instant::now())
        } else {
            (last_draw + TICK).saturating_duration_since(Instant::now())
        };
        dirty |= take_keys(&keys, &mut app);
        select! {
            recv(keys) -> m => match m {
                Ok(msg) => {
                    app.handle(msg);
                    dirty = true;
                }
                Err(_) => break,
            },
            recv(rx) -> m => match m {
                Ok(msg) => {
                    app.handle(msg);
                    dirty = true;
                    // Take what else is waiting, for a while at most, keys first.
                    let start = Instant::now();
                    while start.elapsed() < FRAME / 2 {
                        take_keys(&keys, &mut app);
                        match rx.try_recv() {
                            Ok(msg) => app.handle(msg),
                            Err(_) => break,
                        }
                    }
                }
                Err(_) => break,
            },
            default(wait.max(Duration::from_millis(1))) => {}
        }
        for effect in std::mem::take(&mut app.effects) {
            match effect {
                Effect::Open(instance) => {
                    *open.lock().unwrap_or_else(|e| e.into_inner()) = Some(instance.clone());
                    drop(follower.take());
                    follower = Some(workers::follower(
                        p.bus.clone(),
                        p.api.clone(),
                        p.keys.clone(),
                        instance,
                        scrollback,
                        tx.clone(),
                    )?);
                }
                Effect::Close => {
                    *open.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    follower = None;
                }
            }
        }
        if app.quit || signalled.load(Relaxed) {
            break;
        }
        let now = Instant::now();
        if (dirty && now >= next_frame) || now >= last_draw + TICK {
            terminal.draw(|f| app.render(f, cdktr_log::message::now_ms()))?;
            (dirty, last_draw, next_frame) = (false, now, now + FRAME);
        }
    }
    input.stop.store(true, Relaxed);
    drop(follower);
    Ok(())
}

/// Applies the keys waiting; true if there were any.
fn take_keys(keys: &Receiver<Msg>, app: &mut App) -> bool {
    let mut any = false;
    while let Ok(msg) = keys.try_recv() {
        app.handle(msg);
        any = true;
    }
    any
}

struct Input {
    stop: Arc<AtomicBool>,
}

/// Reads keys, mouse and resizes, and hands them over; stops when told
/// (it looks every 100 ms).
fn input_thread(tx: Sender<Msg>) -> std::io::Result<Input> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("cdktr-ui-input".into())
        .spawn(move || {
            while !flag.load(Relaxed) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => return,
                }
                let msg = match event::read() {
                    Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => Msg::Key(k),
                    Ok(Event::Mouse(m)) => Msg::Mouse(m),
                    Ok(Event::Resize(..)) => Msg::Resize,
                    Ok(_) => continue,
                    Err(_) => return,
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
        })?;
    Ok(Input { stop })
}

#[cfg(test)]
mod tests;
