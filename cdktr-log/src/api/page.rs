//! [`ReplyPage`]: a page of lines that owns the reply they came in.

use super::logs;
use crate::error::{Error, Result};
use crate::query::{Cursor, LogPage, PageLine};

/// A page of stored lines that keeps the `QueryLogs` reply they arrived
/// in and lends them out from it ([`ApiClient::reply_page`]).
///
/// A [`LogPage`] copies every line into seven strings of its own, and
/// those allocations were most of what reading a page cost a client
/// (`docs/performance.md`); [`ApiClient::read_logs`] copies nothing but
/// lends the lines only inside a closure. A `ReplyPage` copies nothing
/// and can be kept, moved and sent to another thread: it holds the
/// reply's bytes (about 135 bytes a line) and one [`PageLine`] per line.
///
/// [`ApiClient::reply_page`]: super::ApiClient::reply_page
/// [`ApiClient::read_logs`]: super::ApiClient::read_logs
pub struct ReplyPage {
    cell: Cell,
}

/// What the lines are borrowed from: the reply's bytes, or, for a reply
/// the in-place reader does not take (its tag not first), the page the
/// general decoder made of it.
enum Held {
    Reply(zmq::Message),
    Page(LogPage),
}

struct Lent<'a> {
    lines: Vec<PageLine<'a>>,
    next: Option<Cursor>,
}

self_cell::self_cell!(
    struct Cell {
        owner: Held,
        #[covariant]
        dependent: Lent,
    }
);

impl ReplyPage {
    /// The page in `reply`, a `QueryLogs` reply's bytes.
    ///
    /// # Errors
    /// [`Error::Api`] for an error reply; [`Error::Reply`] for another
    /// reply, or bytes that are not one.
    pub(super) fn new(reply: zmq::Message) -> Result<ReplyPage> {
        let held = match logs::tag_first(&reply) {
            true => Held::Reply(reply),
            false => Held::Page(logs::decoded_page(&reply)?),
        };
        let cell = Cell::try_new(held, |held| match held {
            Held::Reply(bytes) => match logs::read_in_place(bytes) {
                Some(read) => read.map(|(lines, next)| Lent { lines, next }),
                None => Err(Error::Reply("not a Logs reply".into())),
            },
            Held::Page(page) => Ok(Lent {
                lines: page.lines_with_origins(),
                next: page.next,
            }),
        })?;
        Ok(ReplyPage { cell })
    }

    /// The lines, each with its origin, in the page's order.
    pub fn lines(&self) -> &[PageLine<'_>] {
        &self.cell.borrow_dependent().lines
    }

    /// Where the page ended, for the next one; `None` on the last page.
    pub fn next(&self) -> Option<Cursor> {
        self.cell.borrow_dependent().next
    }

    /// How many lines the page holds.
    pub fn len(&self) -> usize {
        self.lines().len()
    }

    /// Whether the page holds no line.
    pub fn is_empty(&self) -> bool {
        self.lines().is_empty()
    }

    /// The page with its lines copied into strings of their own.
    pub fn to_page(&self) -> LogPage {
        LogPage::from_lines(self.lines().iter().copied(), self.next())
    }
}

impl std::fmt::Debug for ReplyPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyPage")
            .field("lines", &self.len())
            .field("next", &self.next())
            .finish_non_exhaustive()
    }
}
