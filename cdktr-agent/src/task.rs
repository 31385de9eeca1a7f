//! Runs one task: a child process whose every output line becomes a log
//! line, and whose end becomes a last line with its exit code and duration.

use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cdktr_log::{Level, TaskLogger};

use crate::workflow::Task;

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with this code (0 is success).
    Exited(i32),
    /// Killed by this signal.
    Signalled(i32),
    /// Could not be started.
    NotStarted(String),
    /// Stopped because the agent was told to stop.
    Stopped,
}

impl Outcome {
    /// True for an exit code of 0.
    pub fn success(&self) -> bool {
        *self == Outcome::Exited(0)
    }
}

/// Runs `task` to its end, or until `cancel` is set (then its process group
/// gets SIGTERM, and SIGKILL after `grace`).
pub(crate) fn run(task: &Task, log: &TaskLogger, max_line: usize, cancel: &AtomicBool, grace: Duration) -> Outcome {
    let start = Instant::now();
    let mut cmd = Command::new(&task.command);
    cmd.args(&task.args)
        .envs(&task.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: stopping the task stops what it started.
        .process_group(0);
    if let Some(dir) = &task.dir {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot start {:?}: {e}", task.command);
            emit(log, Level::Error, why.clone());
            return Outcome::NotStarted(why);
        }
    };
    let group = child.id() as i32;
    let (done_tx, done_rx) = mpsc::channel();
    let readers = [
        (
            child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>),
            task.stdout_level,
        ),
        (
            child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>),
            task.stderr_level,
        ),
    ];
    for (reader, level) in readers {
        let Some(reader) = reader else { continue };
        let (log, done) = (log.clone(), done_tx.clone());
        std::thread::spawn(move || {
            if let Err(e) = read_lines(reader, max_line, |line| emit(&log, level, line)) {
                emit(&log, Level::Warn, format!("reading the task's output failed: {e}"));
            }
            let _ = done.send(());
        });
    }
    drop(done_tx);

    let mut stop_sent: Option<Instant> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                emit(log, Level::Error, format!("cannot wait for the task: {e}"));
                break None;
            }
        }
        if cancel.load(Relaxed) {
            match stop_sent {
                None => {
                    signal_group(group, libc::SIGTERM);
                    stop_sent = Some(Instant::now());
                }
                Some(t) if t.elapsed() >= grace => signal_group(group, libc::SIGKILL),
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The output ends when every writer has closed it; something the task
    // left running in the background may hold it open: give it a moment,
    // then stop the group.
    let mut open = 2;
    let until = Instant::now() + Duration::from_secs(2);
    while open > 0 {
        match done_rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(()) => open -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                signal_group(group, libc::SIGKILL);
                let _ = done_rx.recv_timeout(Duration::from_secs(5));
                let _ = done_rx.recv_timeout(Duration::from_secs(5));
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let took = start.elapsed().as_secs_f64();
    let outcome = if stop_sent.is_some() {
        Outcome::Stopped
    } else {
        match status.map(|s| (s.code(), s.signal())) {
            Some((Some(code), _)) => Outcome::Exited(code),
            Some((None, Some(sig))) => Outcome::Signalled(sig),
            _ => Outcome::NotStarted("its status is unknown".into()),
        }
    };
    let (level, line) = match &outcome {
        Outcome::Exited(0) => (
            Level::Info,
            format!("task {} exited with code 0 after {took:.3}s", task.name),
        ),
        Outcome::Exited(c) => (
            Level::Error,
            format!("task {} exited with code {c} after {took:.3}s", task.name),
        ),
        Outcome::Signalled(s) => (
            Level::Error,
            format!(
                "task {} was killed by signal {s} ({}) after {took:.3}s",
                task.name,
                signal_name(*s)
            ),
        ),
        Outcome::Stopped => (
            Level::Error,
            format!(
                "task {} was stopped after {took:.3}s: the agent was told to stop",
                task.name
            ),
        ),
        Outcome::NotStarted(why) => (Level::Error, format!("task {}: {why}", task.name)),
    };
    emit(log, level, line);
    outcome
}

fn signal_group(group: i32, signal: i32) {
    // SAFETY: kill(2) has no memory effects; a negative pid names the group.
    unsafe {
        libc::kill(-group, signal);
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

fn emit(log: &TaskLogger, level: Level, line: String) {
    if let Err(e) = log.log(level, line) {
        log::error!("a task's log line was not published: {e}");
    }
}

/// Reads `r` to its end, calling `emit` with each line: without its `\n`
/// (or `\r\n`), invalid UTF-8 replaced, and split into pieces of at most
/// `max` bytes (at character boundaries) when longer. A last line without a
/// newline is a line too.
pub(crate) fn read_lines(mut r: impl Read, max: usize, mut emit: impl FnMut(String)) -> io::Result<()> {
    let max = max.max(4);
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let scan_from = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        let mut from = scan_from;
        while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
            let end = from + i;
            line(&buf[start..end], max, &mut emit);
            start = end + 1;
            from = start;
        }
        buf.drain(..start);
        // A line still growing past the limit goes out in pieces now, so
        // memory stays bounded whatever the task writes.
        while buf.len() > max {
            let cut = boundary(&buf, max);
            emit(String::from_utf8_lossy(&buf[..cut]).into_owned());
            buf.drain(..cut);
        }
    }
    if !buf.is_empty() {
        line(&buf, max, &mut emit);
    }
    Ok(())
}

fn line(mut bytes: &[u8], max: usize, emit: &mut impl FnMut(String)) {
    if let Some(stripped) = bytes.strip_suffix(b"\r") {
        bytes = stripped;
    }
    if bytes.len() <= max {
        emit(String::from_utf8_lossy(bytes).into_owned());
        return;
    }
    while !bytes.is_empty() {
        let cut = boundary(bytes, max);
        emit(String::from_utf8_lossy(&bytes[..cut]).into_owned());
        bytes = &bytes[cut..];
    }
}

/// The largest cut at or below `max` that does not split a UTF-8
/// character (any cut when the bytes are not UTF-8 there).
fn boundary(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| i > 0 && (bytes[i] & 0xC0) != 0x80)
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut out = Vec::new();
        // One byte at a time too: lines split across reads.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(3);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        read_lines(input, max, |l| out.push(l)).unwrap();
        let mut trickled = Vec::new();
        read_lines(Trickle(input), max, |l| trickled.push(l)).unwrap();
        assert_eq!(out, trickled);
        out
    }

    #[test]
    fn lines_split_replace_and_keep_a_last_partial_line() {
        assert_eq!(lines(b"a\nb\r\n\nlast", 100), ["a", "b", "", "last"]);
        assert_eq!(lines(b"a\xffb\x00c\n", 100), ["a\u{fffd}b\0c"]);
        assert_eq!(lines(b"abcdefghij\nxy", 4), ["abcd", "efgh", "ij", "xy"]);
        // A character is never cut in two.
        let s = "ééééé"; // 10 bytes
        let got = lines(s.as_bytes(), 5);
        assert_eq!(got.concat(), s);
        assert!(got.iter().all(|p| p.len() <= 5 && !p.contains('\u{fffd}')), "{got:?}");
        assert!(lines(b"", 10).is_empty());
    }
}
