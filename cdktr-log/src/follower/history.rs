//! Steps 1-3 of following: the marker, the snapshot, the history.

use super::{Followed, FollowedLine, History, LogFollower, HISTORY_TIMEOUT};
use crate::error::{Error, Result};
use crate::message::{now_ms, LogMessage};
use crate::query::{LevelFilter, LogQuery, Order, Origin};

impl LogFollower {
    /// Steps 1-3 of the module documentation. The first sync reads the
    /// history asked for; later ones read what was stored since the last.
    pub(super) fn sync(&mut self, first: bool) -> Result<()> {
        self.api.set_timeout(HISTORY_TIMEOUT.max(self.config.timeout));
        let result = self.sync_now(first);
        self.api.set_timeout(self.config.timeout);
        result
    }

    fn sync_now(&mut self, first: bool) -> Result<()> {
        let timeout = self.config.timeout;
        if !self.sub.wait_subscribed(timeout)? {
            return Err(Error::Timeout {
                endpoint: self.config.bus.publishing_endpoint(),
                after: timeout,
            });
        }
        let mut filter = self.filter();
        // One snapshot for every workflow: its marks may cover more lines
        // than are followed (that only makes them higher), never fewer.
        if self.config.workflows.len() == 1 {
            filter.workflow_id = self.config.workflows.first().cloned();
        }
        // The marks matter for lines that may yet come live: on a re-sync,
        // those stored since the last snapshot (the marks before are
        // known); following live only, the last hour's (an older line that
        // comes live again is news to this follower).
        if !first {
            filter.stored_after = self.pinned;
        } else if self.config.history == History::Live {
            filter.start_ms = Some(self.resume_from.saturating_sub(3_600_000));
        }
        let snap = match self.api.snapshot(&filter) {
            Ok(snap) => snap,
            // Live lines need no history: a principal whose database fails
            // still serves them. A re-sync then goes by time.
            Err(Error::Api { kind, message }) if first && self.config.history == History::Live => {
                log::warn!("follower: no snapshot of the stored lines ({kind}: {message}); following live lines");
                self.uptime_ms = self.api.stats().map(|s| s.uptime_ms).unwrap_or(0);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if first {
            self.uptime_ms = self.api.stats().map(|s| s.uptime_ms).unwrap_or(0);
        }
        let before = self.seen.clone();
        let mut lines = Vec::new();
        let stored_after = match self.pinned {
            // The same database, grown since: only what it stored since.
            Some(prev) if !first && snap.row >= prev => Some(prev),
            _ => None,
        };
        let history = match (first, stored_after) {
            (true, _) => self.config.history,
            (false, Some(_)) => History::All,
            // Another database (rows numbered anew): by time instead.
            (false, None) => History::Since(self.resume_from),
        };
        let workflows: Vec<Option<String>> = match self.config.workflows.as_slice() {
            [] => vec![None],
            w => w.iter().cloned().map(Some).collect(),
        };
        for w in workflows {
            let base = LogQuery {
                workflow_id: w,
                as_of: Some(snap.row),
                stored_after,
                ..self.filter()
            };
            self.read_history(base, history, &mut lines)?;
        }
        if self.config.workflows.len() > 1 {
            lines.sort_by_key(|(m, _): &(LogMessage, Option<Origin>)| m.timestamp_ms);
            if let History::Last(n) = history {
                let cut = lines.len().saturating_sub(n);
                lines.drain(..cut);
            }
        }
        if first {
            self.resume_from = lines
                .first()
                .map_or(self.resume_from, |(m, _)| m.timestamp_ms.min(now_ms()));
        }
        for (message, origin) in lines {
            let shown = match &origin {
                Some(o) => before.get(&o.publisher_id).is_some_and(|&s| o.seq <= s),
                // Lines without an identity are old: shown on the first
                // read only.
                None => !first,
            };
            if !shown {
                if let Some(o) = &origin {
                    let s = self.seen.entry(o.publisher_id.clone()).or_default();
                    *s = (*s).max(o.seq);
                }
                self.queue.push_back(Followed::Line(Box::new(FollowedLine {
                    message,
                    origin,
                    live: false,
                })));
            }
        }
        for (publisher, seq) in snap.persisted {
            let s = self.seen.entry(publisher).or_default();
            *s = (*s).max(seq);
        }
        self.pinned = Some(snap.row);
        Ok(())
    }

    /// Appends the lines of one history query, oldest first.
    fn read_history(
        &mut self,
        base: LogQuery,
        history: History,
        out: &mut Vec<(LogMessage, Option<Origin>)>,
    ) -> Result<()> {
        let (query, last) = match history {
            History::Live => (
                LogQuery {
                    start_ms: Some(self.resume_from),
                    ..base
                },
                None,
            ),
            History::Since(t) => (
                LogQuery {
                    start_ms: Some(t),
                    ..base
                },
                None,
            ),
            History::All => (base, None),
            History::Last(0) => return Ok(()),
            History::Last(n) => (
                LogQuery {
                    order: Order::NewestFirst,
                    ..base
                },
                Some(n),
            ),
        };
        let from = out.len();
        let mut pages = self.api.pages(query);
        if let Some(n) = last {
            pages = pages.max_lines(n);
        }
        for page in pages {
            let page = page?;
            let origins = page.origins.into_iter().chain(std::iter::repeat(None));
            out.extend(page.lines.into_iter().zip(origins));
        }
        if let Some(n) = last {
            out.truncate(from + n);
            out[from..].reverse();
        }
        Ok(())
    }

    /// The filters every query and the live stream share (no workflow:
    /// each query names its own).
    fn filter(&self) -> LogQuery {
        LogQuery {
            start_ms: Some(i64::MIN),
            workflow_instance_id: self.config.instance.clone(),
            task_name: self.config.task.clone(),
            levels: self.config.min_level.map(LevelFilter::AtLeast),
            limit: Some(crate::api::MAX_PAGE_LINES),
            ..LogQuery::default()
        }
    }
}
