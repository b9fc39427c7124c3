//! The dashboard's HTTP side against a real daemon on a real port (docs/DASHBOARD.md): who
//! gets in (a one-time token from the socket, a session cookie, the socket's read rules),
//! what every route answers without a session, CSRF and Host checks, the API against the
//! socket's own answers, garbage, and the live feed: resuming from `Last-Event-ID`, and a
//! stalled browser cut off while ingest goes on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use witness_client::Entry;
use witness_protocol::query::{CostQuery, GroupBy, TracesQuery};

use crate::harness::{TestDaemon, as_nobody, witness};

/// An HTTP answer: status, headers (names in lower case) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {} {}", self.status, self.body))
    }
}

/// One request over a fresh connection, written by hand so that every header (Host,
/// Origin, Cookie) is exactly what a test says.
fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        text.push_str(&format!("Host: {address}\r\n"));
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn get(address: SocketAddr, path: &str, cookie: Option<&str>) -> Answer {
    match cookie {
        Some(cookie) => request(address, "GET", path, &[("Cookie", cookie)], ""),
        None => request(address, "GET", path, &[], ""),
    }
}

fn dashboard() -> (TestDaemon, SocketAddr) {
    let daemon = TestDaemon::start_with(|config| {
        config.web_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let address = daemon.web.expect("the dashboard is served");
    (daemon, address)
}

/// `witness web`'s link, and the token in it.
fn login_link(daemon: &TestDaemon) -> (String, String) {
    let (code, stdout, stderr) = witness(&daemon.socket, &["web"], None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("logs in once"), "{stderr}");
    let url = stdout.trim().to_owned();
    let token = url
        .split_once("#token=")
        .expect("a token in the fragment")
        .1
        .to_owned();
    (url, token)
}

/// Logs in with a fresh link; returns the `Cookie` header value and the CSRF secret.
fn log_in(daemon: &TestDaemon, address: SocketAddr) -> (String, String) {
    let (_, token) = login_link(daemon);
    let answer = request(
        address,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        &format!("{{\"token\":\"{token}\"}}"),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let cookie = answer
        .header("set-cookie")
        .expect("a session cookie")
        .to_owned();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let csrf = answer.json()["csrf"].as_str().unwrap().to_owned();
    (pair, csrf)
}

const GUARDED_GETS: &[&str] = &[
    "/",
    "/api/session",
    "/api/entries",
    "/api/traces",
    "/api/trace?id=t",
    "/api/cost?by=model",
    "/api/stats",
    "/api/checkpoint",
    "/api/budgets",
    "/api/verify",
    "/api/feed",
    "/assets/app.js",
    "/assets/uPlot.iife.min.js",
    "/no/such/page",
];

#[test]
fn without_a_session_only_the_login_page_answers() {
    let (daemon, address) = dashboard();
    daemon
        .client()
        .log(Entry::new("secret event", "c"))
        .unwrap();
    for cookie in [
        None,
        Some("witness_session=0123"),
        Some("other=1; witness_session="),
    ] {
        for path in GUARDED_GETS {
            let answer = get(address, path, cookie);
            assert_eq!(
                answer.status, 401,
                "GET {path} with {cookie:?}: {}",
                answer.body
            );
            assert!(!answer.body.contains("secret event"), "GET {path}");
            assert!(answer.header("access-control-allow-origin").is_none());
        }
        for path in ["/api/verify", "/api/logout"] {
            let answer = request(
                address,
                "POST",
                path,
                &[("Cookie", cookie.unwrap_or(""))],
                "",
            );
            assert_eq!(answer.status, 401, "POST {path}");
        }
    }
    // A page asked for without a session is the login page, said to be one.
    let page = get(address, "/", None);
    assert!(page.body.contains("witness web"), "{}", page.body);
    let login = get(address, "/login", None);
    assert_eq!(login.status, 200);
    assert!(
        login
            .header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'")
    );
    assert_eq!(login.header("x-frame-options"), Some("DENY"));
    assert_eq!(get(address, "/login.js", None).status, 200);
}

#[test]
fn a_token_works_once_and_its_session_reads_the_log() {
    let (daemon, address) = dashboard();
    let receipt = daemon
        .client()
        .log(Entry::new("visible", "billing").trace("t-1"))
        .unwrap();
    let (url, token) = login_link(&daemon);
    assert!(
        url.starts_with(&format!("http://{address}/login#token=")),
        "{url}"
    );
    let (code, stdout, _) = witness(&daemon.socket, &["web", "--json"], None);
    assert_eq!(code, 0);
    let login: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(login["expires_in_secs"], 120);
    assert_ne!(
        login["url"].as_str().unwrap(),
        url,
        "each link has its own token"
    );
    let body = format!("{{\"token\":\"{token}\"}}");
    let json = [("Content-Type", "application/json")];
    let first = request(address, "POST", "/api/login", &json, &body);
    assert_eq!(first.status, 200, "{}", first.body);
    let cookie = first.header("set-cookie").unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let second = request(address, "POST", "/api/login", &json, &body);
    assert_eq!(second.status, 401, "a token works once: {}", second.body);
    assert!(
        second.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("witness web")
    );

    let pair = cookie.split(';').next().unwrap();
    let entries = get(address, "/api/entries?newest=10", Some(pair)).json();
    let entries = entries["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["seq"], receipt.seq);
    assert_eq!(entries[0]["hash"], hex::encode(receipt.hash));
    assert_eq!(entries[0]["component"], "billing");
    assert_eq!(get(address, "/", Some(pair)).status, 200);
    assert!(
        get(address, "/assets/app.js", Some(pair))
            .body
            .contains("textContent")
    );

    let logout = request(address, "POST", "/api/logout", &[("Cookie", pair)], "");
    assert_eq!(
        logout.status, 403,
        "a logout without the CSRF header is refused"
    );
    let session = get(address, "/api/session", Some(pair)).json();
    let csrf = session["csrf"].as_str().unwrap();
    let logout = request(
        address,
        "POST",
        "/api/logout",
        &[("Cookie", pair), ("X-CSRF-Token", csrf)],
        "",
    );
    assert_eq!(logout.status, 204);
    assert_eq!(
        get(address, "/api/entries", Some(pair)).status,
        401,
        "the session ended"
    );
}

#[test]
fn a_login_follows_the_sockets_read_rules() {
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let daemon = TestDaemon::start_with(|config| {
        config.web_listen = Some("127.0.0.1:0".parse().unwrap());
        config.socket_mode = 0o666;
        config.access.read_uids = vec![4242];
    });
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = as_nobody("witness")
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["--timeout", "5", "web"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("may write to this witnessd but not read"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "no link for a user who may not read"
    );
}

#[test]
fn a_daemon_without_a_dashboard_says_how_to_turn_it_on() {
    let daemon = TestDaemon::start();
    let (code, stdout, stderr) = witness(&daemon.socket, &["web"], None);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(stderr.contains("set web_listen"), "{stderr}");
}

#[test]
fn changes_need_the_sessions_csrf_secret_and_this_origin() {
    let (daemon, address) = dashboard();
    for n in 0..20 {
        daemon
            .client()
            .log(Entry::new(format!("e{n}"), "c"))
            .unwrap();
    }
    let (cookie, csrf) = log_in(&daemon, address);
    let cookie = cookie.as_str();
    let post = |headers: &[(&str, &str)]| request(address, "POST", "/api/verify", headers, "");
    assert_eq!(post(&[("Cookie", cookie)]).status, 403);
    assert_eq!(
        post(&[("Cookie", cookie), ("X-CSRF-Token", "0000")]).status,
        403
    );
    let foreign = post(&[
        ("Cookie", cookie),
        ("X-CSRF-Token", &csrf),
        ("Origin", "http://evil.example"),
    ]);
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    let origin = format!("http://{address}");
    let started = post(&[
        ("Cookie", cookie),
        ("X-CSRF-Token", &csrf),
        ("Origin", &origin),
    ]);
    assert_eq!(started.status, 202, "{}", started.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let state = get(address, "/api/verify", Some(cookie)).json();
        if state["state"] != "running" {
            break state;
        }
        assert!(Instant::now() < deadline, "the verification never ended");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(state["state"], "done", "{state}");
    assert_eq!(state["report"]["Intact"]["count"], 20, "{state}");
    // A login from another site's page is refused too.
    let (_, token) = login_link(&daemon);
    let answer = request(
        address,
        "POST",
        "/api/login",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
        ],
        &format!("{{\"token\":\"{token}\"}}"),
    );
    assert_eq!(answer.status, 403);
}

#[test]
fn another_host_name_reaches_nothing() {
    let (daemon, address) = dashboard();
    let (cookie, _) = log_in(&daemon, address);
    let port = address.port();
    for host in [
        format!("evil.example:{port}"),
        "127.0.0.1".into(),
        format!("127.0.0.2:{port}"),
    ] {
        let answer = request(
            address,
            "GET",
            "/api/stats",
            &[("Host", &host), ("Cookie", &cookie)],
            "",
        );
        assert_eq!(answer.status, 421, "Host {host}");
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let answer = request(
            address,
            "GET",
            "/api/stats",
            &[("Host", &host), ("Cookie", &cookie)],
            "",
        );
        assert_eq!(answer.status, 200, "Host {host}");
    }
}

#[test]
fn the_api_answers_as_the_socket_does() {
    let (daemon, address) = dashboard();
    let mut client = daemon.client();
    for n in 0..30u64 {
        let mut entry = Entry::new("llm_call", ["planner", "coder"][n as usize % 2])
            .trace(format!("t-{}", n % 4));
        entry.cost = Some(witness_client::Cost {
            tokens_in: 100 + n,
            tokens_out: 10,
            micro_usd: Some(7 * n),
            model: Some(["m-a", "m-b", "m-c"][n as usize % 3].into()),
            ..Default::default()
        });
        client.log(entry).unwrap();
    }
    let (cookie, _) = log_in(&daemon, address);
    let cookie = Some(cookie.as_str());
    let traces = client
        .traces(TracesQuery {
            since: None,
            until: None,
            component: None,
            before_seq: None,
            limit: 3,
        })
        .unwrap();
    assert_eq!(
        get(address, "/api/traces?limit=3", cookie).json(),
        serde_json::to_value(&traces).unwrap()
    );
    for by in [GroupBy::Model, GroupBy::Component, GroupBy::Day] {
        let name = format!("{by:?}").to_lowercase();
        let report = client
            .cost(CostQuery {
                by,
                since: None,
                until: None,
                component: Some("planner".into()),
                event: None,
                model: None,
                offset: 0,
                limit: 100,
            })
            .unwrap();
        let answer = get(
            address,
            &format!("/api/cost?by={name}&component=planner"),
            cookie,
        );
        assert_eq!(
            answer.json(),
            serde_json::to_value(&report).unwrap(),
            "by {name}"
        );
    }
    let trace = get(address, "/api/trace?id=t-1", cookie).json();
    assert_eq!(trace["summary"]["entries"], 8);
    assert_eq!(trace["entries"].as_array().unwrap().len(), 8);
    let checkpoint = client.checkpoint().unwrap();
    let answer = get(address, "/api/checkpoint", cookie).json();
    assert_eq!(answer["verifier_key"], checkpoint.verifier_key);
    assert_eq!(get(address, "/api/stats", cookie).json()["last_seq"], 30);
    assert_eq!(
        get(address, "/api/budgets", cookie).json(),
        serde_json::json!([])
    );
    // Paging entries: two pages of 20 and 10 and the cursor between them.
    let first = get(address, "/api/entries?limit=20", cookie).json();
    assert_eq!(first["entries"].as_array().unwrap().len(), 20);
    assert_eq!(first["next_after"], 20);
    let rest = get(address, "/api/entries?limit=20&after=20", cookie).json();
    assert_eq!(rest["entries"].as_array().unwrap().len(), 10);
    assert_eq!(rest["next_after"], Value::Null);
    let filtered = get(address, "/api/entries?component=coder&trace=t-1", cookie).json();
    assert_eq!(filtered["entries"].as_array().unwrap().len(), 8);
}

#[test]
fn garbage_gets_a_clear_refusal() {
    let (daemon, address) = dashboard();
    let (cookie, _) = log_in(&daemon, address);
    for (path, says) in [
        ("/api/entries?limit=abc", "limit"),
        ("/api/entries?limit=0", "limit"),
        ("/api/entries?limit=100000", "limit"),
        ("/api/entries?nonsense=1", "nonsense"),
        ("/api/entries?since=1e400", "since"),
        ("/api/cost?by=colour", "by must be"),
        ("/api/cost", "by"),
        ("/api/trace", "id"),
        ("/api/traces?limit=-1", "limit"),
        ("/api/feed?newest=x", "newest"),
    ] {
        let answer = get(address, path, Some(&cookie));
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(says), "{path}: {message}");
    }
    let stream = request(
        address,
        "GET",
        "/api/feed",
        &[("Cookie", &cookie), ("Last-Event-ID", "yesterday")],
        "",
    );
    assert_eq!(stream.status, 400);
    let json = [("Content-Type", "application/json")];
    for (body, status) in [
        ("", 400),
        ("{", 400),
        ("{\"token\": 5}", 422),
        ("{\"token\": \"x\", \"more\": 1}", 422),
        ("{\"token\": \"\u{0}\"}", 400),
        ("{\"token\": \"\\u0000\"}", 401),
        ("{\"token\": \"not a token\"}", 401),
    ] {
        let answer = request(address, "POST", "/api/login", &json, body);
        assert_eq!(answer.status, status, "{body:?}: {}", answer.body);
        assert!(answer.json()["error"]["message"].is_string());
    }
    let form = request(
        address,
        "POST",
        "/api/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "token=x",
    );
    assert_eq!(form.status, 415, "a form cannot log in: {}", form.body);
    let huge = format!("{{\"token\":\"{}\"}}", "a".repeat(3 << 20));
    assert_eq!(
        request(address, "POST", "/api/login", &json, &huge).status,
        413
    );
    // Nothing of it harmed the daemon.
    daemon.client().log(Entry::new("still here", "c")).unwrap();
}

/// Reads server-sent events from a live feed until `enough` says so; returns the `id` and
/// the entries' seqs of each `entries` event. The body is chunked: hyper writes each event
/// as a chunk, and the chunk sizes are lines of hex that match no field and are skipped.
fn read_events(
    reader: &mut impl BufRead,
    mut enough: impl FnMut(&[(u64, Vec<u64>)]) -> bool,
) -> Vec<(u64, Vec<u64>)> {
    let mut events = Vec::new();
    let (mut id, mut kind, mut data) = (None, String::new(), String::new());
    let mut line = String::new();
    while !enough(&events) {
        line.clear();
        let read = reader.read_line(&mut line).expect("the feed went silent");
        assert!(read > 0, "the feed ended after {events:?}");
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if kind == "entries" {
                let entries: Vec<Value> = serde_json::from_str(&data).unwrap();
                let seqs = entries
                    .iter()
                    .map(|entry| entry["seq"].as_u64().unwrap())
                    .collect();
                events.push((id.expect("an id"), seqs));
            }
            (id, kind, data) = (None, String::new(), String::new());
        } else if let Some(value) = line.strip_prefix("id: ") {
            id = Some(value.parse().unwrap());
        } else if let Some(value) = line.strip_prefix("event: ") {
            kind = value.to_owned();
        } else if let Some(value) = line.strip_prefix("data: ") {
            data.push_str(value);
        }
    }
    events
}

/// Opens a live feed and reads past its headers.
fn open_feed(
    address: SocketAddr,
    cookie: &str,
    path: &str,
    last_event_id: Option<u64>,
) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nCookie: {cookie}\r\n{resume}\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if line.to_lowercase().starts_with("content-type") {
            assert!(line.contains("text/event-stream"), "{line}");
        }
    }
    reader
}

#[test]
fn the_live_feed_follows_and_resumes_from_last_event_id() {
    let (daemon, address) = dashboard();
    let mut client = daemon.client();
    for n in 0..10 {
        client.log(Entry::new(format!("old {n}"), "c")).unwrap();
    }
    let (cookie, _) = log_in(&daemon, address);
    let mut feed = open_feed(address, &cookie, "/api/feed?newest=3", None);
    let seen = read_events(&mut feed, |events| {
        events.iter().map(|e| e.1.len()).sum::<usize>() >= 3
    });
    assert_eq!(
        seen[0].1,
        vec![8, 9, 10],
        "a new feed starts with the newest"
    );
    let receipt = client.log(Entry::new("new", "c")).unwrap();
    let more = read_events(&mut feed, |events| !events.is_empty());
    assert_eq!(
        more[0],
        (receipt.seq, vec![receipt.seq]),
        "an entry arrives as it commits"
    );
    drop(feed);

    // A reconnect with Last-Event-ID resumes just after it, whatever `newest` says.
    let mut resumed = open_feed(address, &cookie, "/api/feed?newest=1", Some(4));
    let events = read_events(&mut resumed, |events| {
        events.iter().map(|e| e.1.len()).sum::<usize>() >= 7
    });
    let seqs: Vec<u64> = events.iter().flat_map(|e| e.1.clone()).collect();
    assert_eq!(seqs, (5..=11).collect::<Vec<_>>());

    // Filters the database cannot do (model, text) still move the cursor on.
    for (n, model) in ["m-x", "m-y", "m-x"].iter().enumerate() {
        let mut entry =
            Entry::new("call", "c").payload(serde_json::json!({ "note": format!("Needle {n}") }));
        entry.cost = Some(witness_client::Cost {
            tokens_in: 1,
            model: Some((*model).into()),
            ..Default::default()
        });
        client.log(entry).unwrap();
    }
    let mut filtered = open_feed(
        address,
        &cookie,
        "/api/feed?model=m-x&text=needle%202",
        Some(11),
    );
    let events = read_events(&mut filtered, |events| events.iter().any(|e| e.0 == 14));
    let seqs: Vec<u64> = events.iter().flat_map(|e| e.1.clone()).collect();
    assert_eq!(seqs, vec![14]);
}

#[test]
fn a_stalled_feed_is_cut_off_and_ingest_goes_on() {
    let daemon = TestDaemon::start_with(|config| {
        config.web_listen = Some("127.0.0.1:0".parse().unwrap());
        config.stall_timeout = Duration::from_secs(1);
    });
    let address = daemon.web.unwrap();
    let (cookie, _) = log_in(&daemon, address);
    let stalled = open_feed(address, &cookie, "/api/feed?newest=0", None);
    // 48 MB of entries, far more than the sockets' buffers hold, while the feed reads none.
    let payload = format!("{{\"pad\":\"{}\"}}", "x".repeat(16 << 10));
    let started = Instant::now();
    let mut client = daemon.client();
    let mut last = 0;
    for _ in 0..30 {
        let batch: Vec<Entry> = (0..100)
            .map(|_| Entry::new("big", "c").payload_text(payload.clone()))
            .collect();
        last = client.log_batch(batch).unwrap().last().unwrap().seq;
    }
    assert_eq!(last, 3000);
    eprintln!(
        "3,000 entries of 16 KiB committed in {:?} beside a stalled feed",
        started.elapsed()
    );
    // The daemon ends the stalled feed: what the buffers held, then the end.
    let mut stalled = stalled;
    std::thread::sleep(Duration::from_secs(3));
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        assert!(
            Instant::now() < deadline,
            "the stalled feed was never cut off"
        );
        match stalled.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&chunk[..n]),
            Err(error) => panic!("{error}"),
        }
    }
    let text = String::from_utf8_lossy(&rest);
    let last_id: u64 = text
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .filter_map(|id| id.parse().ok())
        .next_back()
        .expect("some events were sent before the stall");
    assert!(
        last_id < 3000,
        "the feed was cut off before the end, at {last_id}"
    );
    // It catches up from where it was cut.
    let mut resumed = open_feed(address, &cookie, "/api/feed", Some(last_id));
    let events = read_events(&mut resumed, |events| {
        events.last().is_some_and(|e| e.0 == 3000)
    });
    let first = events.iter().find(|e| !e.1.is_empty()).unwrap();
    assert_eq!(first.1[0], last_id + 1);
}
