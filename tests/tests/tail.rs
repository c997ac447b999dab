//! End-to-end tests of the scripted tail (`quaero-tui --job` / `--run`) against the real
//! daemon: exactness (every event once, in order), exit codes, and surviving a restart.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use quaero_tests::shared::{Event, LogsResponse};
use quaero_tests::{Daemon, bin_path};

fn emit_def(id: &str, config: &str) -> String {
    format!("id = \"{id}\"\nname = \"{id}\"\n\n[[steps]]\nname = \"e\"\ntype = \"emit\"\n[steps.config]\n{config}\n")
}

fn tail_cmd(d: &Daemon, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin_path("quaero-tui"));
    cmd.arg("--server").arg(&d.base).args(args).env_remove("NO_COLOR").stdin(Stdio::null());
    cmd
}

/// Waits for `child` with a deadline, killing it (and failing the test) when it hangs.
fn finish(mut child: Child, limit: Duration, d: &Daemon) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "tail did not finish within {limit:?}\nstderr: {}\nlast stdout: {:?}\ndaemon: {}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout).lines().last(),
                d.output_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_tail(d: &Daemon, args: &[&str], limit: Duration) -> Output {
    let child = tail_cmd(d, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn quaero-tui");
    // Drain stdout concurrently: 20,000 lines do not fit in a pipe buffer.
    finish_draining(child, limit, d)
}

fn finish_draining(mut child: Child, limit: Duration, d: &Daemon) -> Output {
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let mut out = finish(child, limit, d);
    out.stdout = reader.join().expect("reader");
    out
}

/// Spawns `--run <def>` and returns the child and the manager id it printed on stderr.
fn spawn_run(d: &Daemon, def: &str, extra: &[&str]) -> (Child, String) {
    let mut args = vec!["--run", def];
    args.extend_from_slice(extra);
    let mut child = tail_cmd(d, &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("read manager id");
    let id = line.trim().to_string();
    assert!(id.starts_with('m'), "expected a manager id on stderr, got {line:?}");
    // Keep draining stderr so the tail never blocks on it.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
    });
    (child, id)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn post(url: &str) -> u16 {
    rt().block_on(async {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("post")
            .status()
            .as_u16()
    })
}

/// Every event of a job's scope, by paging with `after` through the API.
fn all_events(d: &Daemon, id: &str) -> Vec<Event> {
    rt().block_on(async {
        let client = reqwest::Client::new();
        let mut after = 0;
        let mut all = Vec::new();
        loop {
            let url = d.url(&format!("/api/jobs/{id}/logs?after={after}&limit=5000"));
            let page: LogsResponse = client.get(url).send().await.expect("get").json().await.expect("json");
            // The contract: `after` alone lists the oldest events first.
            let seqs: Vec<u64> = page.logs.iter().map(|e| e.seq).collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "GET /logs?after={after} must list oldest first (docs/rest-api.md), got {:?}…",
                &seqs[..seqs.len().min(5)]
            );
            let Some(last) = page.logs.last() else {
                return all;
            };
            after = last.seq;
            all.extend(page.logs);
        }
    })
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn json_events(out: &Output) -> Vec<Event> {
    stdout_lines(out)
        .iter()
        .map(|l| serde_json::from_str::<Event>(l).unwrap_or_else(|e| panic!("not an event line ({e}): {l}")))
        .collect()
}

fn assert_strictly_increasing(events: &[Event]) {
    for w in events.windows(2) {
        assert!(w[0].seq < w[1].seq, "seq not increasing: {} then {}", w[0].seq, w[1].seq);
    }
}

#[test]
fn twenty_thousand_events_arrive_once_in_order() {
    let d = Daemon::builder().definition("big.toml", &emit_def("big", "count = 20000\nmessage = \"n {i}\"")).start();
    let out = run_tail(&d, &["--run", "big", "--timestamps", "off"], Duration::from_secs(120));
    let numbers: Vec<u64> =
        stdout_lines(&out).iter().filter_map(|l| l.rsplit_once("] n ").and_then(|(_, n)| n.parse().ok())).collect();
    assert_eq!(numbers.len(), 20_000, "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(numbers.iter().copied().eq(1..=20_000), "numbers out of order or repeated");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_failing_job_exits_1_with_the_failure_last() {
    let d = Daemon::builder()
        .definition("bad.toml", &emit_def("bad", "count = 5\nmessage = \"ev {i}\"\nfail = true"))
        .start();
    let out = run_tail(&d, &["--run", "bad", "--json"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let events = json_events(&out);
    assert!(events.iter().any(|e| e.message == "ev 5"), "{events:#?}");
    let last = events.last().expect("some events");
    assert_eq!(last.level, quaero_tests::shared::Level::Error, "the failure is the last event: {last:?}");
}

#[test]
fn a_cancelled_job_exits_3() {
    let d = Daemon::builder().definition("slow.toml", &emit_def("slow", "count = 1000\ninterval_ms = 20")).start();
    let (child, id) = spawn_run(&d, "slow", &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(post(&d.url(&format!("/api/jobs/{id}/cancel"))), 200);
    let out = finish_draining(child, Duration::from_secs(30), &d);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn unknown_ids_exit_4_at_once() {
    let d = Daemon::start();
    for args in [["--job", "m999"], ["--run", "no-such-definition"]] {
        let started = Instant::now();
        let out = run_tail(&d, &args, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    }
}

#[test]
fn an_unreachable_server_exits_5() {
    let d = Daemon::start();
    let mut d = d;
    d.stop();
    let started = Instant::now();
    let out = run_tail(&d, &["--job", "m1"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(5));
    assert!(started.elapsed() >= Duration::from_secs(9), "gave up after {:?}", started.elapsed());
}

#[test]
fn the_tail_survives_a_daemon_restart_without_gap_or_repeat() {
    let mut d = Daemon::builder()
        .definition("slow.toml", &emit_def("slow", "count = 300\ninterval_ms = 20\nmessage = \"n {i}\""))
        .start();
    let (child, id) = spawn_run(&d, "slow", &["--json"]);
    std::thread::sleep(Duration::from_millis(1500));
    d.stop();
    std::thread::sleep(Duration::from_secs(2));
    d.restart();
    let out = finish_draining(child, Duration::from_secs(60), &d);
    let code = out.status.code();
    assert!(matches!(code, Some(0 | 1 | 3)), "exit {code:?}: {}", String::from_utf8_lossy(&out.stderr));
    let printed = json_events(&out);
    assert_strictly_increasing(&printed);
    let stored = all_events(&d, &id);
    let printed_seqs: Vec<u64> = printed.iter().map(|e| e.seq).collect();
    let stored_seqs: Vec<u64> = stored.iter().map(|e| e.seq).collect();
    assert!(
        printed_seqs == stored_seqs,
        "the tail must print exactly the job's log: printed {} events, stored {}",
        printed_seqs.len(),
        stored_seqs.len()
    );
    assert!(printed.iter().any(|e| e.message == "n 1"), "events from before the restart");
}

#[test]
fn json_lines_parse_with_increasing_seq() {
    let d = Daemon::builder().definition("small.toml", &emit_def("small", "count = 50\nchildren = 3")).start();
    let out = run_tail(&d, &["--run", "small", "--json"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let events = json_events(&out);
    assert!(events.len() >= 150, "3 children × 50 events, got {}", events.len());
    assert_strictly_increasing(&events);
    // Each line is exactly the API's event object.
    let first: serde_json::Value = serde_json::from_str(&stdout_lines(&out)[0]).expect("json");
    for key in ["seq", "job_id", "manager_id", "level", "message", "originator", "timestamp", "full_timestamp"] {
        assert!(first.get(key).is_some(), "missing {key}: {first}");
    }
}

#[test]
fn tail_n_and_no_follow_print_the_last_events_and_exit() {
    let d = Daemon::builder().definition("small.toml", &emit_def("small", "count = 40\nmessage = \"n {i}\"")).start();
    let (child, id) = spawn_run(&d, "small", &[]);
    assert_eq!(finish_draining(child, Duration::from_secs(30), &d).status.code(), Some(0));
    let stored = all_events(&d, &id);
    let out = run_tail(&d, &["--job", &id, "--tail", "5", "--no-follow", "--json"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0));
    let got: Vec<u64> = json_events(&out).iter().map(|e| e.seq).collect();
    let want: Vec<u64> = stored[stored.len() - 5..].iter().map(|e| e.seq).collect();
    assert_eq!(got, want);
}

#[test]
fn a_closed_pipe_ends_the_tail_quietly() {
    let d = Daemon::builder().definition("many.toml", &emit_def("many", "count = 5000")).start();
    let (child, id) = spawn_run(&d, "many", &[]);
    assert_eq!(finish_draining(child, Duration::from_secs(60), &d).status.code(), Some(0));
    let mut child = tail_cmd(&d, &["--job", &id, "--no-follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("one line");
    // The reader is dropped here, like `| head -1` exiting.
    let out = finish(child, Duration::from_secs(10), &d);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "no noise on a closed pipe");
}

/// The dashboard's actions (cancel, rerun, delete) through the TUI's own client, against
/// the real daemon: each is accepted and does what it says.
#[tokio::test]
async fn the_tui_client_cancels_reruns_and_deletes() {
    let def = "id = \"slow\"\n[[steps]]\nname = \"s\"\ntype = \"command\"\n[steps.config]\nrun = \"sleep 30\"\n";
    let d = Daemon::builder().definition("slow.toml", def).start();
    let client = quaero_tui::client::Client::new(&d.base, None).unwrap();
    let api = quaero_tests::Api::new(&d);
    let m = api.execute("slow").await;
    client.cancel(&m).await.expect("cancel");
    assert_eq!(api.wait_terminal(&m, 10).await, "cancelled");
    let again = client.rerun(&m).await.expect("rerun").new_job_id;
    assert_ne!(again, m);
    client.cancel(&again).await.expect("cancel the rerun");
    assert_eq!(api.wait_terminal(&again, 10).await, "cancelled");
    let deleted = client.delete(&m).await.expect("delete");
    assert_eq!(deleted.deleted_jobs, 2, "the manager and its step");
    assert_eq!(api.get(&format!("/api/jobs/{m}")).await.0, 404);
}
