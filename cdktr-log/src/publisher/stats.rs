//! What a publisher counts.

/// Counters of a publisher, as of the moment they are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Messages accepted from callers.
    pub published: u64,
    /// Messages handed to the socket (the first time).
    pub sent: u64,
    /// Messages handed to the socket again after a lost connection or a
    /// stall (acknowledged mode).
    pub resent: u64,
    /// Messages dropped: both caps full, or (best effort) undelivered when
    /// shutdown timed out.
    pub dropped: u64,
    /// Highest sequence number the principal reported persisted
    /// (acknowledged mode).
    pub acknowledged: u64,
    /// Messages held in memory: unsent, or (acknowledged mode) unacknowledged.
    pub buffered: u64,
    /// Bytes held in memory.
    pub buffered_bytes: u64,
    /// Messages kept only in the spool (past the memory cap) so far;
    /// acknowledged delivery writes every message there.
    pub spilled: u64,
    /// Bytes in the spool directory now.
    pub spooled_bytes: u64,
    /// Messages left in the spool at shutdown, unacknowledged, for the next
    /// publisher using the directory.
    pub left_in_spool: u64,
    /// Lines this publisher told the principal are lost for good: numbered,
    /// then gone from memory and spool before being stored (a spool torn
    /// when its owner was killed, or unwritable).
    pub declared_lost: u64,
}
