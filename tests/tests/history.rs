//! End-to-end tests of a job's log history: older pages with `before`, and the whole log
//! as text.

use quaero_tests::{Api, Daemon};
use serde_json::Value;

/// 2,500 lines, one of them with a terminal escape in it.
const LONG: &str = r#"
id = "long"
[[steps]]
name = "print"
type = "command"
[steps.config]
run = "for i in $(seq 1 2500); do if [ $i = 1200 ]; then printf 'red \\033[31malert\\n'; else echo line $i; fi; done"
"#;

#[tokio::test]
async fn older_pages_by_before_and_the_whole_log_as_text() {
    let d = Daemon::builder().definition("long.toml", LONG).start();
    let api = Api::new(&d);
    let m = api.execute("long").await;
    assert_eq!(api.wait_terminal(&m, 60).await, "completed");
    let step = format!("{m}-s1");
    let all = api.all_events(&step, 1000).await;
    assert!(all.len() >= 2500, "{} events", all.len());

    // Newest first, then older pages until the first event: every event once, in order.
    let (s, newest) = api.get(&format!("/api/jobs/{step}/logs?limit=300")).await;
    assert_eq!(s, 200);
    let mut back: Vec<Value> = newest["logs"].as_array().unwrap().clone();
    loop {
        let oldest = back.last().unwrap()["seq"].as_u64().unwrap();
        let (s, page) = api.get(&format!("/api/jobs/{step}/logs?limit=300&before={oldest}")).await;
        assert_eq!(s, 200, "{page}");
        assert_eq!(page["last_seq"], newest["last_seq"], "last_seq is the scope's, not the page's");
        let events = page["logs"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        assert!(events.len() <= 300);
        assert!(events[0]["seq"].as_u64().unwrap() < oldest, "each page is older than the last");
        back.extend(events.iter().cloned());
    }
    back.reverse();
    assert_eq!(back, all, "paging back with before gives the follower's events");

    // `order=asc` gives the same page oldest first.
    let mid = all[1000]["seq"].as_u64().unwrap();
    let (_, asc) = api.get(&format!("/api/jobs/{step}/logs?limit=10&before={mid}&order=asc")).await;
    assert_eq!(asc["logs"].as_array().unwrap()[..], all[990..1000]);

    // Both: the events between, oldest first.
    let (lo, hi) = (all[100]["seq"].as_u64().unwrap(), all[110]["seq"].as_u64().unwrap());
    let (s, range) = api.get(&format!("/api/jobs/{step}/logs?after={lo}&before={hi}&limit=1000")).await;
    assert_eq!(s, 200);
    assert_eq!(range["logs"].as_array().unwrap()[..], all[101..110]);
    let (s, b) = api.get(&format!("/api/jobs/{step}/logs?format=csv")).await;
    assert_eq!((s, b["error"].as_str().unwrap().starts_with("format:")), (400, true), "{b}");

    // The whole log as text: one line per event, oldest first, escapes shown, never raw.
    let r = api.http().get(format!("{}/api/jobs/{m}/logs?format=text", d.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let text = r.text().await.unwrap();
    let manager_events = api.all_events(&m, 1000).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), manager_events.len(), "one line per event of the manager's scope");
    let line = lines.iter().find(|l| l.contains("line 2500")).expect("line 2500");
    assert!(line.ends_with(&format!(" info  {step} step: line 2500")), "{line}");
    assert!(text.contains("red \\u{1b}[31malert"), "the escape is written out");
    assert!(!text.contains('\u{1b}'), "no raw escape in the text");
    let first = &manager_events[0];
    assert!(lines[0].ends_with(first["message"].as_str().unwrap()), "{} vs {first}", lines[0]);
}

/// `DELETE /api/jobs?status=failed` deletes every failed run (and only those), answering
/// at once with how many; a filter that names a running status or a bad time is a 400.
#[tokio::test]
async fn bulk_delete_by_status_and_finish_time() {
    let fails = "id = \"fails\"\n[[steps]]\nname = \"x\"\ntype = \"command\"\n[steps.config]\nrun = \"exit 3\"\n";
    let d = Daemon::builder()
        .definition("fails.toml", fails)
        .definition("ok.toml", &quaero_tests::emit_definition("ok", "count = 3"))
        .start();
    let api = Api::new(&d);
    let mut runs = Vec::new();
    for i in 0..9 {
        runs.push(api.execute(if i % 3 == 0 { "ok" } else { "fails" }).await);
    }
    for m in &runs {
        api.wait_terminal(m, 30).await;
    }
    let (_, before) = api.get("/api/jobs/stats").await;

    let (s, b) = api.delete("/api/jobs?status=failed&finished_before=2000-01-01T00:00:00Z").await;
    assert_eq!((s, b["count"].clone()), (202, serde_json::json!(0)), "nothing finished in 2000: {b}");
    let (s, b) = api.delete("/api/jobs?status=running").await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().starts_with("status:"), "{b}");
    let (s, b) = api.delete("/api/jobs?finished_before=yesterday").await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().starts_with("finished_before:"), "{b}");

    let (s, b) = api.delete("/api/jobs?status=failed&finished_before=2100-01-01T00:00:00Z").await;
    assert_eq!((s, b["count"].clone()), (202, serde_json::json!(6)), "{b}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, failed) = api.get("/api/jobs?status=failed").await;
        if failed["total_count"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "failed runs still listed: {failed}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, left) = api.get("/api/jobs").await;
    assert_eq!(left["total_count"], 3, "the completed runs stay: {left}");
    for m in runs.iter().step_by(3) {
        assert_eq!(api.get(&format!("/api/jobs/{m}")).await.0, 200);
    }
    let (_, after) = api.get("/api/jobs/stats").await;
    assert_eq!(after["failed_jobs"], 0, "{after}");
    assert_eq!(after["completed_jobs"], before["completed_jobs"], "{after}");
    let (s, _) = api.get(&format!("/api/jobs/{}/logs", runs[1])).await;
    assert_eq!(s, 404, "a deleted run's events are gone with it");
}
