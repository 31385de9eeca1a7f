//! A page of a log query as DuckDB returned it, read in place.

use std::collections::HashMap;

use cdktr_log::message::MessageRef;
use cdktr_log::query::{Cursor, LogPage, PageLine};
use cdktr_log::Level;
use duckdb::arrow::array::{
    Array, AsArray, LargeStringArray, PrimitiveArray, RecordBatch, StringArray, StringViewArray,
};
use duckdb::arrow::datatypes::{ArrowPrimitiveType, DataType, Int64Type, UInt32Type, UInt64Type};

use crate::error::{Error, Result};

/// One page of a log query, its lines still in DuckDB's result columns.
///
/// [`lines`](Self::lines) reads them borrowed: the principal writes its
/// reply from these, so a page costs no allocation per string on its way
/// out (issue 15); [`to_page`](Self::to_page) owns them.
pub struct StoredPage {
    batches: Vec<Columns>,
    /// Publisher ids by key, for the lines' origins.
    ids: HashMap<u32, String>,
    len: usize,
    next: Option<Cursor>,
}

impl StoredPage {
    /// Reads the query's batches: at most `limit` lines, and no more once
    /// `max_bytes` of text is reached (one line always comes). `ids` maps
    /// the publisher keys the rows name to publisher ids.
    pub(super) fn new(
        batches: &[RecordBatch],
        limit: usize,
        max_bytes: usize,
        ids: impl FnOnce(&[u32]) -> Result<HashMap<u32, String>>,
    ) -> Result<StoredPage> {
        let batches: Vec<Columns> = batches.iter().map(Columns::of).collect::<Result<_>>()?;
        let mut keys: Vec<u32> = batches.iter().flat_map(|b| b.publisher.iter().flatten()).collect();
        keys.sort_unstable();
        keys.dedup();
        let ids = ids(&keys)?;
        let selected: usize = batches.iter().map(|b| b.rows).sum();
        let (mut len, mut bytes, mut last) = (0, 0, None);
        'rows: for b in &batches {
            for i in 0..b.rows {
                if bytes >= max_bytes && len > 0 {
                    break 'rows;
                }
                bytes += b.line(i, &ids).message.text_bytes();
                len += 1;
                last = Some(b.cursor(i));
            }
        }
        // Full, or cut short by the byte cap: more may follow.
        let more = len >= limit || selected > len;
        Ok(StoredPage {
            ids,
            batches,
            len,
            next: if more { last } else { None },
        })
    }

    /// Lines in the page.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the page has no line.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Set when more lines may follow: the query's `after` for the next
    /// page (as [`LogPage::next`]).
    pub fn next(&self) -> Option<Cursor> {
        self.next
    }

    /// The lines, in the query's order, borrowed from the result.
    pub fn lines(&self) -> Lines<'_> {
        Lines {
            page: self,
            batch: 0,
            row: 0,
            left: self.len,
        }
    }

    /// The page with owned lines.
    pub fn to_page(&self) -> LogPage {
        LogPage::from_lines(self.lines(), self.next)
    }
}

impl std::fmt::Debug for StoredPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredPage")
            .field("len", &self.len)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// The lines of a [`StoredPage`], borrowed.
#[derive(Clone)]
pub struct Lines<'a> {
    page: &'a StoredPage,
    batch: usize,
    row: usize,
    left: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = PageLine<'a>;

    fn next(&mut self) -> Option<PageLine<'a>> {
        if self.left == 0 {
            return None;
        }
        let mut b = self.page.batches.get(self.batch)?;
        while self.row >= b.rows {
            self.batch += 1;
            self.row = 0;
            b = self.page.batches.get(self.batch)?;
        }
        let line = b.line(self.row, &self.page.ids);
        self.row += 1;
        self.left -= 1;
        Some(line)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Lines<'_> {}

impl std::fmt::Debug for Lines<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

/// One result batch's columns, typed: the query's SELECT list in order.
struct Columns {
    workflow_id: Strings,
    workflow_name: Strings,
    workflow_instance_id: Strings,
    task_name: Strings,
    task_instance_id: Strings,
    timestamp_ms: PrimitiveArray<Int64Type>,
    level: Strings,
    payload: Strings,
    publisher: PrimitiveArray<UInt32Type>,
    seq: PrimitiveArray<UInt64Type>,
    line_id: PrimitiveArray<UInt64Type>,
    rows: usize,
}

impl Columns {
    fn of(b: &RecordBatch) -> Result<Columns> {
        let text = |i: usize| Strings::of(b.column(i).as_ref());
        Ok(Columns {
            workflow_id: text(0)?,
            workflow_name: text(1)?,
            workflow_instance_id: text(2)?,
            task_name: text(3)?,
            task_instance_id: text(4)?,
            timestamp_ms: column::<Int64Type>(b, 5, "timestamp_ms is not BIGINT")?,
            level: text(6)?,
            payload: text(7)?,
            publisher: column::<UInt32Type>(b, 8, "publisher_key is not UINTEGER")?,
            seq: column::<UInt64Type>(b, 9, "seq is not UBIGINT")?,
            line_id: column::<UInt64Type>(b, 10, "line_id is not UBIGINT")?,
            rows: b.num_rows(),
        })
    }

    fn cursor(&self, i: usize) -> Cursor {
        Cursor {
            timestamp_ms: self.timestamp_ms.value(i),
            row: self.line_id.value(i) as i64,
        }
    }

    fn line<'a>(&'a self, i: usize, ids: &'a HashMap<u32, String>) -> PageLine<'a> {
        let origin = (!self.publisher.is_null(i) && !self.seq.is_null(i))
            .then(|| ids.get(&self.publisher.value(i)))
            .flatten()
            .map(|id| (id.as_str(), self.seq.value(i)));
        PageLine {
            message: MessageRef {
                workflow_id: self.workflow_id.get(i),
                workflow_name: self.workflow_name.get(i),
                workflow_instance_id: self.workflow_instance_id.get(i),
                task_name: self.task_name.get(i),
                task_instance_id: self.task_instance_id.get(i),
                timestamp_ms: self.timestamp_ms.value(i),
                // Only this crate writes the table, always with canonical
                // names; a row written by hand with another name reads as
                // INFO.
                level: self.level.get(i).parse().unwrap_or(Level::Info),
                payload: self.payload.get(i),
            },
            origin,
        }
    }
}

/// Column `i` of `b` as primitives of type `T`.
fn column<T: ArrowPrimitiveType>(b: &RecordBatch, i: usize, wrong: &str) -> Result<PrimitiveArray<T>> {
    b.column(i)
        .as_primitive_opt::<T>()
        .cloned()
        .ok_or_else(|| Error::InvalidQuery(wrong.into()))
}

/// A string column, whichever Arrow string layout DuckDB chose; a NULL
/// reads as "".
enum Strings {
    Utf8(StringArray),
    Large(LargeStringArray),
    View(StringViewArray),
}

impl Strings {
    fn of(a: &dyn Array) -> Result<Strings> {
        Ok(match a.data_type() {
            DataType::Utf8 => Strings::Utf8(a.as_string::<i32>().clone()),
            DataType::LargeUtf8 => Strings::Large(a.as_string::<i64>().clone()),
            DataType::Utf8View => Strings::View(a.as_string_view().clone()),
            DataType::Dictionary(_, _) => {
                let cast = duckdb::arrow::compute::cast(a, &DataType::Utf8)
                    .map_err(|e| Error::InvalidQuery(format!("unexpected column type: {e}")))?;
                Strings::Utf8(cast.as_string::<i32>().clone())
            }
            other => return Err(Error::InvalidQuery(format!("unexpected column type {other}"))),
        })
    }

    fn get(&self, i: usize) -> &str {
        let (null, value) = match self {
            Strings::Utf8(a) => (a.is_null(i), a.value(i)),
            Strings::Large(a) => (a.is_null(i), a.value(i)),
            Strings::View(a) => (a.is_null(i), a.value(i)),
        };
        if null {
            ""
        } else {
            value
        }
    }
}
