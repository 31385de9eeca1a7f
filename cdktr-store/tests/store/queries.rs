//! QueryLogs: filters against a brute-force filter, hostile strings, pages, snapshots.

use super::*;

#[test]
fn messages_round_trip_in_memory_and_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut specials = vec![
        LogMessage {
            payload: String::new(),
            ..message(0)
        },
        LogMessage {
            payload: "x".repeat(1 << 20),
            ..message(1)
        },
        LogMessage {
            payload: "日本語 🚀 'quoted' \"double\" \\ back".into(),
            workflow_name: "Ünïcødé".into(),
            ..message(2)
        },
    ];
    specials.extend((3..500).map(message));
    for store in [
        Store::open_in_memory().unwrap(),
        Store::open(dir.path().join("rt.db")).unwrap(),
    ] {
        let stats = persist(&store, PersisterConfig::default(), &specials);
        assert_eq!(stats.persisted, specials.len() as u64);
        let mut got = store.query_logs(&all_of(LogQuery::default())).unwrap();
        let mut want = specials.clone();
        want.sort_by_key(|m| m.timestamp_ms);
        got.sort_by(|a, b| (a.timestamp_ms, &a.payload).cmp(&(b.timestamp_ms, &b.payload)));
        want.sort_by(|a, b| (a.timestamp_ms, &a.payload).cmp(&(b.timestamp_ms, &b.payload)));
        assert_eq!(got, want);
    }
}

/// The reference: filter, order and limit in plain Rust.
fn brute_force(data: &[LogMessage], q: &LogQuery) -> Vec<LogMessage> {
    let start = q.start_ms.unwrap();
    let mut rows: Vec<&LogMessage> = data
        .iter()
        .filter(|m| m.timestamp_ms >= start && q.end_ms.is_none_or(|e| m.timestamp_ms < e))
        .filter(|m| q.workflow_id.as_ref().is_none_or(|v| &m.workflow_id == v))
        .filter(|m| {
            q.workflow_instance_id
                .as_ref()
                .is_none_or(|v| &m.workflow_instance_id == v)
        })
        .filter(|m| q.task_name.as_ref().is_none_or(|v| &m.task_name == v))
        .filter(|m| q.task_instance_id.as_ref().is_none_or(|v| &m.task_instance_id == v))
        .filter(|m| match &q.levels {
            None => true,
            Some(LevelFilter::AtLeast(l)) => m.level >= *l,
            Some(LevelFilter::AnyOf(set)) => set.contains(&m.level),
        })
        .filter(|m| {
            q.payload_contains
                .as_ref()
                .is_none_or(|v| m.payload.contains(v.as_str()))
        })
        .collect();
    rows.sort_by_key(|m| m.timestamp_ms); // stable: insertion order breaks ties
    if q.order == Order::NewestFirst {
        rows.reverse();
    }
    rows.into_iter().take(q.limit.unwrap()).cloned().collect()
}

#[test]
fn every_filter_alone_and_combined_matches_a_brute_force_filter() {
    let data: Vec<LogMessage> = (0..5000).map(message).collect();
    let store = Store::open_in_memory().unwrap();
    // Small batches so that the data spans many appends.
    persist(
        &store,
        PersisterConfig {
            batch_size: 700,
            ..Default::default()
        },
        &data,
    );

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut checked = 0;
    for round in 0..400u64 {
        // Each filter on its own for the first rounds, then random mixes.
        let pick = |bit: u64, r: &mut dyn FnMut(u64) -> u64| {
            if round < 64 {
                round & (1 << bit) != 0 && round.count_ones() == 1
            } else {
                r(2) == 0
            }
        };
        let mut q = LogQuery {
            start_ms: Some(i64::MIN),
            limit: Some(usize::MAX >> 1),
            ..Default::default()
        };
        if pick(0, &mut rand) {
            q.start_ms = Some(T0 + rand(100_000) as i64);
        }
        if pick(1, &mut rand) {
            q.end_ms = Some(q.start_ms.unwrap().max(T0) + rand(100_000) as i64);
        }
        if pick(2, &mut rand) {
            q.workflow_id = Some(format!("wf{}", rand(4)));
        }
        if pick(3, &mut rand) {
            q.workflow_instance_id = Some(format!("wf{}-{}", rand(3), rand(8)));
        }
        if pick(4, &mut rand) {
            q.task_name = Some(format!("task{}", rand(6)));
        }
        if pick(5, &mut rand) {
            q.task_instance_id = Some(format!("task{}-{}", rand(5), rand(12)));
        }
        if pick(6, &mut rand) {
            q.levels = Some(if rand(2) == 0 {
                LevelFilter::AtLeast(Level::ALL[rand(5) as usize])
            } else {
                LevelFilter::AnyOf(
                    (0..5)
                        .filter(|_| rand(2) == 0)
                        .map(|i| Level::ALL[i])
                        .chain([Level::Warn])
                        .collect(),
                )
            });
        }
        if pick(7, &mut rand) {
            q.payload_contains = Some(["alpha", "line 1", "a", "ZZZ", "2 g"][rand(5) as usize].to_string());
        }
        if round % 3 == 0 {
            q.limit = Some(1 + rand(50) as usize);
        }
        if round % 2 == 1 {
            q.order = Order::NewestFirst;
        }
        let got = store.query_logs(&q).unwrap();
        let want = brute_force(&data, &q);
        assert_eq!(got, want, "query {q:?}");
        checked += got.len();
    }
    assert!(
        checked > 10_000,
        "the queries matched too little data to prove much: {checked}"
    );
}

#[test]
fn hostile_strings_in_every_filter_are_plain_data() {
    let hostile = [
        "'",
        "''",
        "\"",
        "'; DROP TABLE logstore; --",
        "%",
        "_",
        "\\",
        "a\0b",
        "🚀💥",
        "\u{202e}rtl",
    ];
    let big = "Q".repeat(100_000);
    let mut data: Vec<LogMessage> = (0..200).map(message).collect();
    for (i, h) in hostile.iter().copied().chain([big.as_str()]).enumerate() {
        data.push(LogMessage {
            workflow_id: h.into(),
            workflow_name: h.into(),
            workflow_instance_id: h.into(),
            task_name: h.into(),
            task_instance_id: h.into(),
            payload: format!("before {h} after"),
            timestamp_ms: T0 + i as i64,
            level: Level::Error,
        });
    }
    let store = Store::open_in_memory().unwrap();
    persist(&store, PersisterConfig::default(), &data);
    for h in hostile.iter().copied().chain([big.as_str()]) {
        let queries = [
            LogQuery {
                workflow_id: Some(h.into()),
                ..Default::default()
            },
            LogQuery {
                workflow_instance_id: Some(h.into()),
                ..Default::default()
            },
            LogQuery {
                task_name: Some(h.into()),
                ..Default::default()
            },
            LogQuery {
                task_instance_id: Some(h.into()),
                ..Default::default()
            },
            LogQuery {
                payload_contains: Some(h.into()),
                ..Default::default()
            },
        ];
        for q in queries {
            let q = all_of(q);
            assert_eq!(
                store.query_logs(&q).unwrap(),
                brute_force(&data, &q),
                "{:?}",
                &h[..h.len().min(20)]
            );
        }
    }
    assert_eq!(
        store.query_logs(&all_of(LogQuery::default())).unwrap().len(),
        data.len(),
        "the table survives"
    );
}

#[test]
fn pages_walk_every_row_once_in_both_orders_and_respect_the_byte_cap() {
    let store = Store::open_in_memory().unwrap();
    // Many rows share a timestamp, so the cursor must break ties.
    let data: Vec<LogMessage> = (0..600)
        .map(|i| LogMessage {
            timestamp_ms: T0 + (i as i64 / 10),
            payload: format!("{i:05}"),
            ..message(i)
        })
        .collect();
    persist(&store, PersisterConfig::default(), &data);
    for (order, page_size, max_bytes) in [
        (Order::OldestFirst, 250, usize::MAX),
        (Order::NewestFirst, 23, usize::MAX),
        (Order::OldestFirst, 1000, 2_000),
    ] {
        let mut q = all_of(LogQuery {
            order,
            ..LogQuery::default()
        });
        q.limit = Some(page_size);
        let (mut seen, mut pages) = (Vec::new(), 0);
        loop {
            let page = store.query_page(&q, max_bytes).unwrap();
            pages += 1;
            assert!(page.lines.len() <= page_size);
            seen.extend(page.lines.into_iter().map(|m| m.payload));
            match page.next {
                Some(c) => q.after = Some(c),
                None => break,
            }
            assert!(pages < 1_000, "pagination does not end");
        }
        let mut expected: Vec<String> = (0..600).map(|i| format!("{i:05}")).collect();
        if order == Order::NewestFirst {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{order:?} pages of {page_size}, cap {max_bytes}");
        if max_bytes == 2_000 {
            // Each row carries about 40 bytes of text: ~50 rows a page, not 1000.
            assert!(pages > 8, "{pages} pages: the byte cap did not apply");
        }
    }
    // A cap smaller than any line still makes progress: one line a page.
    let mut q = all_of(LogQuery::default());
    for i in 0..3 {
        let page = store.query_page(&q, 1).unwrap();
        assert_eq!(page.lines.len(), 1);
        assert_eq!(page.lines[0].payload, format!("{i:05}"));
        q.after = page.next;
    }
    // A filtered query pages too, and its last page says there is no more.
    let q = LogQuery {
        workflow_id: Some("wf1".into()),
        limit: Some(10_000),
        ..all_of(LogQuery::default())
    };
    let page = store.query_page(&q, usize::MAX).unwrap();
    assert_eq!(page.lines.len(), data.iter().filter(|m| m.workflow_id == "wf1").count());
    assert_eq!(page.next, None);
}

#[test]
fn small_pages_of_a_snapshot_newest_first_are_answered() {
    // DuckDB 1.2 fails ORDER BY ... LIMIT <= 50 with a rowid filter unless
    // late materialization is off (an internal error, not an empty page).
    let store = Store::open_in_memory().unwrap();
    let lines: Vec<LogMessage> = (0..40)
        .map(|i| LogMessage {
            workflow_instance_id: "run".into(),
            task_name: if i % 2 == 0 { "load" } else { "extract" }.into(),
            timestamp_ms: T0 + i as i64,
            payload: format!("{i}"),
            ..message(i)
        })
        .collect();
    persist(&store, PersisterConfig::default(), &lines);
    for order in [Order::NewestFirst, Order::OldestFirst] {
        let q = LogQuery {
            start_ms: Some(i64::MIN),
            workflow_instance_id: Some("run".into()),
            task_name: Some("load".into()),
            limit: Some(3),
            order,
            as_of: Some(39),
            ..LogQuery::default()
        };
        let page = store.query_page(&q, 8 << 20).unwrap();
        let payloads: Vec<&str> = page.lines.iter().map(|l| l.payload.as_str()).collect();
        let want = match order {
            Order::NewestFirst => ["38", "36", "34"],
            Order::OldestFirst => ["0", "2", "4"],
        };
        assert_eq!(payloads, want, "{order:?}");
        // Lines stored after the snapshot are not in it; those after it are.
        let later = store
            .query_page(
                &LogQuery {
                    as_of: Some(9),
                    stored_after: Some(3),
                    limit: Some(50),
                    ..q
                },
                8 << 20,
            )
            .unwrap();
        let mut rows: Vec<String> = later.lines.into_iter().map(|l| l.payload).collect();
        rows.sort_by_key(|p| p.parse::<u32>().unwrap());
        assert_eq!(rows, ["4", "6", "8"], "{order:?}");
    }
}

#[test]
fn a_page_read_in_place_has_the_lines_origins_and_cursor_of_the_owned_page() {
    use cdktr_log::api::{Layout, Response};
    // Enough rows for several of DuckDB's result batches.
    let store = Store::open_in_memory().unwrap();
    let data: Vec<LogMessage> = (0..5_000).map(message).collect();
    persist(&store, PersisterConfig::default(), &data);
    for (limit, max_bytes) in [(5_000, usize::MAX), (4_999, usize::MAX), (5_000, 100_000), (10, 1)] {
        let q = LogQuery {
            limit: Some(limit),
            ..all_of(LogQuery::default())
        };
        let owned = store.query_page(&q, max_bytes).unwrap();
        let page = store.read_page(&q, max_bytes).unwrap();
        let lines: Vec<_> = page.lines().collect();
        assert_eq!(page.lines().len(), page.len());
        assert_eq!(lines.len(), owned.lines.len(), "limit {limit}, cap {max_bytes}");
        assert_eq!(page.next(), owned.next);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l.message.to_message(), owned.lines[i]);
            assert_eq!(l.to_origin(), owned.origins[i]);
        }
        assert_eq!(page.to_page(), owned);
        for layout in [Layout::Maps, Layout::Arrays] {
            let reply = Response::logs_bytes(&lines, page.next(), layout);
            assert_eq!(Response::from_bytes(&reply).unwrap(), Response::Logs(owned.clone()));
        }
    }
    // The byte cap cuts a page short, and the page says more follows.
    let capped = store
        .read_page(
            &all_of(LogQuery {
                limit: Some(5_000),
                ..LogQuery::default()
            }),
            100_000,
        )
        .unwrap();
    assert!(
        capped.len() < 5_000 && capped.next().is_some(),
        "{} lines",
        capped.len()
    );
}
