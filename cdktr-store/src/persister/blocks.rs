//! The `instance_block` rows a batch adds: which blocks of line numbers
//! hold each instance's lines, one row per instance per block however
//! many batches the block takes.

use std::collections::HashSet;

use cdktr_log::Line;

use crate::migrations::INSTANCE_BLOCK_LINES;

type Set<T> = HashSet<T, foldhash::fast::RandomState>;

/// What the writer has recorded of the newest block. Only committed rows
/// count: a batch that fails records nothing, and its retry adds its rows
/// again. A new writer knows nothing: after a restart the block being
/// filled gets its rows a second time (a duplicate only costs a row).
#[derive(Default)]
pub(super) struct BlockIndex {
    block: u64,
    /// The instances `block` is recorded for.
    recorded: Set<Box<str>>,
}

impl BlockIndex {
    /// The rows `lines`, numbered from `first_line`, add: each instance in
    /// each block, but those already recorded.
    pub fn rows<'a>(&self, lines: &'a [Line], first_line: u64) -> Vec<(&'a str, u64)> {
        let mut new: Set<(&str, u64)> = Set::default();
        let mut rows = Vec::new();
        for (line, id) in lines.iter().zip(first_line..) {
            let block = id / INSTANCE_BLOCK_LINES;
            let instance = line.workflow_instance_id();
            if block == self.block && self.recorded.contains(instance) {
                continue;
            }
            if new.insert((instance, block)) {
                rows.push((instance, block));
            }
        }
        rows
    }

    /// Notes `rows` as written, by a batch whose last line is `last_line`.
    pub fn committed(&mut self, rows: &[(&str, u64)], last_line: u64) {
        let last = last_line / INSTANCE_BLOCK_LINES;
        if last > self.block {
            self.recorded.clear();
            self.block = last;
        }
        if last == self.block {
            for (instance, _) in rows.iter().filter(|(_, b)| *b == last) {
                self.recorded.insert((*instance).into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdktr_log::{Envelope, Level, LogMessage};

    fn lines(instances: &[&str]) -> Vec<Line> {
        instances
            .iter()
            .zip(1..)
            .map(|(i, seq)| {
                let m = LogMessage {
                    workflow_id: "w".into(),
                    workflow_name: "W".into(),
                    workflow_instance_id: (*i).into(),
                    task_name: "t".into(),
                    task_instance_id: "ti".into(),
                    timestamp_ms: seq as i64,
                    level: Level::Info,
                    payload: "x".into(),
                };
                Line::from(Envelope {
                    publisher_id: "p".into(),
                    seq,
                    replays: false,
                    message: m,
                })
            })
            .collect()
    }

    #[test]
    fn a_block_gets_one_row_per_instance_across_batches() {
        let mut index = BlockIndex::default();
        let first = lines(&["a", "b", "a"]);
        let rows = index.rows(&first, 0);
        assert_eq!(rows, [("a", 0), ("b", 0)]);
        index.committed(&rows, 2);
        let second = lines(&["b", "c", "a"]);
        let rows = index.rows(&second, 3);
        assert_eq!(rows, [("c", 0)], "a and b are recorded for block 0");
        index.committed(&rows, 5);
        assert!(index.rows(&second, 6).is_empty());
    }

    #[test]
    fn a_batch_across_blocks_records_each_instance_in_each_block() {
        let mut index = BlockIndex::default();
        let first = INSTANCE_BLOCK_LINES - 2;
        let batch = lines(&["a", "b", "a", "b", "c"]);
        let rows = index.rows(&batch, first);
        assert_eq!(rows, [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("c", 1)]);
        index.committed(&rows, first + 4);
        // The next batch in block 1 adds only what block 1 has not got.
        let next = lines(&["c", "d"]);
        let rows = index.rows(&next, first + 5);
        assert_eq!(rows, [("d", 1)]);
    }

    #[test]
    fn rows_of_a_failed_batch_come_again_with_its_retry() {
        let index = BlockIndex::default();
        let batch = lines(&["a", "b"]);
        let rows = index.rows(&batch, 0);
        // Not committed: the retry (here with more lines) adds them again.
        let retry = lines(&["a", "b", "c"]);
        assert_eq!(index.rows(&retry, 0), [("a", 0), ("b", 0), ("c", 0)]);
        assert_eq!(rows.len(), 2);
    }
}
