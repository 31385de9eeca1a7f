//! The shape `docs/api.md` gives a request, checked on the raw MessagePack
//! before serde reads it, because serde is looser than the documents: it
//! reads a struct from an array, a string from `bin`, and says "expected
//! field index 0 <= i < 0" for an integer key.
//!
//! A request is one map with `str` keys and nothing after it. No value is
//! `bin` or an extension; the only arrays are `Heartbeat`'s `running` and a
//! query's `levels.any_of`, both of strings.

use super::ErrorKind;

/// Nesting deeper than this is refused (the deepest request is 3).
const MAX_DEPTH: usize = 8;

/// Where the documents put an array (of strings).
const ARRAYS: [&[&str]; 2] = [&["running"], &["query", "levels", "any_of"]];

/// What is wrong with a request's shape, and where.
pub(super) struct Refusal {
    pub kind: ErrorKind,
    pub message: String,
}

/// Checks `bytes` and returns the request's `op`.
///
/// # Errors
/// [`ErrorKind::Malformed`] when it is not one map with a `str` `"op"`
/// (or bytes follow it); [`ErrorKind::Invalid`] for a value of a type no
/// request has, naming the field.
pub(super) fn request_op(bytes: &[u8]) -> Result<&str, Refusal> {
    let malformed = |what: String| Refusal {
        kind: ErrorKind::Malformed,
        message: format!("expected one MessagePack map with an \"op\" string: {what}"),
    };
    let mut r = Reader { bytes, at: 0 };
    let entries = match r.map_len() {
        Ok(Some(n)) => n,
        Ok(None) => return Err(malformed(format!("found {}", r.describe_next()))),
        Err(e) => return Err(malformed(e)),
    };
    let mut op = None;
    let mut problem = None;
    for _ in 0..entries {
        let key = match r.str() {
            Ok(Some(k)) => k,
            Ok(None) => return Err(malformed(format!("a key is {}, not a string", r.describe_next()))),
            Err(e) => return Err(malformed(e)),
        };
        if key == "op" {
            match r.str() {
                Ok(Some(v)) => op = Some(v),
                Ok(None) => return Err(malformed(format!("\"op\" is {}", r.describe_next()))),
                Err(e) => return Err(malformed(e)),
            }
            continue;
        }
        let start = r.at;
        match r.value(&mut vec![key], 1) {
            Ok(()) => {}
            Err(Bad::Truncated(e)) => return Err(malformed(e)),
            Err(Bad::Shape(e)) => {
                problem.get_or_insert(e);
                // Read on, for the "op" that may follow: skip the value whole.
                r.at = start;
                r.skip_any(1).map_err(malformed)?;
            }
        }
    }
    let Some(op) = op else {
        return Err(malformed("no \"op\" key".into()));
    };
    if let Some(e) = problem {
        return Err(Refusal {
            kind: ErrorKind::Invalid,
            message: format!("{op}: {e}"),
        });
    }
    if r.at < bytes.len() {
        return Err(malformed(format!("{} byte(s) after the map", bytes.len() - r.at)));
    }
    Ok(op)
}

enum Bad {
    /// The bytes end inside a value.
    Truncated(String),
    /// A value of a type the documents do not allow there.
    Shape(String),
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("the bytes end inside a value at offset {}", self.at));
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<usize, String> {
        let b = self.take(n)?;
        Ok(b.iter()
            .fold(0usize, |acc, &x| acc.saturating_mul(256).saturating_add(x as usize)))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// What the next value is, for messages.
    fn describe_next(&self) -> &'static str {
        match self.peek() {
            None => "nothing",
            Some(m) => describe(m),
        }
    }

    /// A map's entry count, or `None` (nothing consumed) if not a map.
    fn map_len(&mut self) -> Result<Option<usize>, String> {
        let n = match self.peek() {
            Some(m @ 0x80..=0x8f) => {
                self.at += 1;
                (m & 0x0f) as usize
            }
            Some(0xde) => {
                self.at += 1;
                self.uint(2)?
            }
            Some(0xdf) => {
                self.at += 1;
                self.uint(4)?
            }
            _ => return Ok(None),
        };
        Ok(Some(n))
    }

    /// A `str`, or `None` (nothing consumed) if the next value is not one.
    fn str(&mut self) -> Result<Option<&'a str>, String> {
        let len = match self.peek() {
            Some(m @ 0xa0..=0xbf) => {
                self.at += 1;
                (m & 0x1f) as usize
            }
            Some(0xd9) => {
                self.at += 1;
                self.uint(1)?
            }
            Some(0xda) => {
                self.at += 1;
                self.uint(2)?
            }
            Some(0xdb) => {
                self.at += 1;
                self.uint(4)?
            }
            _ => return Ok(None),
        };
        let at = self.at;
        std::str::from_utf8(self.take(len)?)
            .map(Some)
            .map_err(|_| format!("a string at offset {at} is not UTF-8"))
    }

    /// Skips one value at `path`, refusing what no request holds.
    fn value(&mut self, path: &mut Vec<&'a str>, depth: usize) -> Result<(), Bad> {
        let here = |path: &Vec<&str>| path.join(".");
        if depth > MAX_DEPTH {
            return Err(Bad::Shape(format!(
                "`{}` is nested deeper than {MAX_DEPTH}",
                here(path)
            )));
        }
        let Some(m) = self.peek() else {
            return Err(Bad::Truncated("the bytes end before a value".into()));
        };
        let t = Bad::Truncated;
        match m {
            0x80..=0x8f | 0xde | 0xdf => {
                let n = self.map_len().map_err(t)?.unwrap_or(0);
                for _ in 0..n {
                    let key = match self.str().map_err(Bad::Truncated)? {
                        Some(k) => k,
                        None => {
                            return Err(Bad::Shape(format!(
                                "a key in `{}` is {}; keys are strings",
                                here(path),
                                self.describe_next()
                            )))
                        }
                    };
                    path.push(key);
                    self.value(path, depth + 1)?;
                    path.pop();
                }
            }
            0x90..=0x9f | 0xdc | 0xdd => {
                if !ARRAYS.contains(&path.as_slice()) {
                    return Err(Bad::Shape(format!("`{}` is an array; no field here is", here(path))));
                }
                self.at += 1;
                let n = match m {
                    0xdc => self.uint(2).map_err(t)?,
                    0xdd => self.uint(4).map_err(t)?,
                    _ => (m & 0x0f) as usize,
                };
                for _ in 0..n {
                    if self.str().map_err(Bad::Truncated)?.is_none() {
                        return Err(Bad::Shape(format!(
                            "an item of `{}` is {}; items are strings",
                            here(path),
                            self.describe_next()
                        )));
                    }
                }
            }
            0xa0..=0xbf | 0xd9..=0xdb => {
                self.str().map_err(t)?;
            }
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => self.at += 1,
            0xcc | 0xd0 => self.skip(2).map_err(t)?,
            0xcd | 0xd1 => self.skip(3).map_err(t)?,
            0xca | 0xce | 0xd2 => self.skip(5).map_err(t)?,
            0xcb | 0xcf | 0xd3 => self.skip(9).map_err(t)?,
            _ => {
                return Err(Bad::Shape(format!(
                    "`{}` is {}; strings are MessagePack str",
                    here(path),
                    describe(m)
                )))
            }
        }
        Ok(())
    }

    /// Skips one value of any type, without judging it.
    fn skip_any(&mut self, depth: usize) -> Result<(), String> {
        if depth > 64 {
            return Err("nested deeper than 64".into());
        }
        let Some(m) = self.peek() else {
            return Err("the bytes end before a value".into());
        };
        let (len, items) = match m {
            0x80..=0x8f | 0xde | 0xdf => (0, 2 * self.map_len()?.unwrap_or(0)),
            0x90..=0x9f => (1, (m & 0x0f) as usize),
            0xdc | 0xdd => {
                self.at += 1;
                (0, self.uint(if m == 0xdc { 2 } else { 4 })?)
            }
            0xa0..=0xbf | 0xd9..=0xdb => {
                self.str()?;
                (0, 0)
            }
            0xc4..=0xc6 => {
                self.at += 1;
                let n = self.uint(1 << (m - 0xc4))?;
                (n, 0)
            }
            0xc7..=0xc9 => {
                self.at += 1;
                let n = self.uint(1 << (m - 0xc7))?;
                (n + 1, 0)
            }
            0xd4..=0xd8 => (2 + (1 << (m - 0xd4)), 0),
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0),
            0xcc | 0xd0 => (2, 0),
            0xcd | 0xd1 => (3, 0),
            0xca | 0xce | 0xd2 => (5, 0),
            0xcb | 0xcf | 0xd3 => (9, 0),
            _ => return Err(format!("the reserved byte 0x{m:02x} at offset {}", self.at)),
        };
        self.skip(len)?;
        for _ in 0..items {
            self.skip_any(depth + 1)?;
        }
        Ok(())
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }
}

fn describe(marker: u8) -> &'static str {
    match marker {
        0x80..=0x8f | 0xde | 0xdf => "a map",
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0xa0..=0xbf | 0xd9..=0xdb => "a string",
        0xc4..=0xc6 => "bin (bytes)",
        0xc7..=0xc9 | 0xd4..=0xd8 => "an extension type",
        0xc0 => "nil",
        0xc2 | 0xc3 => "a boolean",
        0xca | 0xcb => "a float",
        0xc1 => "the reserved byte 0xc1",
        _ => "an integer",
    }
}
