//! End-to-end tests of named queues: their own worker slots, pause and resume (kept
//! across a restart), and the errors that name a queue that is not there.

use std::process::Command;
use std::time::{Duration, Instant};

use quaero_tests::{Api, Daemon, bin_path};
use serde_json::{Value, json};

fn queue(list: &Value, name: &str) -> Value {
    list["queues"].as_array().unwrap().iter().find(|q| q["name"] == name).cloned().unwrap_or(Value::Null)
}

const BATCH: &str = r#"
id = "batch-job"
queue = "batch"
[[steps]]
name = "fan"
type = "command"
[steps.config]
run = "sleep 0.3"
for_each = ["a", "b", "c"]
"#;

#[tokio::test]
async fn a_queue_runs_its_own_slots_and_a_paused_one_starts_nothing_until_resumed_also_after_a_restart() {
    let cfg = tempfile::tempdir().unwrap();
    let file = cfg.path().join("quaero.toml");
    std::fs::write(&file, "[queues.batch]\nconcurrency = 1\n").unwrap();
    let mut d = Daemon::builder().arg("--config").arg(file.to_str().unwrap()).definition("batch.toml", BATCH).start();
    let api = Api::new(&d);

    let (s, list) = api.get("/api/queues").await;
    assert_eq!(s, 200);
    assert_eq!(queue(&list, "default")["concurrency"], 16);
    assert_eq!(queue(&list, "batch")["concurrency"], 1);
    assert_eq!(queue(&list, "batch")["paused"], false);

    // One slot: three children run one at a time.
    let m = api.execute("batch-job").await;
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.status(&m).await != "completed" {
        let (_, list) = api.get("/api/queues").await;
        most = most.max(queue(&list, "batch")["running"].as_u64().unwrap());
        assert!(Instant::now() < deadline, "{m} did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most, 1, "never more than the queue's one slot");
    let (_, list) = api.get("/api/queues").await;
    assert_eq!(queue(&list, "batch")["completed_last_minute"], 3);

    // Paused: a new run stays pending, across kill -9 and a restart too.
    let (s, q) = api.post("/api/queues/batch/pause", json!({})).await;
    assert_eq!((s, q["paused"].clone()), (200, json!(true)), "{q}");
    let waiting = api.execute("batch-job").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.status(&waiting).await, "pending");
    let (_, list) = api.get("/api/queues").await;
    assert_eq!(queue(&list, "batch")["pending"], 1, "{list}");
    // Killed, not stopped: the pause was durable when the request answered.
    d.kill9();
    d.restart();
    let api = Api::new(&d);
    let (_, list) = api.get("/api/queues").await;
    assert_eq!(queue(&list, "batch")["paused"], true, "a pause is kept across a restart");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.status(&waiting).await, "pending");

    let metrics = api.http().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"quaero_queue{queue="batch",state="paused"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"quaero_queue{queue="batch",state="pending"} 1"#), "{metrics}");

    let (s, q) = api.post("/api/queues/batch/resume", json!({})).await;
    assert_eq!((s, q["paused"].clone()), (200, json!(false)));
    assert_eq!(api.wait_terminal(&waiting, 30).await, "completed");
    let metrics = api.http().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"quaero_queue{queue="batch",state="paused"} 0"#), "{metrics}");
    // Counted by this daemon process since its restart: the one run that ended after it.
    assert!(
        metrics.contains(r#"quaero_jobs_finished_total{definition="batch-job",status="completed"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"quaero_job_duration_seconds_count{definition="batch-job"} 1"#), "{metrics}");
    assert_eq!(api.post("/api/queues/nope/pause", json!({})).await.0, 404);

    // A definition naming a queue this daemon does not have is refused, naming it.
    let bad = json!({"id": "lost", "queue": "nope", "steps": [{"name": "e", "type": "emit", "config": {}}]});
    let (s, b) = api.post("/api/job-definitions", bad).await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().starts_with("queue: no queue \"nope\""), "{b}");
}

#[test]
fn a_bad_queue_in_the_config_stops_the_daemon_naming_it() {
    let cfg = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[queues.default]\nconcurrency = 2\n", "queues.default"),
        ("[queues.batch]\nconcurrency = 0\n", "queues.batch.concurrency"),
        ("[queues.batch]\nconcurency = 2\n", "queues.batch.concurency"),
        ("[queues.Big]\nconcurrency = 2\n", "queues.Big"),
    ] {
        let file = cfg.path().join("q.toml");
        std::fs::write(&file, text).unwrap();
        let out = Command::new(bin_path("quaerod"))
            .args(["--config", file.to_str().unwrap(), "--check-config"])
            .output()
            .expect("run quaerod");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(key), "{text}: expected {key} in {stderr}");
    }
}
