//! Crash detection: which agents are alive, and what they were running.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use cdktr_store::Store;

/// Env var: how long an agent may stay silent before its unfinished
/// workflow instances are marked CRASHED (ms, default 30000).
pub const ENV_HEARTBEAT_TIMEOUT_MS: &str = "CDKTR_AGENT_HEARTBEAT_TIMEOUT_MS";
/// The default heartbeat timeout.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);

struct Agent {
    last_seen: Instant,
    running: Vec<String>,
}

/// The agents' heartbeats, owned by the API thread.
pub(crate) struct Liveness {
    timeout: Duration,
    agents: HashMap<String, Agent>,
    /// Instances unfinished in the database when the principal started;
    /// whoever runs them has one timeout to claim them in a heartbeat.
    orphans: HashSet<String>,
    orphans_due: Instant,
    /// CRASHED workflow rows written.
    pub crashed: u64,
}

impl Liveness {
    pub fn new(timeout: Duration, orphans: Vec<String>, now: Instant) -> Liveness {
        if !orphans.is_empty() {
            log::info!(
                "{} workflow instance(s) were running when the principal last stopped; \
                 they are marked CRASHED unless an agent reports them within {timeout:?}",
                orphans.len()
            );
        }
        Liveness {
            timeout,
            agents: HashMap::new(),
            orphans: orphans.into_iter().collect(),
            orphans_due: now + timeout,
            crashed: 0,
        }
    }

    pub fn heartbeat(&mut self, agent_id: String, running: Vec<String>, now: Instant) {
        for id in &running {
            self.orphans.remove(id);
        }
        self.agents.insert(
            agent_id,
            Agent {
                last_seen: now,
                running,
            },
        );
    }

    pub fn live_agents(&self) -> usize {
        self.agents.len()
    }

    /// Marks CRASHED what silent agents were running. An instance whose
    /// row cannot be written stays owed and is retried on the next sweep.
    pub fn sweep(&mut self, store: &Store, now: Instant, now_ms: i64) {
        let silent: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, a)| now.duration_since(a.last_seen) >= self.timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in silent {
            let agent = self.agents.get_mut(&id).expect("listed above");
            agent
                .running
                .retain(|instance| !crash(store, &mut self.crashed, instance, now_ms, &id));
            if agent.running.is_empty() {
                self.agents.remove(&id);
            }
        }
        if now >= self.orphans_due && !self.orphans.is_empty() {
            let crashed = &mut self.crashed;
            self.orphans
                .retain(|instance| !crash(store, crashed, instance, now_ms, "(none since restart)"));
        }
    }
}

/// True once the instance needs nothing more: marked, or already finished.
fn crash(store: &Store, crashed: &mut u64, instance: &str, now_ms: i64, agent: &str) -> bool {
    match store.mark_crashed(instance, now_ms) {
        Ok(marked) => {
            if marked {
                *crashed += 1;
                log::warn!("workflow instance {instance:?} marked CRASHED: agent {agent} stopped heartbeating");
            }
            true
        }
        Err(e) => {
            log::error!("cannot mark {instance:?} CRASHED yet (will retry): {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdktr_store::RunStatus;

    #[test]
    fn a_silent_agent_crashes_its_unfinished_runs_exactly_once() {
        let store = Store::open_in_memory().unwrap();
        for (i, s) in [RunStatus::Running, RunStatus::Running, RunStatus::Completed]
            .into_iter()
            .enumerate()
        {
            store.record_workflow_status("w", &format!("i{i}"), s, 10).unwrap();
        }
        store.record_workflow_status("w", "old", RunStatus::Running, 5).unwrap();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut l = Liveness::new(timeout, store.unfinished_workflows().unwrap(), t0);
        l.heartbeat("a".into(), vec!["i0".into(), "i1".into(), "i2".into()], t0);
        l.heartbeat("b".into(), vec![], t0);
        // The orphans were all claimed except "old".
        l.sweep(&store, t0 + Duration::from_secs(5), 100);
        assert_eq!((l.crashed, l.live_agents()), (0, 2));
        l.heartbeat("b".into(), vec![], t0 + Duration::from_secs(6));
        l.sweep(&store, t0 + timeout, 200);
        // a's two running instances, and the unclaimed orphan; b lives.
        assert_eq!(l.crashed, 3);
        assert_eq!(l.live_agents(), 1);
        for i in ["i0", "i1", "old"] {
            assert_eq!(
                store.latest_workflow_status(i).unwrap(),
                Some((RunStatus::Crashed, 200))
            );
        }
        assert_eq!(
            store.latest_workflow_status("i2").unwrap(),
            Some((RunStatus::Completed, 10))
        );
        l.sweep(&store, t0 + timeout * 3, 300);
        assert_eq!(l.crashed, 3);
        assert_eq!(
            store
                .timeline("i0")
                .unwrap()
                .iter()
                .filter(|c| c.status == RunStatus::Crashed)
                .count(),
            1
        );
    }
}
