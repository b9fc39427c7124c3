//! Followers: every commit after subscribing, the last ones at shutdown, and stalled followers that cost nobody anything.

use super::*;

#[test]
fn a_follower_with_a_limit_ends_after_that_many_entries() {
    let daemon = TestDaemon::start();
    feed(&daemon, 2);
    let mut follower = daemon.client();
    let mut stream = follower
        .entries(EntriesQuery {
            newest: Some(0),
            limit: Some(3),
            follow: true,
            ..EntriesQuery::default()
        })
        .unwrap();
    let mut client = daemon.client();
    for index in 0..5 {
        client
            .log(Entry::new("live", "c").payload(json!({ "index": index })))
            .unwrap();
    }
    let seqs: Vec<u64> = stream.by_ref().map(|entry| entry.unwrap().seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
    let end = stream.end().expect("the stream ended");
    assert_eq!(end.reason, witness_protocol::query::EndReason::Limit);
    assert_eq!(end.next_after, Some(5));
}

#[test]
fn a_follower_receives_every_entry_committed_after_it_subscribed() {
    let daemon = TestDaemon::start();
    feed(&daemon, 50);
    let mut follower = daemon.client();
    let mut stream = follower
        .entries(EntriesQuery {
            newest: Some(0),
            follow: true,
            ..EntriesQuery::default()
        })
        .unwrap();
    let committed = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..3)
        .map(|writer| {
            let mut client = daemon.client();
            let committed = Arc::clone(&committed);
            std::thread::spawn(move || {
                for index in 0..200 {
                    let entry = Entry::new("live", format!("writer-{writer}"))
                        .payload(json!({ "index": index }));
                    if index % 2 == 0 {
                        let receipt = client.log(entry).unwrap();
                        committed.lock().unwrap().push(receipt.seq);
                    } else {
                        client.send(entry).unwrap();
                    }
                }
                client.flush().unwrap();
            })
        })
        .collect();
    let mut received = Vec::new();
    while received.len() < 600 {
        let entry = stream.next().unwrap().unwrap();
        received.push(entry);
    }
    for writer in writers {
        writer.join().unwrap();
    }
    let seqs: Vec<u64> = received.iter().map(|entry| entry.seq).collect();
    assert_eq!(
        seqs,
        (51..=650).collect::<Vec<u64>>(),
        "in order, none missing"
    );
    for seq in committed.lock().unwrap().iter() {
        assert!(seqs.contains(seq));
    }
    // Each writer's entries arrive in the order it wrote them.
    for writer in 0..3 {
        let indexes: Vec<i64> = received
            .iter()
            .filter(|entry| entry.entry.component == format!("writer-{writer}"))
            .map(|entry| {
                serde_json::from_str::<serde_json::Value>(&entry.entry.payload).unwrap()["index"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(indexes, (0..200).collect::<Vec<i64>>());
    }
}

#[test]
fn a_follower_hears_the_last_commits_when_the_daemon_stops() {
    let daemon = TestDaemon::start();
    let mut raw = daemon.raw();
    // From seq 0, not from "now": the stream may start after the first commits, and must
    // still deliver them.
    raw.send(
        9,
        Request::Entries(EntriesQuery {
            filter: Filter {
                after_seq: Some(0),
                ..Filter::default()
            },
            newest: None,
            follow: true,
            ..EntriesQuery::default()
        }),
    );
    let mut client = daemon.client();
    for index in 0..100 {
        client
            .send(Entry::new("before-stop", "c").payload(json!({ "index": index })))
            .unwrap();
    }
    client.flush().unwrap();
    drop(client);
    let _dir = daemon.stop();
    let mut seqs = Vec::new();
    let end = loop {
        let frame = raw.recv().expect("a frame before the connection closes");
        assert_eq!(frame.id, 9);
        match frame.response {
            Response::Entries(entries) => seqs.extend(entries.iter().map(|entry| entry.seq)),
            Response::End(end) => break end,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    assert_eq!(end.reason, EndReason::ShuttingDown);
    assert_eq!(end.next_after, Some(100));
}

#[test]
fn a_stalled_follower_holds_up_nobody_and_is_cut_off_with_a_cursor() {
    let daemon = TestDaemon::start_with(|config| {
        config.stall_timeout = Duration::from_millis(300);
    });
    let mut stalled = daemon.raw();
    stalled.send(
        5,
        Request::Entries(EntriesQuery {
            newest: Some(0),
            follow: true,
            ..EntriesQuery::default()
        }),
    );
    // Far more than the socket buffers hold: 3000 entries of 2 KiB.
    let mut client = daemon.client();
    let padding = "x".repeat(2048);
    let started = Instant::now();
    for index in 0..3000 {
        client
            .send(Entry::new("bulk", "writer").payload(json!({ "index": index, "pad": padding })))
            .unwrap();
    }
    client.flush().unwrap();
    for _ in 0..20 {
        client.log(Entry::new("after", "writer")).unwrap();
    }
    let writing = started.elapsed();
    std::thread::sleep(Duration::from_millis(600));

    let mut seqs = Vec::new();
    let end = loop {
        let frame = stalled.recv().expect("frames, then the end");
        match frame.response {
            Response::Entries(entries) => seqs.extend(entries.iter().map(|entry| entry.seq)),
            Response::End(end) => break end,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        end.reason,
        EndReason::CutOff,
        "after {writing:?} of writing"
    );
    let resume = end.next_after.unwrap();
    assert!(resume < 3020, "cut off before the end: {resume}");
    assert_eq!(
        seqs,
        (1..=resume).collect::<Vec<u64>>(),
        "what it got is whole"
    );

    // Nothing is lost: the cursor picks up the rest.
    let rest = collect(
        daemon
            .client()
            .entries(EntriesQuery {
                filter: Filter {
                    after_seq: Some(resume),
                    ..Filter::default()
                },
                ..EntriesQuery::default()
            })
            .unwrap(),
    );
    let rest: Vec<u64> = rest.iter().map(|entry| entry.seq).collect();
    assert!(
        rest == (resume + 1..=3020).collect::<Vec<u64>>(),
        "the rest after {resume}: {} entries, last {:?}",
        rest.len(),
        rest.last()
    );
}

fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Peak resident memory of a fresh `witnessd` taking 40 MB of entries while `n_stalled`
/// followers read nothing, and whether each follower is still served afterwards.
fn peak_with_stalled_followers(n_stalled: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &["--queue", "1024"]);
    let mut stalled: Vec<_> = (0..n_stalled)
        .map(|_| {
            let mut raw = crate::harness::Raw::connect(&daemon.socket);
            raw.hello();
            raw.send(
                1,
                Request::Entries(EntriesQuery {
                    newest: Some(0),
                    follow: true,
                    ..EntriesQuery::default()
                }),
            );
            raw
        })
        .collect();
    let mut client = witness_client::Client::connect(&daemon.socket).unwrap();
    let padding = "y".repeat(4000);
    for index in 0..10_000 {
        let payload = json!({ "index": index, "pad": padding });
        client
            .send(Entry::new("bulk", "writer").payload(payload))
            .unwrap();
    }
    client.flush().unwrap();
    let peak_kib = peak_rss_kib(daemon.pid());
    for raw in &mut stalled {
        match raw.recv().unwrap().response {
            Response::Entries(entries) => assert_eq!(entries[0].seq, 1),
            other => panic!("unexpected {other:?}"),
        }
    }
    peak_kib
}

#[test]
fn stalled_followers_do_not_grow_the_daemons_memory() {
    let baseline_mib = peak_with_stalled_followers(0) / 1024;
    let stalled_mib = peak_with_stalled_followers(4) / 1024;
    // Four followers that buffered what they missed would hold 160 MB; each may hold two
    // pages (2 MiB) and what the socket takes.
    assert!(
        stalled_mib < baseline_mib + 24,
        "peak RSS {stalled_mib} MiB with stalled followers, {baseline_mib} MiB without"
    );
}
