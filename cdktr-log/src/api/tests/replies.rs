//! Replies, and a `Logs` page in either layout, owned and read in place.

use super::*;

#[test]
fn replies_round_trip() {
    let all = [
        Response::Pong {
            api: API_VERSION,
            version: "0.1.0".into(),
        },
        Response::Logs(LogPage::default()),
        Response::Logs(LogPage {
            lines: vec![line(), line()],
            origins: vec![
                Some(crate::query::Origin {
                    publisher_id: "p".into(),
                    seq: 9,
                }),
                None,
            ],
            next: None,
        }),
        Response::Snapshot(Snapshot {
            row: 41,
            persisted: [("p".to_string(), 9)].into_iter().collect(),
        }),
        Response::Count { count: 7 },
        Response::Workflows { runs: vec![] },
        Response::Timeline {
            changes: vec![StatusChange {
                task: Some(("t".into(), "ti".into())),
                status: RunStatus::Crashed,
                timestamp_ms: 3,
            }],
        },
        Response::Accepted,
        Response::Watermark {
            publisher_id: "p".into(),
            seq: u64::MAX,
            accepted: 3,
        },
        Response::Stats(PrincipalStats::default()),
        Response::error(ErrorKind::Busy, "later"),
    ];
    for r in all {
        assert_eq!(Response::from_bytes(&r.to_bytes()).unwrap(), r);
    }
    assert!(matches!(Response::from_bytes(b"\x01"), Err(Error::Reply(_))));
}

#[test]
fn a_logs_reply_reads_the_same_with_its_tag_first_or_last() {
    let expected = Response::Logs(LogPage {
        lines: vec![line()],
        origins: vec![Some(crate::query::Origin {
            publisher_id: "p".into(),
            seq: 9,
        })],
        next: Some(crate::query::Cursor {
            timestamp_ms: 1,
            row: 4,
        }),
    });
    let first = expected.to_bytes();
    // serde_json's map sorts its keys: "reply" comes last.
    let last = bytes(json!({
        "lines": [{"workflow_id": "w", "workflow_name": "W", "workflow_instance_id": "i", "task_name": "t",
                   "task_instance_id": "ti", "timestamp_ms": 1, "level": "WARN", "payload": "x"}],
        "origins": [{"publisher_id": "p", "seq": 9}],
        "next": {"timestamp_ms": 1, "row": 4},
        "reply": "Logs",
    }));
    assert!(logs::read(&first).is_some() && logs::read(&last).is_none());
    assert_eq!(Response::from_bytes(&first).unwrap(), expected);
    assert_eq!(Response::from_bytes(&last).unwrap(), expected);
    // A page without its lines is refused on both paths.
    let no_lines_first = b"\x82\xa5reply\xa4Logs\xa4next\xc0";
    assert!(logs::read(no_lines_first).is_some());
    assert!(matches!(Response::from_bytes(no_lines_first), Err(Error::Reply(_))));
    let no_lines_last = bytes(json!({"next": null, "reply": "Logs"}));
    assert!(matches!(Response::from_bytes(&no_lines_last), Err(Error::Reply(_))));
}

#[test]
fn a_reply_names_its_variant_as_the_wire_does() {
    for r in [
        Response::Accepted,
        Response::Logs(LogPage::default()),
        Response::Count { count: 1 },
    ] {
        let wire: serde_json::Value = rmp_serde::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(wire["reply"], r.name());
    }
}

/// Pages with every MessagePack size class a `Logs` reply can meet: str
/// 5/8/16/32, array 4/16/32, negative and 64-bit integers, nil origins and
/// cursor.
fn pages_of_every_size_class() -> Vec<LogPage> {
    let text = |n: usize| "é".repeat(n / 2) + &"x".repeat(n % 2);
    let mut lines = Vec::new();
    let mut origins = Vec::new();
    for i in 0..70_000usize {
        let long = match i {
            0 => 70_000,
            1 => 300,
            2 => 40,
            _ => i % 20,
        };
        lines.push(crate::LogMessage {
            workflow_id: text(long),
            workflow_name: "Nightly ETL".into(),
            workflow_instance_id: format!("etl-{i}"),
            task_name: text(i % 33),
            task_instance_id: String::new(),
            timestamp_ms: [i64::MIN, -1, 0, 127, 128, 65_536, i64::MAX][i % 7],
            level: crate::Level::ALL[i % 5],
            payload: text(long + 1),
        });
        origins.push((i % 3 != 0).then(|| crate::query::Origin {
            publisher_id: text(i % 40),
            seq: [1, 255, 65_536, u64::MAX][i % 4],
        }));
    }
    [
        (0, None),
        (
            1,
            Some(crate::query::Cursor {
                timestamp_ms: -5,
                row: 0,
            }),
        ),
        (15, None),
        (
            16,
            Some(crate::query::Cursor {
                timestamp_ms: i64::MAX,
                row: i64::MAX,
            }),
        ),
        (
            70_000,
            Some(crate::query::Cursor {
                timestamp_ms: 1,
                row: 70_000,
            }),
        ),
    ]
    .into_iter()
    .map(|(n, next)| LogPage {
        lines: lines[..n].to_vec(),
        origins: origins[..n].to_vec(),
        next,
    })
    .collect()
}

#[test]
fn a_logs_reply_written_from_borrowed_rows_is_the_derived_encoding_byte_for_byte() {
    for page in pages_of_every_size_class() {
        let (n, next) = (page.lines.len(), page.next);
        let derived = rmp_serde::to_vec_named(&Response::Logs(page.clone())).unwrap();
        let borrowed: Vec<PageLine<'_>> = page
            .lines
            .iter()
            .zip(&page.origins)
            .map(|(l, o)| PageLine::new(l, o.as_ref()))
            .collect();
        assert!(
            Response::logs_bytes(&borrowed, next, Layout::Maps) == derived,
            "{n} lines"
        );
        assert!(Response::Logs(page.clone()).to_bytes() == derived, "{n} lines");
        assert_eq!(Response::from_bytes(&derived).unwrap(), Response::Logs(page));
    }
}

/// The page `read_logs` hands out, owned again.
/// The page in `bytes` read in place both ways, lent to a closure and kept
/// in a [`ReplyPage`](crate::api::ReplyPage), which must agree: the same
/// page or the same error.
fn page_read_in_place(bytes: &[u8]) -> crate::Result<LogPage> {
    let lent = logs::with_page(bytes, |lines, next| LogPage::from_lines(lines.iter().copied(), next));
    let kept = crate::api::ReplyPage::new(zmq::Message::from(bytes)).map(|p| p.to_page());
    match (&lent, &kept) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "lent and kept"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "lent and kept"),
        _ => panic!("lent {lent:?}, kept {kept:?}"),
    }
    lent
}

#[test]
fn a_reply_page_is_kept_sent_to_other_threads_and_read_there() {
    let page = pages_of_every_size_class().pop().unwrap();
    let bytes = Response::Logs(page.clone()).to_bytes();
    let kept = std::sync::Arc::new(crate::api::ReplyPage::new(zmq::Message::from(&bytes[..])).unwrap());
    drop(bytes);
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let kept = kept.clone();
            std::thread::spawn(move || kept.to_page())
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), page);
    }
    assert_eq!(
        (kept.len(), kept.is_empty(), kept.next()),
        (page.lines.len(), false, page.next)
    );
    assert_eq!(kept.lines(), page.lines_with_origins());
}

#[test]
fn a_logs_reply_read_in_place_has_the_lines_origins_and_cursor_of_the_decoded_page() {
    for page in pages_of_every_size_class() {
        let bytes = Response::Logs(page.clone()).to_bytes();
        assert!(logs::read_in_place(&bytes).is_some(), "the in-place path");
        assert_eq!(page_read_in_place(&bytes).unwrap(), page, "{} lines", page.lines.len());
    }
}

#[test]
fn a_logs_reply_in_another_layout_is_read_in_place_as_the_decoder_reads_it() {
    // The tag last and no origins (a principal before schema version 3).
    let bytes = bytes(json!({"lines": [line(), line()], "next": {"timestamp_ms": 1, "row": 2}, "reply": "Logs"}));
    assert!(logs::read_in_place(&bytes).is_none());
    let Response::Logs(decoded) = Response::from_bytes(&bytes).unwrap() else {
        panic!("not a page")
    };
    let got = page_read_in_place(&bytes).unwrap();
    assert_eq!(got.lines, decoded.lines);
    assert_eq!(got.next, decoded.next);
    assert_eq!(got.origins, [None, None]);
}

#[test]
fn a_logs_reply_has_an_origin_per_line_or_none_on_every_path_and_any_other_count_is_refused() {
    let origin = json!({"publisher_id": "p", "seq": 9});
    // Tag first (as the principal writes it) and last (the general path).
    let first = |origins: Vec<Option<crate::query::Origin>>| {
        Response::Logs(LogPage {
            lines: vec![line(), line()],
            origins,
            next: None,
        })
        .to_bytes()
    };
    let last = |origins: Option<serde_json::Value>| {
        let mut reply = json!({"lines": [line(), line()], "next": null, "reply": "Logs"});
        if let Some(origins) = origins {
            reply["origins"] = origins;
        }
        bytes(reply)
    };
    // None sent (a principal before schema version 3): no origin for each line.
    for none in [first(vec![]), last(None), last(Some(json!([])))] {
        let Response::Logs(page) = Response::from_bytes(&none).unwrap() else {
            panic!("not a page")
        };
        assert_eq!(page.origins, [None, None]);
        assert_eq!(page_read_in_place(&none).unwrap(), page);
    }
    let one = Some(crate::query::Origin {
        publisher_id: "p".into(),
        seq: 9,
    });
    for (what, wrong) in [
        ("1 origin first", first(vec![one.clone()])),
        ("3 origins first", first(vec![one.clone(), None, one])),
        ("1 origin last", last(Some(json!([origin])))),
        ("3 origins last", last(Some(json!([origin, null, origin])))),
    ] {
        assert!(matches!(Response::from_bytes(&wrong), Err(Error::Reply(_))), "{what}");
        assert!(matches!(page_read_in_place(&wrong), Err(Error::Reply(_))), "{what}");
    }
}

#[test]
fn reading_a_page_in_place_from_an_error_or_another_reply_is_an_error() {
    let error = Response::error(ErrorKind::Invalid, "limit 0").to_bytes();
    assert!(matches!(
        page_read_in_place(&error),
        Err(crate::Error::Api {
            kind: ErrorKind::Invalid,
            ..
        })
    ));
    let pong = Response::Pong {
        api: API_VERSION,
        version: "x".into(),
    }
    .to_bytes();
    assert!(matches!(page_read_in_place(&pong), Err(crate::Error::Reply(_))));
    // A page whose line lacks a field is refused, as the decoder refuses it.
    let broken = bytes(json!({"reply": "Logs", "lines": [{"workflow_id": "w"}], "origins": [], "next": null}));
    assert!(Response::from_bytes(&broken).is_err());
    assert!(matches!(page_read_in_place(&broken), Err(crate::Error::Reply(_))));
}

/// `page` as docs/api.md shows a `Logs` reply in the arrays layout.
fn documented_arrays(page: &LogPage) -> serde_json::Value {
    let lines: Vec<serde_json::Value> = page
        .lines
        .iter()
        .map(|l| {
            json!([
                l.workflow_id,
                l.workflow_name,
                l.workflow_instance_id,
                l.task_name,
                l.task_instance_id,
                l.timestamp_ms,
                l.level.as_str(),
                l.payload
            ])
        })
        .collect();
    let origins: Vec<serde_json::Value> = page
        .origins
        .iter()
        .map(|o| o.as_ref().map_or(json!(null), |o| json!([o.publisher_id, o.seq])))
        .collect();
    json!({"reply": "Logs", "lines": lines, "origins": origins, "next": page.next})
}

#[test]
fn a_logs_reply_in_arrays_is_the_documented_encoding_and_reads_back_as_the_page() {
    for page in pages_of_every_size_class() {
        let n = page.lines.len();
        let borrowed = page.lines_with_origins();
        let arrays = Response::logs_bytes(&borrowed, page.next, Layout::Arrays);
        let read: serde_json::Value = rmp_serde::from_slice(&arrays).unwrap();
        assert!(read == documented_arrays(&page), "{n} lines");
        assert_eq!(
            Response::from_bytes(&arrays).unwrap(),
            Response::Logs(page.clone()),
            "{n} lines"
        );
        assert!(logs::read_in_place(&arrays).is_some(), "the in-place path");
        assert_eq!(page_read_in_place(&arrays).unwrap(), page, "{n} lines");
    }
}

#[test]
fn a_logs_reply_in_arrays_of_the_wrong_length_or_types_is_refused_by_both_readers() {
    let page = LogPage {
        lines: vec![line()],
        origins: vec![Some(crate::query::Origin {
            publisher_id: "a".into(),
            seq: 3,
        })],
        next: None,
    };
    let good = bytes(documented_arrays(&page));
    assert_eq!(page_read_in_place(&good).unwrap(), page);
    let line = json!(["w", "W", "i", "t", "ti", 1, "WARN", "x"]);
    let reply = |lines: serde_json::Value, origins: serde_json::Value| {
        bytes(json!({"reply": "Logs", "lines": lines, "origins": origins, "next": null}))
    };
    let origin = json!([["a", 3]]);
    let bad = [
        (
            "seven fields",
            reply(json!([["w", "W", "i", "t", "ti", 1, "WARN"]]), origin.clone()),
        ),
        (
            "nine fields",
            reply(json!([["w", "W", "i", "t", "ti", 1, "WARN", "x", "y"]]), origin.clone()),
        ),
        (
            "a timestamp as text",
            reply(json!([["w", "W", "i", "t", "ti", "1", "WARN", "x"]]), origin.clone()),
        ),
        (
            "a level in lower case",
            reply(json!([["w", "W", "i", "t", "ti", 1, "warn", "x"]]), origin.clone()),
        ),
        (
            "a number for a name",
            reply(json!([[7, "W", "i", "t", "ti", 1, "WARN", "x"]]), origin.clone()),
        ),
        ("an origin of three", reply(json!([line.clone()]), json!([["a", 3, 4]]))),
        ("an origin of one", reply(json!([line.clone()]), json!([["a"]]))),
        ("a negative seq", reply(json!([line.clone()]), json!([["a", -3]]))),
    ];
    for (what, bytes) in bad {
        assert!(Response::from_bytes(&bytes).is_err(), "{what}: decoded");
        assert!(
            matches!(page_read_in_place(&bytes), Err(crate::Error::Reply(_))),
            "{what}: read in place"
        );
    }
}
