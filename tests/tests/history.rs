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

    let (s, b) = api.get(&format!("/api/jobs/{step}/logs?before=5&after=2")).await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().starts_with("before:"), "{b}");
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
