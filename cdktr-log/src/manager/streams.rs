//! What the manager knows of each publisher's stream: the highest number
//! it republished (so that a re-send is stored but not shown twice), and
//! whether the numbers keep stepping back (not past the one before), which
//! is what two live publishers sharing one id look like.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::ManagerStats;

/// Steps back within [`WINDOW`] that a single publisher never makes: its
/// re-sends step back once per lost connection or stall (at most about ten
/// in a window), two publishers on one id about once per line.
const STEPS_BACK: u32 = 100;
const WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct Streams {
    map: HashMap<String, Stream>,
}

struct Stream {
    republished: u64,
    last: u64,
    steps_back: u32,
    since: Instant,
}

impl Streams {
    /// Whether `seq` of `publisher` is past everything republished (and so
    /// to be republished now); notices an id shared by two live publishers.
    pub fn fresh(&mut self, publisher: &str, seq: u64, stats: &mut ManagerStats) -> bool {
        // One lookup on the hot path; a new publisher's entry is made only
        // on its first line.
        let Some(s) = self.map.get_mut(publisher) else {
            let s = Stream {
                republished: seq,
                last: seq,
                steps_back: 0,
                since: Instant::now(),
            };
            self.map.insert(publisher.to_owned(), s);
            return true;
        };
        if seq <= s.last {
            s.step_back(publisher, stats);
        }
        s.last = seq;
        if seq <= s.republished {
            return false;
        }
        s.republished = seq;
        true
    }
}

impl Stream {
    fn step_back(&mut self, publisher: &str, stats: &mut ManagerStats) {
        if self.since.elapsed() >= WINDOW {
            self.since = Instant::now();
            self.steps_back = 0;
        }
        self.steps_back += 1;
        if self.steps_back == STEPS_BACK {
            stats.shared_ids += 1;
            log::error!(
                "log manager: publisher id {publisher:?} stepped back {STEPS_BACK} times in {WINDOW:?}: two live \
                 publishers appear to share it. The principal keeps one stream per id and drops the other's \
                 lines as duplicates; give every publisher its own id"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_publishers_on_one_id_are_noticed_and_re_sends_are_not() {
        let mut stats = ManagerStats::default();
        let mut streams = Streams::default();
        // One publisher re-sending after a lost connection, several times.
        for _ in 0..20 {
            for seq in 1..=50 {
                streams.fresh("a", seq, &mut stats);
            }
        }
        assert_eq!(stats.shared_ids, 0);
        let fresh: Vec<bool> = (1..=3).map(|s| streams.fresh("b", s, &mut stats)).collect();
        assert_eq!(fresh, [true, true, true]);
        assert!(!streams.fresh("b", 2, &mut stats), "a re-send is not shown again");
        // Two publishers interleaving one id.
        for seq in 4..200 {
            streams.fresh("c", seq + 1_000, &mut stats);
            streams.fresh("c", seq, &mut stats);
        }
        assert_eq!(stats.shared_ids, 1, "noticed once per window");
    }
}
