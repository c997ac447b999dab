//! `/ws` end to end: the real daemon and a tokio-tungstenite client. Refresh
//! triggers instead of per-event push, `finished` triggers a fetch can rely on,
//! subscriptions, clients that never read, `mode = "push"`, malformed client messages.
//!
//! The two load-demo tests also print what one reading client received (messages and
//! bytes per type) in each mode; see them with
//! `cargo nextest run -p quaero-tests --test ws load_demo --no-capture`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use quaero_tests::{Api, Daemon};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// One message as the client received it.
#[derive(Debug, Clone)]
struct Got {
    at: Instant,
    ty: String,
    p: Value,
    /// Length of the text frame's payload.
    bytes: usize,
}

/// A client whose socket is read all the time by a task; the test takes the messages from
/// a channel, so a slow assertion or an HTTP fetch never makes the client a slow reader.
struct Client {
    tx: SplitSink<Ws, Message>,
    rx: mpsc::UnboundedReceiver<Got>,
    hello: Value,
}

impl Client {
    async fn connect(d: &Daemon) -> Client {
        let (ws, _) = tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::connect_async(d.ws_url()))
            .await
            .expect("ws connect timed out")
            .expect("ws connect");
        let (tx, mut read) = ws.split();
        let (send, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(m)) = read.next().await {
                if let Message::Text(t) = m {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server sends JSON");
                    let ty = v["type"].as_str().expect("message has a type").to_string();
                    let got = Got { at: Instant::now(), ty, p: v["payload"].clone(), bytes: t.len() };
                    if send.send(got).is_err() {
                        break;
                    }
                }
            }
        });
        let mut c = Client { tx, rx, hello: Value::Null };
        let first = c.next(Duration::from_secs(20)).await.expect("hello within 20 s");
        assert_eq!(first.ty, "hello", "first message: {first:?}");
        c.hello = first.p;
        c
    }

    async fn send(&mut self, text: &str) {
        self.tx.send(Message::text(text.to_string())).await.expect("ws send");
    }

    /// The next message; `None` when nothing came within `within`. Panics when the
    /// server closed the connection.
    async fn next(&mut self, within: Duration) -> Option<Got> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(g)) => Some(g),
            Ok(None) => panic!("the server closed the WebSocket"),
            Err(_) => None,
        }
    }

    /// Every message until (and including) the first for which `done` holds.
    async fn until(&mut self, secs: u64, mut done: impl FnMut(&Got) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(g) = self.next(left).await else {
                panic!("condition not met within {secs}s; got {} messages: {:?}", out.len(), summary(&out))
            };
            let stop = done(&g);
            out.push(g);
            if stop {
                return out;
            }
        }
    }

    /// Everything that arrives during `d`.
    async fn drain_for(&mut self, d: Duration) -> Vec<Got> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(g) = self.next(deadline.saturating_duration_since(Instant::now())).await {
            out.push(g);
        }
        out
    }

    /// Makes sure the server has handled everything this client sent so far: messages are
    /// handled in order, and a malformed one is answered with an `error`.
    async fn barrier(&mut self) -> Vec<Got> {
        self.send("barrier").await;
        self.until(20, |g| g.ty == "error").await
    }
}

fn summary(msgs: &[Got]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for g in msgs {
        *m.entry(g.ty.clone()).or_insert(0) += 1;
    }
    m
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

fn is_refresh(g: &Got) -> bool {
    g.ty == "refresh_step_events"
}

fn names_step(g: &Got, step: &str) -> bool {
    is_refresh(g) && strs(&g.p["step_ids"]).iter().any(|s| s == step)
}

fn finished(g: &Got) -> bool {
    is_refresh(g) && g.p["finished"] == true
}

/// The `finished` trigger of a manager (it names the manager and no step).
fn manager_finished(g: &Got, m: &str) -> bool {
    finished(g) && strs(&g.p["step_ids"]).is_empty() && strs(&g.p["manager_ids"]) == [m]
}

fn status_of(g: &Got, job: &str) -> Option<String> {
    (g.ty == "job_status_change" && g.p["job_id"] == job).then(|| g.p["status"].as_str().unwrap().to_string())
}

/// Milliseconds since the epoch of an RFC 3339 UTC time with milliseconds
/// (`2026-11-28T13:04:05.123Z`), the daemon's timestamps.
fn epoch_ms(ts: &str) -> i64 {
    let (date, time) = ts.trim_end_matches('Z').split_once('T').unwrap_or_else(|| panic!("timestamp {ts:?}"));
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + frac.parse::<i64>().unwrap()
}

/// Two steps: 20 children × 1,000 events, one every 3 ms (20,000 events over ~3 s), then
/// 200 events from the step itself over ~1 s.
const BURST: &str = r#"id = "burst"
name = "burst"
[[steps]]
name = "burst"
type = "emit"
[steps.config]
count = 1000
children = 20
interval_ms = 3
message = "child {child} event {i} of {n}"
[[steps]]
name = "tail"
type = "emit"
[steps.config]
count = 200
interval_ms = 5
message = "tail {i} of {n}"
"#;

fn burst_daemon(extra: &[&str]) -> Daemon {
    let mut b = Daemon::builder().definition("burst.toml", BURST).arg("--concurrency").arg("20");
    for a in extra {
        b = b.arg(*a);
    }
    b.start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_20000_events_makes_a_few_triggers_and_finished_ones_a_fetch_can_trust() {
    let d = burst_daemon(&[]);
    let api = Api::new(&d);
    let mut c = Client::connect(&d).await;
    assert_eq!(c.hello["mode"], "trigger", "{}", c.hello);
    assert_eq!(c.hello["time_threshold_ms"], 1000, "{}", c.hello);
    let threshold_ms = 1000i64;

    let m = api.execute("burst").await;
    let steps = [format!("{m}-s1"), format!("{m}-s2")];
    // On receipt of a step's finished trigger, fetch what a dashboard panel fetches.
    let mut fetched: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut msgs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let g = c
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
            .unwrap_or_else(|| panic!("manager {m} not finished within 120 s: {:?}", summary(&msgs)));
        if finished(&g) {
            for s in strs(&g.p["step_ids"]) {
                let (st, b) = api.get(&format!("/api/jobs/{s}/logs?limit=100&order=asc")).await;
                assert_eq!(st, 200, "{b}");
                fetched.insert(s, b["logs"].as_array().unwrap().clone());
            }
        }
        let done = manager_finished(&g, &m);
        msgs.push(g);
        if done {
            break;
        }
    }
    // Two more ticks: nothing may name a finished step after its finished trigger.
    msgs.extend(c.drain_for(Duration::from_millis(2500)).await);
    assert_eq!(api.status(&m).await, "completed");

    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        let naming: Vec<&Got> = msgs.iter().filter(|g| names_step(g, step)).collect();
        let fins: Vec<usize> = (0..naming.len()).filter(|&k| naming[k].p["finished"] == true).collect();
        assert_eq!(fins.len(), 1, "{step}: exactly one finished trigger: {naming:?}");
        assert_eq!(fins[0], naming.len() - 1, "{step}: a trigger named the step after its finished one: {naming:?}");
        let fin = naming[fins[0]];
        assert_eq!(strs(&fin.p["step_ids"]), [step.as_str()], "{fin:?}");
        assert_eq!(strs(&fin.p["manager_ids"]), [m.as_str()], "{fin:?}");

        // How long the step ran, by the daemon's clock: from its `running` status change to
        // its finished trigger. Periodic triggers come at most once per threshold within that.
        let running = msgs
            .iter()
            .find(|g| status_of(g, step).as_deref() == Some("running"))
            .unwrap_or_else(|| panic!("{step}: no running status change"));
        let ran_ms =
            epoch_ms(fin.p["timestamp"].as_str().unwrap()) - epoch_ms(running.p["timestamp"].as_str().unwrap());
        assert!(ran_ms >= 0, "{step}: finished before it ran? {ran_ms} ms");
        let bound = (ran_ms + threshold_ms - 1) / threshold_ms + 1 + 2;
        eprintln!("{step}: ran {ran_ms} ms, {} triggers named it (bound {bound})", naming.len());
        assert!(
            naming.len() as i64 <= bound,
            "{step}: {} triggers in {ran_ms} ms with a {threshold_ms} ms threshold (at most {bound}): {naming:?}",
            naming.len()
        );

        // The finished trigger comes with the terminal status change, not at the next tick.
        let terminal = msgs
            .iter()
            .find(|g| status_of(g, step).as_deref() == Some("completed"))
            .unwrap_or_else(|| panic!("{step}: no completed status change"));
        let lag = fin.at.saturating_duration_since(terminal.at);
        assert!(lag < Duration::from_millis(300), "{step}: finished trigger {lag:?} after its status change");

        // The fetch made on receipt already ends with the step's last event.
        let all = api.all_events(step, 5000).await;
        let last = all.last().unwrap();
        let got = fetched.get(step).unwrap_or_else(|| panic!("{step}: not fetched"));
        assert_eq!(got.len(), 100);
        assert_eq!(got.last().unwrap()["seq"], last["seq"], "{step}: the fetch on the finished trigger missed events");
        let msg = last["message"].as_str().unwrap();
        assert!(msg.starts_with(&format!("step {n} completed")), "{step}: last event {msg:?}");
        if n == 1 {
            let emitted = all.iter().filter(|e| e["message"].as_str().unwrap().starts_with("child ")).count();
            assert_eq!(emitted, 20_000);
            // While 20,000 events came in over seconds, the client was told more than once.
            let periodic = naming.iter().filter(|g| g.p["finished"] == false).count();
            assert!(periodic >= 2, "{step}: {periodic} periodic triggers in {ran_ms} ms");
        }
    }
    // Nothing but the two steps and the manager is ever named.
    for g in msgs.iter().filter(|g| is_refresh(g)) {
        assert!(strs(&g.p["step_ids"]).iter().all(|s| steps.contains(s)), "{g:?}");
        assert_eq!(strs(&g.p["manager_ids"]), [m.as_str()], "{g:?}");
    }
    assert!(msgs.iter().all(|g| g.ty != "job_log"), "job_log in trigger mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_subscribed_to_one_manager_hears_nothing_about_another() {
    let def = |id: &str, count: u32| {
        format!(
            "id = \"{id}\"\nname = \"{id}\"\n[[steps]]\nname = \"e\"\ntype = \"emit\"\n[steps.config]\n\
             count = {count}\nchildren = 4\ninterval_ms = 5\n"
        )
    };
    let d = Daemon::builder().definition("a.toml", &def("alpha", 500)).definition("b.toml", &def("beta", 150)).start();
    let api = Api::new(&d);
    let mut only_a = Client::connect(&d).await;
    let mut all = Client::connect(&d).await;

    let a = api.execute("alpha").await;
    only_a.send(&json!({"type": "subscribe", "job_ids": [a]}).to_string()).await;
    only_a.barrier().await;
    let b = api.execute("beta").await;
    assert_ne!(a, b);

    // The unfiltered client hears both: B ran while A was running.
    let heard = all.until(120, |g| manager_finished(g, &a)).await;
    let b_running = heard.iter().position(|g| status_of(g, &format!("{b}-s1")).as_deref() == Some("running"));
    assert!(b_running.is_some(), "B's step did not run while A ran: {:?}", summary(&heard));
    assert_eq!(api.wait_terminal(&b, 60).await, "completed");
    let mut heard_all = heard;
    heard_all.extend(all.drain_for(Duration::from_millis(2500)).await);
    let about = |g: &Got, m: &str| {
        let p = g.p.to_string();
        p.contains(&format!("\"{m}\"")) || p.contains(&format!("\"{m}-"))
    };
    for ty in ["refresh_step_events", "job_status_change", "step_progress"] {
        assert!(heard_all.iter().any(|g| g.ty == ty && about(g, &b)), "unfiltered client: no {ty} about B");
    }

    let mut got = only_a.until(60, |g| manager_finished(g, &a)).await;
    got.extend(only_a.drain_for(Duration::from_millis(2500)).await);
    // It heard A ...
    assert!(got.iter().any(|g| names_step(g, &format!("{a}-s1")) && g.p["finished"] == true), "{:?}", summary(&got));
    assert!(got.iter().any(|g| status_of(g, &a).as_deref() == Some("completed")));
    assert!(got.iter().any(|g| g.ty == "step_progress" && about(g, &a)));
    // ... and nothing about B.
    let leaks: Vec<&Got> = got.iter().filter(|g| about(g, &b)).collect();
    assert!(leaks.is_empty(), "subscribed to {a}, heard about {b}: {leaks:?}");
}

/// A WebSocket whose socket receive buffer is tiny: when the client does not read, the
/// daemon's writes to it stop almost at once.
async fn never_reading_client(port: u16) -> Ws {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(([127, 0, 0, 1], port).into()).await.expect("connect");
    let req = format!("ws://127.0.0.1:{port}/ws").into_client_request().unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)).await.expect("handshake");
    ws
}

/// `jobs/load-demo.toml` (200 children × 500 events) with a client connected that never
/// reads and one that reads everything. The job finishes well before the daemon would
/// drop the stuck client (30 s), so it never waited for it. Prints what the reading client
/// received: the measurement BENCHMARKS.md reports for the old design.
async fn load_demo_with_a_client_that_never_reads(push: bool) {
    let mut b = Daemon::builder().definition("load-demo.toml", include_str!("../../jobs/load-demo.toml"));
    if push {
        b = b.env("QUAERO_WEBSOCKET_MODE", "push");
    }
    let d = b.start();
    let api = Api::new(&d);
    let mut stuck = never_reading_client(d.port).await;
    stuck.send(Message::text(json!({"type": "subscribe", "job_ids": []}).to_string())).await.unwrap();
    let mut c = Client::connect(&d).await;
    let mode = if push { "push" } else { "trigger" };
    assert_eq!(c.hello["mode"], mode);

    let started = Instant::now();
    let m = api.execute("load-demo").await;
    // A daemon whose ingest waits for the stuck client may not even answer: bound the wait.
    let end = tokio::time::timeout(Duration::from_secs(100), api.wait_terminal(&m, 90))
        .await
        .unwrap_or_else(|_| panic!("load-demo: no answer about {m} within 100 s with a client that never reads"));
    assert_eq!(end, "completed");
    let took = started.elapsed();
    // The manager's completed status change and its finished trigger, in either order.
    let (mut status_seen, mut trigger_seen) = (false, false);
    let mut got = c
        .until(60, |g| {
            status_seen |= status_of(g, &m).is_some_and(|s| s == "completed");
            trigger_seen |= manager_finished(g, &m);
            status_seen && trigger_seen
        })
        .await;
    // The last coalesced progress and stats come with the next tick.
    got.extend(c.drain_for(Duration::from_millis(1500)).await);
    let events = api.all_events(&m, 5000).await.len();

    let mut per_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for g in &got {
        let e = per_type.entry(g.ty.as_str()).or_default();
        e.0 += 1;
        e.1 += g.bytes;
    }
    let total = (got.len(), got.iter().map(|g| g.bytes).sum::<usize>());
    eprintln!(
        "MEASURE mode={mode} load-demo: {events} events in {:.1} s; one client received {} messages, {} bytes \
         (text payloads); per type (messages, bytes): {per_type:?}",
        took.as_secs_f64(),
        total.0,
        total.1
    );

    assert!(took < Duration::from_secs(25), "load-demo took {took:?} with a client that never reads");
    assert!(events >= 100_000, "{events}");
    let logs = per_type.get("job_log").map_or(0, |t| t.0);
    if push {
        assert!(logs > 0 && logs <= events, "{logs} job_log for {events} events");
    } else {
        assert_eq!(logs, 0, "job_log in trigger mode");
        // Triggers, status changes, progress and stats: a handful per second, not per event.
        assert!(total.0 < 200, "{} messages for one load-demo in trigger mode: {per_type:?}", total.0);
    }
    // The daemon still answers, and the stuck client is still connected (or was dropped):
    // either way nothing waited for it.
    assert_eq!(api.get("/api/health").await.0, 200);
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_demo_finishes_with_a_client_that_never_reads_trigger_mode() {
    load_demo_with_a_client_that_never_reads(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_demo_finishes_with_a_client_that_never_reads_push_mode() {
    load_demo_with_a_client_that_never_reads(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_mode_sends_one_job_log_per_event_and_no_periodic_triggers() {
    let d = burst_daemon(&["--mode", "push"]);
    let api = Api::new(&d);
    let mut c = Client::connect(&d).await;
    assert_eq!(c.hello["mode"], "push", "{}", c.hello);
    let m = api.execute("burst").await;
    let mut got = c.until(120, |g| status_of(g, &m).is_some_and(|s| s != "running" && s != "pending")).await;
    got.extend(c.drain_for(Duration::from_millis(2500)).await);
    assert_eq!(api.status(&m).await, "completed");

    let all = api.all_events(&m, 5000).await;
    assert!(all.len() > 20_200, "{}", all.len());
    let by_seq: BTreeMap<u64, &Value> = all.iter().map(|e| (e["seq"].as_u64().unwrap(), e)).collect();
    let pushed: Vec<&Value> = got.iter().filter(|g| g.ty == "job_log").map(|g| &g.p["event"]).collect();
    let seqs: Vec<u64> = pushed.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "an event was pushed twice");
    assert_eq!(seqs.len(), all.len(), "job_log messages vs events in the log");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "job_log out of seq order");
    assert_eq!(unique, by_seq.keys().copied().collect::<BTreeSet<u64>>());
    // Each pushed event is the event the log holds.
    for e in &pushed {
        let stored = by_seq[&e["seq"].as_u64().unwrap()];
        assert_eq!(*e, stored, "pushed event differs from the stored one");
    }
    // Push mode is the old design: no periodic refresh triggers. (The daemon still sends
    // `finished` triggers, status changes, progress and stats.)
    let periodic: Vec<&Got> = got.iter().filter(|g| is_refresh(g) && g.p["finished"] == false).collect();
    assert!(periodic.is_empty(), "periodic triggers in push mode: {periodic:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_client_messages_get_an_error_and_the_connection_stays() {
    let d = Daemon::builder()
        .definition("e.toml", &quaero_tests::emit_definition("slowish", "count = 100\ninterval_ms = 10"))
        .start();
    let api = Api::new(&d);
    let mut c = Client::connect(&d).await;
    let bad: [(&str, Message); 6] = [
        ("not JSON", Message::text("hello?")),
        ("unknown type", Message::text(r#"{"type":"unsubscribe","job_ids":[]}"#)),
        ("no type", Message::text(r#"{"job_ids":["m1"]}"#)),
        ("job_ids not a list", Message::text(r#"{"type":"subscribe","job_ids":"m1"}"#)),
        ("not a job id", Message::text(r#"{"type":"subscribe","job_ids":["../../etc"]}"#)),
        ("binary", Message::binary(vec![0u8, 159, 146, 150])),
    ];
    for (what, msg) in bad {
        c.tx.send(msg).await.unwrap_or_else(|e| panic!("{what}: send failed: {e}"));
        let got = c.until(20, |g| g.ty == "error").await;
        let err = got.last().unwrap();
        let text = err.p["message"].as_str().unwrap_or_else(|| panic!("{what}: {err:?}"));
        assert!(!text.is_empty(), "{what}");
        if what == "not a job id" {
            assert!(text.contains("../../etc"), "{what}: {text}");
        }
    }
    // Still usable: a subscribe works and the job's triggers arrive.
    let m = api.execute("slowish").await;
    c.send(&json!({"type": "subscribe", "job_ids": [m]}).to_string()).await;
    let got = c.until(60, |g| manager_finished(g, &m)).await;
    assert!(got.iter().any(|g| names_step(g, &format!("{m}-s1")) && g.p["finished"] == true), "{:?}", summary(&got));
    assert!(got.iter().all(|g| g.ty != "error"), "a valid subscribe got an error: {got:?}");
}

/// `queue_stats` carries the counts of `GET /api/jobs/stats` within a tick of a change,
/// also after a delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stats_follow_runs_and_deletes() {
    let d = Daemon::builder()
        .arg("--time-threshold")
        .arg("100ms")
        .definition("e.toml", &quaero_tests::emit_definition("e", "count = 3"))
        .start();
    let api = Api::new(&d);
    let mut c = Client::connect(&d).await;
    let m = api.execute("e").await;
    assert_eq!(api.wait_terminal(&m, 30).await, "completed");
    let got = c.until(10, |g| g.ty == "queue_stats" && g.p["completed_jobs"] == 2).await;
    let (_, rest) = api.get("/api/jobs/stats").await;
    assert_eq!(got.last().unwrap().p, rest, "queue_stats is the stats route's body");
    assert_eq!(api.delete(&format!("/api/jobs/{m}")).await.0, 200);
    c.until(10, |g| g.ty == "queue_stats" && g.p["total_jobs"] == 0).await;
}

#[tokio::test]
async fn queue_changes_reach_clients_at_most_once_a_tick() {
    let fan = "id = \"fan\"\n[[steps]]\nname = \"many\"\ntype = \"command\"\n[steps.config]\nrun = \"sleep 0.05\"\nfor_each = [\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\",\"18\",\"19\",\"20\",\"21\",\"22\",\"23\",\"24\",\"25\",\"26\",\"27\",\"28\",\"29\",\"30\"]\n";
    let d = Daemon::builder().arg("--time-threshold").arg("500ms").definition("fan.toml", fan).start();
    let api = Api::new(&d);
    let mut c = Client::connect(&d).await;
    c.drain_for(Duration::from_millis(700)).await;

    let (s, _) = api.post("/api/queues/default/pause", json!({})).await;
    assert_eq!(s, 200);
    let got = c.until(5, |g| g.ty == "queues").await;
    let q = &got.last().unwrap().p["queues"];
    let default = q.as_array().unwrap().iter().find(|q| q["name"] == "default").unwrap();
    assert_eq!(default["paused"], true, "{q}");
    // A run that waits on the paused queue is announced, pending, before it starts.
    let m = api.execute("fan").await;
    c.until(5, |g| status_of(g, &m).as_deref() == Some("pending")).await;
    api.post("/api/queues/default/resume", json!({})).await;

    // Counts change with every child; clients get them coalesced, one message a tick.
    let started = Instant::now();
    let mut got = Vec::new();
    while api.status(&m).await != "completed" {
        got.extend(c.drain_for(Duration::from_millis(100)).await);
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    got.extend(c.drain_for(Duration::from_millis(1200)).await);
    let at: Vec<Instant> = got.iter().filter(|g| g.ty == "queues").map(|g| g.at).collect();
    assert!(!at.is_empty(), "the counts moved: {:?}", summary(&got));
    for w in at.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(350), "two queues messages within one tick");
    }
}
