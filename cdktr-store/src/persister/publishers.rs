//! Publisher ids as small numbers: `logstore.publisher_key` is a UINTEGER
//! per line and the `publisher` table holds each id once. A VARCHAR id on
//! every line cost a quarter of the ingest rate (`docs/performance.md`).

use duckdb::Connection;

use super::HashMap;
use crate::error::{Error, Result};

#[derive(Debug, Default)]
pub(super) struct Publishers {
    keys: HashMap<String, u32>,
    next: u32,
}

impl Publishers {
    pub fn load(conn: &Connection) -> Result<Publishers> {
        let read = || Error::db("reading the publisher table");
        let mut stmt = conn
            .prepare("SELECT publisher_id, publisher_key FROM publisher")
            .map_err(read())?;
        let keys = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
            .map_err(read())?
            .collect::<duckdb::Result<HashMap<_, _>>>()
            .map_err(read())?;
        let next = keys.values().max().map_or(1, |m| m + 1);
        Ok(Publishers { keys, next })
    }

    /// The key of `id`; a new one is numbered now and added to `fresh`,
    /// for the batch's transaction to record.
    pub fn key(&mut self, id: &str, fresh: &mut Vec<(u32, String)>) -> u32 {
        if let Some(&k) = self.keys.get(id) {
            return k;
        }
        let k = self.next;
        self.next += 1;
        self.keys.insert(id.to_owned(), k);
        fresh.push((k, id.to_owned()));
        k
    }

    /// Takes back keys numbered for a batch that was not committed (the
    /// numbers themselves are not reused).
    pub fn forget(&mut self, fresh: &[(u32, String)]) {
        for (_, id) in fresh {
            self.keys.remove(id);
        }
    }
}
