//! The `Logs` reply, the one large reply (~250 KB for 1,000 lines as maps,
//! ~135 KB as arrays), written and read without serde's detours. As maps,
//! the bytes are those of the derived encoding of [`Response::Logs`]; as
//! arrays, of its positional encoding (tests hold both equal), so any
//! MessagePack reader of `docs/api.md` reads them.

use rmp::encode as mp;
use serde::Deserialize;

use super::{Layout, Response};
use crate::error::{Error, Result};
use crate::message::MessageRef;
use crate::query::{Cursor, LogPage, PageLine};

/// Writes `{"reply": "Logs", "lines": [...], "origins": [...], "next": ...}`,
/// each line and origin a map or an array as `layout` says; `text_bytes`
/// is the lines' text, to size the buffer once.
pub(super) fn write<'a>(
    lines: impl ExactSizeIterator<Item = MessageRef<'a>>,
    origins: impl ExactSizeIterator<Item = Option<(&'a str, u64)>>,
    next: Option<Cursor>,
    layout: Layout,
    text_bytes: usize,
) -> Vec<u8> {
    let named = layout == Layout::Maps;
    let mut out = Vec::with_capacity(capacity(text_bytes, lines.len(), layout));
    let w = &mut out;
    // A Vec grows as needed: writing to it fails only when memory does.
    let put = |r: std::result::Result<(), mp::ValueWriteError>| r.expect("writing MessagePack to a Vec");
    let text = |w: &mut Vec<u8>, s: &str| put(mp::write_str(w, s));
    let len = |n: usize| u32::try_from(n).expect("a page holds fewer than 2^32 lines");
    put(mp::write_map_len(w, 4).map(drop));
    text(w, "reply");
    text(w, "Logs");
    text(w, "lines");
    put(mp::write_array_len(w, len(lines.len())).map(drop));
    // A field's name, as maps have it.
    let key = |w: &mut Vec<u8>, k: &str| {
        if named {
            text(w, k);
        }
    };
    // A map of `n` fields, or an array of their values.
    let open = |w: &mut Vec<u8>, n: u32| {
        put(if named {
            mp::write_map_len(w, n)
        } else {
            mp::write_array_len(w, n)
        }
        .map(drop));
    };
    for l in lines {
        open(w, 8);
        for (k, value) in [
            ("workflow_id", l.workflow_id),
            ("workflow_name", l.workflow_name),
            ("workflow_instance_id", l.workflow_instance_id),
            ("task_name", l.task_name),
            ("task_instance_id", l.task_instance_id),
        ] {
            key(w, k);
            text(w, value);
        }
        key(w, "timestamp_ms");
        put(mp::write_sint(w, l.timestamp_ms).map(drop));
        key(w, "level");
        text(w, l.level.as_str());
        key(w, "payload");
        text(w, l.payload);
    }
    text(w, "origins");
    put(mp::write_array_len(w, len(origins.len())).map(drop));
    for origin in origins {
        match origin {
            Some((publisher_id, seq)) => {
                open(w, 2);
                key(w, "publisher_id");
                text(w, publisher_id);
                key(w, "seq");
                put(mp::write_uint(w, seq).map(drop));
            }
            None => put(mp::write_nil(w).map_err(mp::ValueWriteError::InvalidMarkerWrite)),
        }
    }
    text(w, "next");
    match next {
        Some(c) => {
            put(mp::write_map_len(w, 2).map(drop));
            text(w, "timestamp_ms");
            put(mp::write_sint(w, c.timestamp_ms).map(drop));
            text(w, "row");
            put(mp::write_sint(w, c.row).map(drop));
        }
        None => put(mp::write_nil(w).map_err(mp::ValueWriteError::InvalidMarkerWrite)),
    }
    out
}

/// Bytes a page's reply takes: per line its strings and ~200 bytes of field
/// names, headers and origin as maps, ~60 as arrays.
fn capacity(text_bytes: usize, lines: usize, layout: Layout) -> usize {
    let per_line = match layout {
        Layout::Maps => 200,
        Layout::Arrays => 60,
    };
    text_bytes + per_line * lines + 64
}

/// Reads a `Logs` reply whose tag comes first, as [`write`] puts it:
/// [`read_in_place`], then the lines owned. serde reads an internally
/// tagged enum through a buffered copy of every value, which was most of a
/// client's decoding time (issue 15). `None` for any other reply, or a tag
/// elsewhere: those take the general path, and both accept the same bytes.
pub(super) fn read(bytes: &[u8]) -> Option<Result<Response>> {
    let page = read_in_place(bytes)?;
    Some(page.map(|(lines, next)| Response::Logs(LogPage::from_lines(lines, next))))
}

/// A page the general path decoded, held to what the fast one reads: one
/// origin per line, each `None` when the reply had none (a principal
/// before schema version 3).
pub(super) fn checked(mut page: LogPage) -> Result<LogPage> {
    if page.origins.is_empty() {
        page.origins = vec![None; page.lines.len()];
    }
    origins_match(page.lines.len(), page.origins.len())?;
    Ok(page)
}

/// An error unless a page's origins, if it sent any, are one per line.
fn origins_match(lines: usize, origins: usize) -> Result<()> {
    if origins != 0 && origins != lines {
        return Err(Error::Reply(format!(
            "a Logs reply with {lines} lines and {origins} origins"
        )));
    }
    Ok(())
}

/// Whether `bytes` are a map whose first entry is `"reply": "Logs"`.
pub(super) fn tag_first(bytes: &[u8]) -> bool {
    const TAG: &[u8] = b"\xa5reply\xa4Logs";
    let header = match bytes.first() {
        Some(0x80..=0x8f) => 1,
        Some(0xde) => 3,
        Some(0xdf) => 5,
        _ => return false,
    };
    bytes.get(header..).is_some_and(|rest| rest.starts_with(TAG))
}

/// Reads a `Logs` reply as [`read`] does, its strings left in `bytes`:
/// each line borrowed, with its origin, and the cursor. `None` as for
/// [`read`].
pub(super) fn read_in_place(bytes: &[u8]) -> Option<Result<(Vec<PageLine<'_>>, Option<Cursor>)>> {
    if !tag_first(bytes) {
        return None;
    }
    #[derive(Deserialize)]
    struct OriginRef<'a> {
        publisher_id: &'a str,
        seq: u64,
    }
    #[derive(Deserialize)]
    struct LogsReply<'a> {
        #[serde(rename = "reply")]
        _reply: serde::de::IgnoredAny,
        #[serde(borrow)]
        lines: Vec<MessageRef<'a>>,
        #[serde(default, borrow)]
        origins: Vec<Option<OriginRef<'a>>>,
        next: Option<Cursor>,
    }
    let read = || -> Result<_> {
        let r: LogsReply<'_> = rmp_serde::from_slice(bytes).map_err(|e| Error::Reply(e.to_string()))?;
        origins_match(r.lines.len(), r.origins.len())?;
        let origins = r.origins.iter().map(|o| o.as_ref().map(|o| (o.publisher_id, o.seq)));
        Ok((PageLine::zip(r.lines, origins), r.next))
    };
    Some(read())
}

/// Hands the lines of a `QueryLogs` reply to `read`, borrowed from
/// `bytes`; an error reply is [`Error::Api`].
pub(super) fn with_page<R>(bytes: &[u8], read: impl FnOnce(&[PageLine<'_>], Option<Cursor>) -> R) -> Result<R> {
    if let Some(page) = read_in_place(bytes) {
        let (lines, next) = page?;
        return Ok(read(&lines, next));
    }
    let page = decoded_page(bytes)?;
    Ok(read(&page.lines_with_origins(), page.next))
}

/// The page of a `QueryLogs` reply the in-place reader does not take (any
/// other layout of it), through the general decoder; an error reply is
/// [`Error::Api`], another reply [`Error::Reply`].
pub(super) fn decoded_page(bytes: &[u8]) -> Result<LogPage> {
    match Response::from_bytes(bytes)? {
        Response::Logs(page) => Ok(page),
        Response::Error { kind, message } => Err(Error::Api { kind, message }),
        other => Err(Error::Reply(format!("QueryLogs answered with {}", other.name()))),
    }
}
