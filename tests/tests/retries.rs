//! End-to-end tests of retries: a step (or each child of a fan-out) tried again after a
//! failure, with its attempts in events and on the job, a timeout per attempt, and the
//! attempt state kept across `kill -9`.

use std::time::{Duration, Instant};

use quaero_tests::{Api, Daemon};
use serde_json::{Value, json};

fn messages(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["message"].as_str().unwrap_or_default().to_string()).collect()
}

/// A shell line that fails until it has run `ok_from` times (counted in `dir/<name>`).
fn flaky(dir: &std::path::Path, name: &str, ok_from: u32) -> String {
    let f = dir.join(name);
    let f = f.display();
    format!("n=$(cat {f} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {f}; echo try $n; [ $n -ge {ok_from} ]")
}

fn definition(id: &str, run: &str, retry: &str, extra: &str) -> String {
    let run = run.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "id = \"{id}\"\n[[steps]]\nname = \"s\"\ntype = \"command\"\nretry = {retry}\n{extra}\n[steps.config]\nrun = \"{run}\"\n"
    )
}

#[tokio::test]
async fn a_failed_step_is_tried_again_and_fails_only_when_its_last_attempt_fails() {
    let work = tempfile::tempdir().unwrap();
    let retry = r#"{ max_attempts = 3, initial = "200ms", jitter = false }"#;
    let d = Daemon::builder()
        .definition("a.toml", &definition("second-time", &flaky(work.path(), "a", 2), retry, ""))
        .definition("b.toml", &definition("never", "echo no; exit 3", retry, ""))
        .start();
    let api = Api::new(&d);

    let m = api.execute("second-time").await;
    assert_eq!(api.wait_terminal(&m, 30).await, "completed");
    let said = messages(&api.all_events(&format!("{m}-s1"), 1000).await);
    let wanted = ["attempt 1/3 started", "try 1", "attempt 2/3 started", "try 2"];
    let mut at = 0;
    for line in &said {
        if at < wanted.len() && line == wanted[at] {
            at += 1;
        }
    }
    assert_eq!(at, wanted.len(), "in order {wanted:?}: {said:?}");
    let failed: Vec<&String> = said.iter().filter(|l| l.starts_with("attempt 1/3 failed:")).collect();
    assert_eq!(failed.len(), 1, "{said:?}");
    assert!(failed[0].ends_with("next attempt in 200ms"), "{said:?}");
    let (_, step) = api.get(&format!("/api/jobs/{m}-s1")).await;
    assert_eq!((step["attempt"].clone(), step["max_attempts"].clone()), (json!(2), json!(3)), "{step}");
    assert!(step.get("next_attempt_at").is_none(), "{step}");

    let m = api.execute("never").await;
    assert_eq!(api.wait_terminal(&m, 30).await, "failed");
    let said = messages(&api.all_events(&format!("{m}-s1"), 1000).await);
    assert_eq!(said.iter().filter(|l| l.ends_with("started") && l.starts_with("attempt")).count(), 3, "{said:?}");
    assert_eq!(said.iter().filter(|l| l.contains("next attempt in")).count(), 2, "{said:?}");
    let (_, job) = api.get(&format!("/api/jobs/{m}")).await;
    assert!(job["steps"][0]["error"].as_str().unwrap().ends_with("(attempt 3 of 3)"), "{job}");
    assert_eq!(job["steps"][0]["attempt"], 3);
}

#[tokio::test]
async fn each_child_of_a_fan_out_is_retried_on_its_own_and_attempts_time_out() {
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("{item}");
    let f = f.display();
    let run = format!("n=$(cat {f} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {f}; [ $n -ge 2 ]");
    let fan = format!(
        "id = \"fan\"\n[[steps]]\nname = \"s\"\ntype = \"command\"\nretry = {{ max_attempts = 2, initial = \"100ms\" }}\n[steps.config]\nrun = \"{run}\"\nfor_each = [\"a\", \"b\", \"c\"]\n"
    );
    let slow = definition("slow", "sleep 20", r#"{ max_attempts = 2, initial = "100ms" }"#, "timeout = \"300ms\"");
    let d = Daemon::builder().definition("fan.toml", &fan).definition("slow.toml", &slow).start();
    let api = Api::new(&d);

    let m = api.execute("fan").await;
    assert_eq!(api.wait_terminal(&m, 30).await, "completed");
    let (_, children) = api.get(&format!("/api/jobs?parent_id={m}-s1")).await;
    let children = children["jobs"].as_array().unwrap().clone();
    assert_eq!(children.len(), 3);
    for c in &children {
        assert_eq!(c["status"], "completed", "{c}");
        assert_eq!((c["attempt"].clone(), c["max_attempts"].clone()), (json!(2), json!(2)), "{c}");
    }

    let asked = Instant::now();
    let m = api.execute("slow").await;
    assert_eq!(api.wait_terminal(&m, 30).await, "failed");
    assert!(asked.elapsed() < Duration::from_secs(10), "each attempt stopped at its timeout: {:?}", asked.elapsed());
    let (_, job) = api.get(&format!("/api/jobs/{m}")).await;
    let error = job["steps"][0]["error"].as_str().unwrap();
    assert_eq!(error, "timed out after 300ms (attempt 2 of 2)", "{job}");
}

#[tokio::test]
async fn a_waiting_retry_keeps_its_attempt_and_time_across_kill_9_and_a_cancel_ends_it() {
    let work = tempfile::tempdir().unwrap();
    let retry = r#"{ max_attempts = 3, initial = "3s", jitter = false }"#;
    let mut d = Daemon::builder()
        .definition("a.toml", &definition("second-time", &flaky(work.path(), "a", 2), retry, ""))
        .definition("b.toml", &definition("never", "exit 1", retry, ""))
        .start();
    let api = Api::new(&d);
    let m = api.execute("second-time").await;
    let step = format!("{m}-s1");
    let deadline = Instant::now() + Duration::from_secs(20);
    let waiting = loop {
        let (_, s) = api.get(&format!("/api/jobs/{step}")).await;
        if s.get("next_attempt_at").is_some() {
            break s;
        }
        assert!(Instant::now() < deadline, "never waited to retry: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(waiting["status"], "running", "waiting to retry is shown by next_attempt_at: {waiting}");
    assert_eq!(waiting["attempt"], 2);

    d.kill9();
    d.restart();
    let api = Api::new(&d);
    let (_, after) = api.get(&format!("/api/jobs/{step}")).await;
    assert_eq!(after["attempt"], 2, "{after}");
    if let Some(at) = after.get("next_attempt_at") {
        assert_eq!(at, &waiting["next_attempt_at"], "the same time, not a new wait");
    }
    assert_eq!(api.wait_terminal(&m, 30).await, "completed");
    let said = messages(&api.all_events(&step, 1000).await);
    assert_eq!(said.iter().filter(|l| *l == "try 2").count(), 1, "attempt 2 ran once: {said:?}");
    assert!(!said.iter().any(|l| l == "try 3"), "{said:?}");

    // Cancelled while it waits: no further attempt.
    let m = api.execute("never").await;
    let step = format!("{m}-s1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.get(&format!("/api/jobs/{step}")).await.1.get("next_attempt_at").is_none() {
        assert!(Instant::now() < deadline, "never waited to retry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, b) = api.post(&format!("/api/jobs/{m}/cancel"), json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(api.wait_terminal(&m, 10).await, "cancelled");
    let said = messages(&api.all_events(&step, 1000).await);
    assert!(!said.iter().any(|l| l == "attempt 2/3 started"), "{said:?}");
    let (_, s) = api.get(&format!("/api/jobs/{step}")).await;
    assert_eq!(s["status"], "cancelled", "{s}");
    assert!(s.get("next_attempt_at").is_none(), "a finished step waits for nothing: {s}");
}
