//! End-to-end tests of how a run is asked for: parameters substituted into its steps, a
//! start delayed to a time (kept across a restart, cancellable while it waits), and the
//! errors that name what is wrong.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quaero_tests::{Api, Daemon, bin_path, emit_definition};
use serde_json::{Value, json};

/// A command step that prints its parameters; `target` has no default.
const DEPLOY: &str = r#"
id = "deploy"
params = { env = "staging", target = { description = "host to deploy to" } }
[[steps]]
name = "push"
type = "command"
[steps.config]
run = "echo deploying env={params.env} target={params.target}"
"#;

fn messages(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["message"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn params_reach_the_steps_are_shown_and_kept_by_a_rerun() {
    let d = Daemon::builder().definition("deploy.toml", DEPLOY).start();
    let api = Api::new(&d);

    let (s, def) = api.get("/api/job-definitions/deploy").await;
    assert_eq!(s, 200);
    assert_eq!(def["valid"], true, "a parameter without a default does not make it invalid: {def}");
    assert_eq!(def["params"]["env"], "staging");
    assert_eq!(def["params"]["target"]["description"], "host to deploy to");

    let (s, b) = api.post("/api/job-definitions/deploy/execute", json!({"params": {"target": "db1"}})).await;
    assert_eq!(s, 202, "{b}");
    let m = b["job_id"].as_str().unwrap().to_string();
    assert_eq!(api.wait_terminal(&m, 30).await, "completed");
    let said = messages(&api.all_events(&m, 1000).await);
    assert!(said.iter().any(|l| l == "deploying env=staging target=db1"), "{said:?}");
    let (_, job) = api.get(&format!("/api/jobs/{m}")).await;
    assert_eq!(job["params"], json!({"env": "staging", "target": "db1"}));

    // A rerun repeats the run as it was asked for.
    let (s, b) = api.post(&format!("/api/jobs/{m}/rerun"), json!({})).await;
    assert_eq!(s, 201, "{b}");
    let again = b["new_job_id"].as_str().unwrap().to_string();
    assert_eq!(api.wait_terminal(&again, 30).await, "completed");
    let (_, job) = api.get(&format!("/api/jobs/{again}")).await;
    assert_eq!(job["params"], json!({"env": "staging", "target": "db1"}));
    let said = messages(&api.all_events(&again, 1000).await);
    assert!(said.iter().any(|l| l == "deploying env=staging target=db1"), "{said:?}");

    // Numbers and booleans are values too, substituted as text.
    let (s, b) = api.post("/api/job-definitions/deploy/execute", json!({"params": {"target": 7, "env": true}})).await;
    assert_eq!(s, 202, "{b}");
    let m = b["job_id"].as_str().unwrap().to_string();
    assert_eq!(api.wait_terminal(&m, 30).await, "completed");
    assert!(messages(&api.all_events(&m, 1000).await).contains(&"deploying env=true target=7".to_string()));
}

#[tokio::test]
async fn a_bad_request_to_run_is_a_400_naming_what_is_wrong_and_starts_nothing() {
    let d = Daemon::builder().definition("deploy.toml", DEPLOY).start();
    let api = Api::new(&d);
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "params.target: required"),
        (json!({"params": {"target": "a", "tagret": "b"}}), "params.tagret: no such parameter"),
        (json!({"params": {"target": {"host": "a"}}}), "params.target: must be text, a number or true/false"),
        (json!({"params": {"target": "a"}, "delay": "soon"}), "delay: \"soon\" is not a duration"),
        (json!({"params": {"target": "a"}, "run_at": "tomorrow"}), "run_at: \"tomorrow\" is not an RFC 3339 time"),
        (json!({"params": {"target": "a"}, "delay": "1m", "run_at": "2030-01-01T00:00:00Z"}), "run_at, delay"),
        (json!({"params": {"target": "a"}, "delay": "400d"}), "delay:"),
        (json!({"params": {"target": "a"}, "when": "now"}), "unknown field `when`"),
        (json!({"params": ["target"]}), "params:"),
    ];
    for (body, says) in cases {
        let (s, b) = api.post("/api/job-definitions/deploy/execute", body.clone()).await;
        assert_eq!(s, 400, "{body} → {b}");
        let error = b["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{body}: expected {says:?} in {error:?}");
    }
    let (_, stats) = api.get("/api/jobs/stats").await;
    assert_eq!(stats["total_jobs"], 0, "nothing was started: {stats}");

    // A definition that does not take parameters says so.
    let (s, b) = api
        .post(
            "/api/job-definitions",
            json!({"id": "plain", "steps": [{"name": "e", "type": "emit", "config": {"count": 1}}]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api.post("/api/job-definitions/plain/execute", json!({"params": {"x": "1"}})).await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().contains("takes no parameters"), "{b}");

    // Trailing bytes after the JSON object are not ignored.
    let r = api
        .http()
        .post(d.url("/api/job-definitions/deploy/execute"))
        .header("content-type", "application/json")
        .body(r#"{"params": {"target": "a"}} and more"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // A required parameter can stand for a whole URL: the definition is listed valid, and
    // each run's value is checked when it runs.
    let fetch = json!({"id": "fetch", "params": {"url": {"description": "what to fetch"}},
        "steps": [{"name": "get", "type": "http_fetch", "config": {"urls": ["{params.url}"]}}]});
    let (s, b) = api.post("/api/job-definitions", fetch).await;
    assert_eq!((s, b["valid"].clone()), (201, json!(true)), "{b}");
    let (s, b) = api.post("/api/job-definitions/fetch/execute", json!({"params": {"url": "ftp://x"}})).await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().starts_with("steps[0].config.urls[0]:"), "{b}");
    let health = d.url("/api/health");
    let (s, b) = api.post("/api/job-definitions/fetch/execute", json!({"params": {"url": health}})).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(api.wait_terminal(b["job_id"].as_str().unwrap(), 30).await, "completed");

    // A placeholder that names no parameter makes the definition invalid, naming where.
    let bad = json!({"id": "typo", "params": {"env": "a"},
        "steps": [{"name": "c", "type": "command", "config": {"argv": ["echo", "{params.evn}"]}}]});
    let (s, b) = api.post("/api/job-definitions", bad).await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().starts_with("steps[0].config.argv[1]: {params.evn}"), "{b}");
}

#[tokio::test]
async fn a_delayed_run_waits_pending_keeps_its_time_across_a_restart_and_can_be_cancelled() {
    let mut d = Daemon::builder().definition("quick.toml", &emit_definition("quick", "count = 3")).start();
    let api = Api::new(&d);

    let asked = Instant::now();
    let (s, b) = api.post("/api/job-definitions/quick/execute", json!({"delay": "3s"})).await;
    assert_eq!(s, 202, "{b}");
    let m = b["job_id"].as_str().unwrap().to_string();
    let (_, job) = api.get(&format!("/api/jobs/{m}")).await;
    assert_eq!(job["status"], "pending");
    let scheduled = job["scheduled_at"].as_str().expect("scheduled_at").to_string();
    let said = messages(&api.all_events(&m, 100).await);
    assert!(said.iter().any(|l| l.starts_with(&format!("scheduled: starts at {scheduled}"))), "{said:?}");

    // A crash while it waits: it still waits for the same time, then runs once.
    d.kill9();
    d.restart();
    // A new client: the old one's pooled connections went with the killed process.
    let api = Api::new(&d);
    let (_, job) = api.get(&format!("/api/jobs/{m}")).await;
    if asked.elapsed() < Duration::from_millis(2500) {
        assert_eq!(job["status"], "pending", "{job}");
    }
    assert_eq!(job["scheduled_at"], scheduled.as_str());
    assert_eq!(api.wait_terminal(&m, 30).await, "completed");
    assert!(asked.elapsed() >= Duration::from_millis(2900), "started before its time: {:?}", asked.elapsed());
    let (_, job) = api.get(&format!("/api/jobs/{m}")).await;
    assert!(job["started_at"].as_str().unwrap() >= scheduled.as_str(), "{job}");
    let said = messages(&api.all_events(&m, 100).await);
    assert_eq!(said.iter().filter(|l| l.starts_with("job started")).count(), 1, "{said:?}");

    // Cancelled while it waits: it never starts.
    let (s, b) = api.post("/api/job-definitions/quick/execute", json!({"delay": "1h"})).await;
    assert_eq!(s, 202, "{b}");
    let later = b["job_id"].as_str().unwrap().to_string();
    let (s, b) = api.post(&format!("/api/jobs/{later}/cancel"), json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(api.wait_terminal(&later, 10).await, "cancelled");
    let (_, job) = api.get(&format!("/api/jobs/{later}")).await;
    assert!(job["started_at"].is_null(), "{job}");
    assert_eq!(job["steps"][0]["status"], "cancelled");
    let said = messages(&api.all_events(&later, 100).await);
    assert!(said.contains(&"job cancelled before it started".to_string()), "{said:?}");
    assert!(!said.iter().any(|l| l.starts_with("job started")), "{said:?}");

    // A time already past starts at once.
    let (s, b) = api.post("/api/job-definitions/quick/execute", json!({"run_at": "2020-01-01T00:00:00+01:00"})).await;
    assert_eq!(s, 202, "{b}");
    let past = b["job_id"].as_str().unwrap().to_string();
    assert_eq!(api.wait_terminal(&past, 10).await, "completed");
    assert!(api.get(&format!("/api/jobs/{past}")).await.1.get("scheduled_at").is_none());
}

#[test]
fn the_tail_runs_a_definition_with_params() {
    let d = Daemon::builder().definition("deploy.toml", DEPLOY).start();
    let out = Command::new(bin_path("quaero-tui"))
        .args(["--server", &d.base, "--run", "deploy", "--param", "target=db 2", "--param", "env=prod"])
        .args(["--timestamps", "off"])
        .stdin(Stdio::null())
        .output()
        .expect("run the tail");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("deploying env=prod target=db 2"), "{stdout}");

    let out = Command::new(bin_path("quaero-tui"))
        .args(["--server", &d.base, "--run", "deploy"])
        .stdin(Stdio::null())
        .output()
        .expect("run the tail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a missing parameter is a usage error: {stderr}");
    assert!(stderr.contains("params.target: required"), "{stderr}");
}

#[tokio::test]
async fn a_disabled_definition_is_refused_until_enabled_also_across_a_restart_and_runs_are_found_by_tag() {
    let tagged = |id: &str, tags: &str, extra: &str| {
        format!(
            "id = \"{id}\"\ntags = {tags}\n{extra}\n[[steps]]\nname = \"e\"\ntype = \"emit\"\n[steps.config]\ncount = 2\n"
        )
    };
    let mut d = Daemon::builder()
        .definition("nightly.toml", &tagged("nightly", r#"["nightly", "db"]"#, ""))
        .definition("web.toml", &tagged("web", r#"["web"]"#, ""))
        .definition("off.toml", &tagged("off", "[]", "enabled = false"))
        .start();
    let api = Api::new(&d);

    let (_, defs) = api.get("/api/job-definitions").await;
    let find = |id: &str| defs["job_definitions"].as_array().unwrap().iter().find(|d| d["id"] == id).cloned().unwrap();
    assert_eq!(
        (find("nightly")["enabled"].clone(), find("nightly")["tags"].clone()),
        (json!(true), json!(["nightly", "db"]))
    );
    assert_eq!(find("off")["enabled"], false);

    let (s, b) = api.post("/api/job-definitions/off/execute", json!({})).await;
    assert_eq!(s, 409, "{b}");
    assert!(b["error"].as_str().unwrap().contains("disabled"), "{b}");

    let (s, b) = api.post("/api/job-definitions/nightly/disable", json!({})).await;
    assert_eq!((s, b["enabled"].clone()), (200, json!(false)), "{b}");
    assert_eq!(api.post("/api/job-definitions/nightly/execute", json!({})).await.0, 409);
    assert_eq!(api.post("/api/job-definitions/nope/disable", json!({})).await.0, 404);

    // Kept across a restart, both ways: nightly stays disabled, and enabling off sticks.
    let (s, _) = api.post("/api/job-definitions/off/enable", json!({})).await;
    assert_eq!(s, 200);
    assert!(d.stop().success());
    d.restart();
    let api = Api::new(&d);
    assert_eq!(api.get("/api/job-definitions/nightly").await.1["enabled"], false);
    assert_eq!(api.get("/api/job-definitions/off").await.1["enabled"], true);
    assert_eq!(api.post("/api/job-definitions/nightly/execute", json!({})).await.0, 409);
    let (s, b) = api.post("/api/job-definitions/nightly/enable", json!({})).await;
    assert_eq!((s, b["enabled"].clone()), (200, json!(true)));

    let n1 = api.execute("nightly").await;
    let w1 = api.execute("web").await;
    let n2 = api.execute("nightly").await;
    for m in [&n1, &w1, &n2] {
        assert_eq!(api.wait_terminal(m, 30).await, "completed");
    }
    let ids = |v: &Value| {
        v["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let (_, by_tag) = api.get("/api/jobs?tag=db").await;
    assert_eq!(ids(&by_tag), [n2.clone(), n1.clone()], "newest first: {by_tag}");
    assert_eq!(by_tag["total_count"], 2);
    assert_eq!(by_tag["jobs"][0]["tags"], json!(["nightly", "db"]));
    let (_, by_def) = api.get("/api/jobs?definition=web&status=completed").await;
    assert_eq!(ids(&by_def), vec![w1]);
    let (_, none) = api.get("/api/jobs?tag=db&status=failed").await;
    assert_eq!((none["total_count"].clone(), ids(&none).len()), (json!(0), 0));
    let (_, steps) = api.get(&format!("/api/jobs?parent_id={n1}&tag=db")).await;
    assert_eq!(steps["total_count"], 1, "a run's steps carry its tags: {steps}");

    // A definition deleted and made again starts from its own `enabled`, not the old switch.
    let api_def = json!({"id": "made", "steps": [{"name": "e", "type": "emit", "config": {"count": 1}}]});
    assert_eq!(api.post("/api/job-definitions", api_def.clone()).await.0, 201);
    assert_eq!(api.post("/api/job-definitions/made/disable", json!({})).await.0, 200);
    assert_eq!(api.delete("/api/job-definitions/made").await.0, 200);
    let (s, b) = api.post("/api/job-definitions", api_def).await;
    assert_eq!((s, b["enabled"].clone()), (201, json!(true)), "{b}");
    assert_eq!(api.post("/api/job-definitions/made/execute", json!({})).await.0, 202);
}

/// Paging by cursor gives every manager once, newest first, with an exact total; `q` finds
/// runs by a part of their name or definition id; both hold after a restart (the index and
/// its counts are stored).
#[tokio::test]
async fn managers_page_by_cursor_and_are_found_by_name() {
    let d = Daemon::builder()
        .definition(
            "nightly.toml",
            &emit_definition("nightly-build", "count = 1")
                .replace("name = \"nightly-build\"", "name = \"Nightly Build\""),
        )
        .definition("web.toml", &emit_definition("web", "count = 1"))
        .start();
    let mut d = d;
    let api = Api::new(&d);
    let mut started = Vec::new();
    for i in 0..7 {
        started.push(api.execute(if i % 3 == 0 { "web" } else { "nightly-build" }).await);
    }
    for m in &started {
        assert_eq!(api.wait_terminal(m, 30).await, "completed");
    }
    let ids = |v: &Value| {
        v["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let newest_first: Vec<String> = started.iter().rev().cloned().collect();
    for round in 0..2 {
        if round == 1 {
            assert!(d.stop().success());
            d.restart();
        }
        let api = Api::new(&d);
        let (mut paged, mut cursor) = (Vec::new(), String::new());
        loop {
            let (s, page) = api.get(&format!("/api/jobs?limit=3&cursor={cursor}")).await;
            assert_eq!(s, 200, "{page}");
            assert_eq!(page["total_count"], 7, "the total is of every match, on every page: {page}");
            paged.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.to_string(),
                None => break,
            }
        }
        assert_eq!(paged, newest_first);

        let (_, found) = api.get("/api/jobs?q=NIGHTLY%20b").await;
        let nightly: Vec<String> =
            newest_first.iter().filter(|m| !started[..].iter().step_by(3).any(|w| w == *m)).cloned().collect();
        assert_eq!(ids(&found), nightly, "by name, ignoring case: {found}");
        assert_eq!(found["total_count"], 4);
        let (_, by_id) = api.get("/api/jobs?q=eb&status=completed").await;
        assert_eq!(by_id["total_count"], 3, "by definition id: {by_id}");
        let (_, none) = api.get("/api/jobs?q=nothing-like-it").await;
        assert_eq!((none["total_count"].clone(), ids(&none).len()), (json!(0), 0));
        let (_, stats) = api.get("/api/jobs/stats").await;
        assert_eq!(stats["completed_jobs"], 14, "7 managers and their 7 steps: {stats}");
    }
    let (s, b) = Api::new(&d).get("/api/jobs?cursor=m12").await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().starts_with("cursor:"), "{b}");
}
