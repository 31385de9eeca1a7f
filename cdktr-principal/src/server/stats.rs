//! The principal's counters: the API's own, and the snapshot of every
//! component's that `Stats` returns.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use cdktr_log::api::PrincipalStats;
use cdktr_log::curve::Authorizer;
use cdktr_log::LogManager;
use cdktr_store::{Persister, Store};

/// Counts of the API thread, shared with the query workers.
#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub live_agents: AtomicU64,
    pub crashed: AtomicU64,
    pub heartbeats: AtomicU64,
    /// With CURVE: its refusals are counted there.
    pub authorizer: std::sync::OnceLock<Authorizer>,
}

impl Counters {
    /// Counts a reply, and whether it is an error.
    pub fn count(&self, error: bool) {
        self.requests.fetch_add(1, Relaxed);
        if error {
            self.errors.fetch_add(1, Relaxed);
        }
    }
}

pub(super) fn snapshot(
    manager: &LogManager,
    persister: &Persister,
    store: &Store,
    c: &Counters,
    started: Instant,
) -> PrincipalStats {
    let (m, p) = (manager.stats(), persister.stats());
    let (archive_files, archived_lines, archive_failures) = store.archive_totals();
    PrincipalStats {
        received: m.received,
        forwarded: m.forwarded,
        replayed: m.replayed,
        rejected: m.rejected,
        persisted: p.persisted,
        pending: p.pending,
        duplicates: p.duplicates,
        gaps: p.gaps,
        declared_lost: p.declared_lost,
        shed: p.shed,
        failed_flushes: p.failed_flushes,
        batches: p.batches,
        slowest_write_ms: p.slowest_flush.as_millis() as u64,
        store_waited_ms: m.sink_blocked.as_millis() as u64,
        reopened: p.reopened,
        connections: m.connections,
        disconnects: m.disconnects,
        refusing_connections: m.refusing_connections,
        listener_pauses: m.listener_pauses,
        shared_ids: m.shared_ids,
        space_low: p.space_low,
        free_space_bytes: p.free_space_bytes,
        archive_files,
        archived_lines,
        archive_failures,
        live_agents: c.live_agents.load(Relaxed),
        heartbeats: c.heartbeats.load(Relaxed),
        crashed: c.crashed.load(Relaxed),
        requests: c.requests.load(Relaxed),
        request_errors: c.errors.load(Relaxed),
        uptime_ms: started.elapsed().as_millis() as u64,
        rss_bytes: proc_status_kb("VmRSS:") * 1024,
        peak_rss_bytes: proc_status_kb("VmHWM:") * 1024,
        cpu_ms: cpu_ms(),
        refused: c.authorizer.get().map_or(0, Authorizer::refused),
    }
}

/// User and system CPU time of the whole process, in ms.
fn cpu_ms() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: it succeeded, so the struct is written.
    let u = unsafe { usage.assume_init() };
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(u.ru_utime) + ms(u.ru_stime)
}

/// A field of `/proc/self/status`, in kB; 0 where there is none.
fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
