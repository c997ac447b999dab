//! Operability: `/metrics`, `--check-config`, completions and man pages.

use std::process::Command;

use quaero_tests::{Api, Daemon, bin_path, emit_definition};

/// The value of the first sample line that starts with `prefix` (name plus labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
}

#[tokio::test]
async fn metrics_count_what_a_job_did() {
    let d = Daemon::builder().definition("e.toml", &emit_definition("e500", "count = 500")).start();
    let api = Api::new(&d);
    let before = reqwest::get(d.url("/metrics")).await.unwrap().text().await.unwrap();
    let ingested_before = sample(&before, "quaero_events_ingested_total").unwrap_or(0.0);
    let m = api.execute("e500").await;
    assert_eq!(api.wait_terminal(&m, 20).await, "completed");
    // The same page twice: read once, then shared (nothing changed in between).
    for _ in 0..2 {
        let (status, page) = api.get(&format!("/api/jobs/{m}-s1/logs?limit=100")).await;
        assert_eq!((status, page["count"].as_u64()), (200, Some(100)), "{page}");
    }

    let r = reqwest::get(d.url("/metrics")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    let ingested = sample(&text, "quaero_events_ingested_total").expect("events counter");
    // 500 emitted plus the engine's own events (started/finished).
    assert!(ingested - ingested_before >= 500.0, "ingested {ingested} (before {ingested_before})");
    assert!(sample(&text, "quaero_ingest_batch_seconds_count").unwrap() >= 1.0, "{text}");
    assert!(sample(&text, "quaero_ingest_batch_events_sum").unwrap() >= 500.0, "{text}");
    // One manager and one step completed.
    assert_eq!(sample(&text, "quaero_jobs{status=\"completed\"}"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "quaero_jobs{status=\"running\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "quaero_workers"), Some(16.0), "{text}");
    assert_eq!(sample(&text, "quaero_workers_busy"), Some(0.0), "{text}");
    assert!(sample(&text, "quaero_store_size_bytes").unwrap() > 0.0, "{text}");
    assert!(
        sample(&text, "quaero_http_requests_total{route=\"/api/job-definitions/{id}/execute\",status=\"202\"}")
            == Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "quaero_log_pages_total{result=\"read\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "quaero_log_pages_total{result=\"shared\"}"), Some(1.0), "{text}");
    for name in ["quaero_ws_clients", "quaero_triggers_sent_total", "quaero_triggers_merged_total"] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing: {text}");
    }
    assert!(text.contains("# TYPE quaero_ws_clients_dropped_total counter"), "{text}");
    assert!(text.contains("# TYPE quaero_queue_depth gauge"), "{text}");
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let d = Daemon::builder().arg("--auth-token").arg("s3cret-token").start();
    let r = reqwest::get(d.url("/metrics")).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = reqwest::Client::new().get(d.url("/metrics")).bearer_auth("s3cret-token").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

fn quaerod(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin_path("quaerod")).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_validates_config_and_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    std::fs::write(jobs.join("good.toml"), emit_definition("good", "count = 3")).unwrap();
    let jobs_s = jobs.to_str().unwrap();

    let (code, out, err) = quaerod(&["--check-config", "--definitions", jobs_s]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("good") && out.contains("1 valid, 0 invalid"), "{out}");
    // It does not create or open the data directory.
    assert!(!dir.path().join("quaero-data").exists());

    std::fs::write(jobs.join("broken.toml"), "id = \"broken\"\n[[steps]]\nname = 1\n").unwrap();
    let (code, out, _) = quaerod(&["--check-config", "--definitions", jobs_s]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("INVALID") && out.contains("broken.toml"), "{out}");

    // Two files with one id: neither is used, and both say where the other is.
    std::fs::write(jobs.join("also-good.toml"), emit_definition("good", "count = 5")).unwrap();
    let (code, out, _) = quaerod(&["--check-config", "--definitions", jobs_s]);
    assert_eq!(code, Some(2), "{out}");
    let dup: Vec<&str> = out.lines().filter(|l| l.contains("more than one file")).collect();
    assert_eq!(dup.len(), 2, "{out}");
    assert!(
        dup.iter().all(|l| l.contains("INVALID") && l.contains("jobs/good.toml") && l.contains("also-good.toml")),
        "{out}"
    );
    std::fs::remove_file(jobs.join("also-good.toml")).unwrap();
    // A file that does not parse is listed under its file name, but does not make a valid
    // file with that id a duplicate.
    std::fs::write(jobs.join("valid-broken-id.toml"), emit_definition("broken", "count = 1")).unwrap();
    let (_, out, _) = quaerod(&["--check-config", "--definitions", jobs_s]);
    assert!(out.lines().any(|l| l.trim_start().starts_with("ok ") && l.contains("valid-broken-id.toml")), "{out}");
    assert!(!out.contains("more than one file"), "{out}");
    std::fs::remove_file(jobs.join("valid-broken-id.toml")).unwrap();

    let (code, _, err) = quaerod(&["--check-config", "--definitions", jobs_s, "--retention", "someday"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("storage.retention") && err.contains("--retention"), "{err}");
}

#[test]
fn completions_and_man_pages_are_generated() {
    let (code, out, _) = quaerod(&["--completions", "bash"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("_quaerod()") && out.contains("--check-config"), "{out}");
    let (code, out, _) = quaerod(&["--man"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(".TH quaerod") && out.contains("auth\\-token"), "{out}");

    let out = Command::new(bin_path("quaero-tui")).args(["--completions", "zsh"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("#compdef quaero-tui"));
    let out = Command::new(bin_path("quaero-tui")).arg("--man").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH quaero-tui"));
}

/// `quaerod 2>&1 | tee log` and Ctrl-C (tee dies first), or `quaerod 2>&1 | head -1`: the
/// daemon's output pipe is gone. It must still stop cleanly, with its running job
/// interrupted (and so resumed), not die of a panic writing its own log. Its log is not in
/// colour when it is not a terminal.
#[tokio::test]
async fn a_closed_output_pipe_does_not_crash_the_daemon() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    let slow = "id = \"slow\"\n[[steps]]\nname = \"s\"\ntype = \"command\"\n[steps.config]\nrun = \"sleep 30\"\n";
    std::fs::write(jobs.join("slow.toml"), slow).unwrap();
    let data = dir.path().join("data");
    let start = |log: std::process::Stdio| {
        Command::new(bin_path("quaerod"))
            .args(["--port", "0", "--definitions"])
            .arg(&jobs)
            .arg("--data")
            .arg(&data)
            .env("QUAERO_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let mut child = start(std::process::Stdio::piped());
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let base = line.split("listening on ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let stderr = child.stderr.take().unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/job-definitions/slow/execute"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let m = r.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_string();
    // The readers go away.
    drop(stdout);
    drop(stderr);
    std::thread::sleep(std::time::Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");

    // The job was interrupted, not lost: the stop was recorded and it runs again.
    let mut again = start(std::process::Stdio::piped());
    let mut stdout = std::io::BufReader::new(again.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let base = line.split("listening on ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let logs: serde_json::Value =
        http.get(format!("{base}/api/jobs/{m}/logs?limit=100&order=asc")).send().await.unwrap().json().await.unwrap();
    let messages: Vec<&str> = logs["logs"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert!(messages.iter().any(|m| m.starts_with("quaerod is stopping")), "{messages:?}");
    unsafe { libc::kill(again.id() as i32, libc::SIGTERM) };
    let out = again.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in a piped log: {log:?}");
}

/// The dashboard and the TUI show a definition id that two files claim as invalid, with an
/// error naming both files; it cannot be run (before, the first file by name ran silently).
#[tokio::test]
async fn a_definition_id_in_two_files_is_shown_invalid_and_not_run() {
    let d = Daemon::builder()
        .definition("a.toml", &emit_definition("twice", "count = 1"))
        .definition("b.toml", &emit_definition("twice", "count = 2"))
        .start();
    let api = Api::new(&d);
    let (_, defs) = api.get("/api/job-definitions").await;
    let list = defs["job_definitions"].as_array().unwrap();
    let twice: Vec<_> = list.iter().filter(|d| d["id"] == "twice").collect();
    assert_eq!(twice.len(), 1, "{defs}");
    assert_eq!(twice[0]["valid"], false, "{defs}");
    let error = twice[0]["error"].as_str().unwrap();
    assert!(error.contains("a.toml") && error.contains("b.toml"), "{error}");
    let (s, b) = api.post("/api/job-definitions/twice/execute", serde_json::json!({})).await;
    assert_eq!(s, 400, "{b}");
}
