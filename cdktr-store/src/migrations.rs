//! The schema, as the migrations that build it (`docs/schema.md`).

use duckdb::Connection;

/// Each migration takes the schema from the previous version to its own.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TYPE run_status AS ENUM ('PENDING', 'RUNNING', 'WAITING', 'COMPLETED', 'FAILED', 'CRASHED');
     CREATE TABLE logstore (
         workflow_id          VARCHAR NOT NULL,
         workflow_name        VARCHAR NOT NULL,
         workflow_instance_id VARCHAR NOT NULL,
         task_name            VARCHAR NOT NULL,
         task_instance_id     VARCHAR NOT NULL,
         timestamp_ms         BIGINT  NOT NULL,
         level                VARCHAR NOT NULL,
         payload              VARCHAR NOT NULL
     );
     CREATE TABLE workflow_run_status (
         workflow_id          VARCHAR    NOT NULL,
         workflow_instance_id VARCHAR    NOT NULL,
         status               run_status NOT NULL,
         timestamp_ms         BIGINT     NOT NULL
     );
     CREATE TABLE task_run_status (
         task_id              VARCHAR    NOT NULL,
         task_instance_id     VARCHAR    NOT NULL,
         workflow_instance_id VARCHAR    NOT NULL,
         status               run_status NOT NULL,
         timestamp_ms         BIGINT     NOT NULL
     );
     CREATE TABLE publisher_watermark (
         publisher_id VARCHAR NOT NULL,
         seq          UBIGINT NOT NULL,
         timestamp_ms BIGINT  NOT NULL
     );",
    ),
    (
        2,
        "CREATE TABLE publisher_gap (
         publisher_id VARCHAR NOT NULL,
         first_seq    UBIGINT NOT NULL,
         last_seq     UBIGINT NOT NULL,
         timestamp_ms BIGINT  NOT NULL
     );",
    ),
    (
        3,
        // A line's identity, as the live stream carries it; NULL for the
        // lines of older files. The publisher as a number: a VARCHAR per
        // line cost a quarter of the ingest rate.
        "CREATE TABLE publisher (
         publisher_key UINTEGER NOT NULL,
         publisher_id  VARCHAR  NOT NULL
     );
     ALTER TABLE logstore ADD COLUMN publisher_key UINTEGER;
     ALTER TABLE logstore ADD COLUMN seq UBIGINT;",
    ),
    (
        4,
        // A line's number in the order stored, kept when the line moves to
        // the archive (a rowid is not: DuckDB renumbers rows when it
        // compacts after deletes). Older files were insert-only, so their
        // rowids are that order. The archive's manifest, insert-only.
        "ALTER TABLE logstore ADD COLUMN line_id UBIGINT;
     UPDATE logstore SET line_id = rowid;
     CREATE TABLE archive_file (
         file_no          UBIGINT NOT NULL,
         path             VARCHAR NOT NULL,
         day              DATE    NOT NULL,
         line_count       UBIGINT NOT NULL,
         bytes            UBIGINT NOT NULL,
         min_timestamp_ms BIGINT  NOT NULL,
         max_timestamp_ms BIGINT  NOT NULL,
         min_line_id      UBIGINT NOT NULL,
         max_line_id      UBIGINT NOT NULL,
         archived_at_ms   BIGINT  NOT NULL
     );
     CREATE TABLE archive_deleted (
         file_no       UBIGINT NOT NULL,
         reason        VARCHAR NOT NULL,
         deleted_at_ms BIGINT  NOT NULL
     );",
    ),
    (
        5,
        // Which blocks of `INSTANCE_BLOCK_LINES` line numbers hold each
        // instance's lines: a query for one instance reads only those
        // blocks of `logstore`, where it read every row (issue 15). One row
        // per instance per block; the lines already there are indexed when
        // the store opens (`index_new_blocks`).
        "CREATE TABLE instance_block (
         workflow_instance_id VARCHAR NOT NULL,
         block                UBIGINT NOT NULL
     );",
    ),
];

/// The lines one `instance_block` row stands for: line numbers
/// `block * INSTANCE_BLOCK_LINES ..` up to the next block (schema version
/// 5, `docs/schema.md`).
pub const INSTANCE_BLOCK_LINES: u64 = 20_480;

/// Indexes the lines after the last block `instance_block` has: those of a
/// file from before schema version 5, or written into `logstore` other
/// than by a persister. Run at every open; with nothing new, DuckDB skips
/// every row group.
pub(crate) fn index_new_blocks(conn: &Connection) -> duckdb::Result<usize> {
    let from: u64 = conn.query_row("SELECT coalesce(max(block) + 1, 0) FROM instance_block", [], |r| {
        r.get(0)
    })?;
    let sql = format!(
        "INSERT INTO instance_block SELECT DISTINCT workflow_instance_id, line_id // {INSTANCE_BLOCK_LINES} \
         FROM logstore WHERE line_id >= ? ORDER BY 2"
    );
    conn.execute(&sql, [from * INSTANCE_BLOCK_LINES])
}
