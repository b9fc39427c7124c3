//! Stats and the Prometheus endpoint count what happened.

use super::*;

#[test]
fn stats_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &[]);
    let mut client = Client::connect(&daemon.socket).unwrap();
    for i in 0..20 {
        client
            .log(Entry::new("e", "stats").trace(i.to_string()))
            .unwrap();
    }
    let refused = client.log(Entry::new("e", "stats").payload_text("{not json"));
    assert!(matches!(refused, Err(Error::Refused(reply)) if reply.code == ErrorCode::InvalidEntry));
    let (code, out, err) = witness(&daemon.socket, &["stats", "--json"], None);
    assert_eq!(code, 0, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["entries_total"], 20);
    assert_eq!(stats["last_seq"], 20);
    assert_eq!(stats["rejections"]["InvalidEntry"], 1);
    assert_eq!(stats["ack_us"]["count"], 20);
    assert!(stats["commit_us"]["p50"].as_u64().unwrap() > 0);
    // This client and the `witness` one.
    assert!(stats["connections_max"].as_u64().unwrap() >= 2);
    assert_eq!(stats["connections"], 2);
    assert!(stats["db_bytes"].as_u64().unwrap() > 0);
    assert!(stats["rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert_eq!(stats["queue_capacity"], 8192);
    let (code, table, _) = witness(&daemon.socket, &["stats"], None);
    assert_eq!(code, 0);
    assert!(
        table.contains("20 committed") && table.contains("InvalidEntry 1"),
        "{table}"
    );
    // Times in the unit that fits them, not raw microseconds.
    let ack = table
        .lines()
        .find(|line| line.contains("ack time"))
        .unwrap();
    assert!(
        ack.contains(" ms") || ack.contains(" µs") || ack.contains(" s "),
        "{ack}"
    );
    let (code, text, _) = witness(&daemon.socket, &["stats", "--prometheus"], None);
    assert_eq!(code, 0);
    let scrape = parse_prometheus(&text);
    assert_eq!(sample(&scrape, "witness_entries_committed_total"), 20.0);
}

fn parse_prometheus(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text")
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|sample| sample.metric == name)
        .unwrap_or_else(|| panic!("no {name}"));
    match found.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name} is {other:?}"),
    }
}

#[test]
fn the_metrics_endpoint_serves_prometheus_text_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Witnessd::start(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let log = wait_for_log(&daemon, "serving metrics at http://");
    let url = log
        .split("serving metrics at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let mut client = Client::connect(&daemon.socket).unwrap();
    for _ in 0..7 {
        client.log(Entry::new("e", "http")).unwrap();
    }
    let mut response = ureq::get(&url).call().unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.body_mut().read_to_string().unwrap();
    let scrape = parse_prometheus(&body);
    assert_eq!(sample(&scrape, "witness_entries_committed_total"), 7.0);
    assert_eq!(sample(&scrape, "witness_last_seq"), 7.0);
    assert_eq!(sample(&scrape, "witness_queue_capacity"), 8192.0);
    assert!(sample(&scrape, "witness_resident_memory_bytes") > 0.0);
    let summary = scrape
        .samples
        .iter()
        .find(|s| s.metric == "witness_commit_microseconds")
        .expect("commit summary");
    assert!(matches!(summary.value, prometheus_parse::Value::Summary(_)));
    let missing = ureq::get(url.replace("/metrics", "/nope")).call();
    assert!(
        matches!(missing, Err(ureq::Error::StatusCode(404))),
        "{missing:?}"
    );
    let posted = ureq::post(&url).send("x");
    assert!(
        matches!(posted, Err(ureq::Error::StatusCode(405))),
        "{posted:?}"
    );
    // Garbage on the port harms nothing.
    use std::io::Write;
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut raw = std::net::TcpStream::connect(address).unwrap();
    raw.write_all(b"\x00\x01GARBAGE\r\n\r\n").unwrap();
    drop(raw);
    assert_eq!(ureq::get(&url).call().unwrap().status(), 200);
    client.ping().unwrap();
}

#[test]
fn a_metrics_address_in_use_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = Command::new(binary("witnessd"))
        .arg("--socket")
        .arg(dir.path().join("s"))
        .arg("--db")
        .arg(dir.path().join("d.db"))
        .args(["--metrics-listen", &address])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("binding the metrics listener {address}")),
        "{stderr}"
    );
    // It stopped before opening the database.
    assert!(!dir.path().join("d.db").exists());
}
