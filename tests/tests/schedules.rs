//! End-to-end tests of schedules: runs started by a definition's cron schedule, what a
//! scheduled time does while a run is active (`overlap`), the times missed while the daemon
//! was killed (`catch_up`), `auto_start`, and the errors that name a bad schedule. The
//! schedules here fire every second (6 fields, seconds first), so the tests take seconds;
//! daylight saving, leap days and lateness are tested on tokio's paused clock in
//! `quaerod/src/engine/schedule.rs`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use quaero_tests::{Api, Daemon};
use serde_json::{Value, json};

fn scheduled(id: &str, extra: &str, run: &str) -> String {
    format!(
        "id = \"{id}\"\nschedule = \"* * * * * *\"\n{extra}\n[[steps]]\nname = \"work\"\ntype = \"command\"\n[steps.config]\nrun = \"{run}\"\n"
    )
}

async fn runs(api: &Api, def: &str) -> Vec<Value> {
    let (s, page) = api.get(&format!("/api/jobs?definition={def}&limit=1000")).await;
    assert_eq!(s, 200, "{page}");
    page["jobs"].as_array().unwrap().clone()
}

async fn definition(api: &Api, id: &str) -> Value {
    let (s, d) = api.get(&format!("/api/job-definitions/{id}")).await;
    assert_eq!(s, 200, "{d}");
    d
}

fn ms(rfc: &str) -> i64 {
    let t = humantime::parse_rfc3339(rfc).unwrap_or_else(|e| panic!("{rfc}: {e}"));
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Waits until `def` has at least `n` runs.
async fn until_runs(api: &Api, def: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = runs(api, def).await;
        if r.len() >= n {
            return r;
        }
        assert!(Instant::now() < deadline, "{def}: {} runs, waiting for {n}", r.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_schedule_starts_runs_on_time_and_is_listed_with_its_next_and_last_run() {
    let d = Daemon::builder().definition("tick.toml", &scheduled("tick", "tags = [\"often\"]", "true")).start();
    let api = Api::new(&d);
    let r = until_runs(&api, "tick", 3).await;
    for run in &r {
        assert_eq!(run["trigger"], "schedule", "{run}");
        let slot = run["schedule_time"].as_str().unwrap();
        assert!(slot.ends_with(":00.000Z") || ms(slot) % 1000 == 0, "a whole second: {slot}");
        let created = ms(run["created_at"].as_str().unwrap());
        assert!((0..1000).contains(&(created - ms(slot))), "created {created} for {slot}: late by more than a second");
        assert_eq!(run["tags"], json!(["often"]));
    }
    let slots: HashSet<&str> = r.iter().map(|j| j["schedule_time"].as_str().unwrap()).collect();
    assert_eq!(slots.len(), r.len(), "each time once");

    let info = definition(&api, "tick").await;
    assert_eq!(info["schedule"], "* * * * * *");
    assert_eq!(info["timezone"], "UTC");
    assert!(!info["schedule_text"].as_str().unwrap().is_empty(), "{info}");
    let next = ms(info["next_run_at"].as_str().unwrap());
    assert!(next > now_ms() - 100 && next <= now_ms() + 1100, "next run within a second: {info}");
    assert!(info["last_run"]["job_id"].as_str().unwrap().starts_with('m'), "{info}");

    // Disabled: no next run, and no run starts.
    let (s, off) = api.post("/api/job-definitions/tick/disable", json!({})).await;
    assert_eq!(s, 200, "{off}");
    assert!(off.get("next_run_at").is_none(), "{off}");
    let before = runs(&api, "tick").await.len();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(runs(&api, "tick").await.len(), before, "a disabled schedule starts nothing");
    // Enabled again: it counts from now; the times it was off for do not run.
    let (_, on) = api.post("/api/job-definitions/tick/enable", json!({})).await;
    assert!(on["next_run_at"].is_string(), "{on}");
    let after = until_runs(&api, "tick", before + 1).await;
    assert_eq!(after.len(), before + 1, "one run for the next time, none for the ones missed while disabled");
    assert_eq!(runs(&api, "tick").await.iter().filter(|j| j["trigger"] == "catch_up").count(), 0);

    let (_, q) = api.get("/api/jobs?tag=often&queue=default&limit=1").await;
    assert!(q["total_count"].as_u64().unwrap() >= 3, "{q}");
    let (_, none) = api.get("/api/jobs?tag=often&queue=batch").await;
    assert_eq!(none["total_count"], 0, "{none}");
}

#[tokio::test]
async fn overlap_skips_queues_or_allows_a_run_while_one_is_active() {
    let d = Daemon::builder()
        .definition("skip.toml", &scheduled("skipper", "", "sleep 2.2"))
        .definition("queue.toml", &scheduled("queuer", "overlap = \"queue\"", "sleep 1.5"))
        .definition("allow.toml", &scheduled("allower", "overlap = \"allow\"", "sleep 2.5"))
        .start();
    let api = Api::new(&d);
    let mut most_running = std::collections::HashMap::<&str, usize>::new();
    let mut queued_while_running = false;
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        for def in ["skipper", "queuer", "allower"] {
            let r = runs(&api, def).await;
            let running = r.iter().filter(|j| j["status"] == "running").count();
            let m = most_running.entry(def).or_default();
            *m = (*m).max(running);
            if def == "queuer" && running == 1 && r.iter().any(|j| j["status"] == "pending") {
                queued_while_running = true;
            }
            if def == "skipper" {
                assert!(r.iter().all(|j| j["status"] != "pending"), "skip makes no waiting run");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for def in ["skipper", "queuer", "allower"] {
        api.post(&format!("/api/job-definitions/{def}/disable"), json!({})).await;
    }
    assert_eq!(most_running["skipper"], 1, "skip: never two at once");
    let skipped = runs(&api, "skipper").await.len();
    assert!((2..=3).contains(&skipped), "skip: one run per 2.2 s over 5 s, not one a second: {skipped}");
    assert_eq!(most_running["queuer"], 1, "queue: one at a time");
    assert!(queued_while_running, "queue: a time that came while a run was active waited, pending");
    assert!(most_running["allower"] >= 2, "allow: runs side by side: {most_running:?}");

    // Queued runs start only after the one before them finished.
    let mut q = runs(&api, "queuer").await;
    q.sort_by_key(|j| ms(j["created_at"].as_str().unwrap()));
    let done: Vec<&Value> = q.iter().filter(|j| j["finished_at"].is_string()).collect();
    for w in done.windows(2) {
        let (a_end, b_start) = (ms(w[0]["finished_at"].as_str().unwrap()), ms(w[1]["started_at"].as_str().unwrap()));
        assert!(b_start >= a_end, "a queued run started before the one before it ended: {} {}", w[0], w[1]);
    }
}

#[tokio::test]
async fn after_kill_9_no_time_runs_twice_and_missed_times_run_as_catch_up_says() {
    let mut d = Daemon::builder()
        // allow: a run the kill interrupted is resumed at the restart, and with skip it
        // would (rightly) make the catch-up run skip.
        .definition("one.toml", &scheduled("catcher", "overlap = \"allow\"", "true"))
        .definition("none.toml", &scheduled("skipper", "catch_up = \"none\"", "true"))
        .start();
    let api = Api::new(&d);
    until_runs(&api, "catcher", 2).await;
    until_runs(&api, "skipper", 2).await;
    d.kill9();
    let killed = now_ms();
    std::thread::sleep(Duration::from_millis(2500));
    let restarted = now_ms();
    d.restart();
    let api = Api::new(&d);
    let n = runs(&api, "catcher").await.len();
    until_runs(&api, "catcher", n + 2).await;
    for def in ["catcher", "skipper"] {
        api.post(&format!("/api/job-definitions/{def}/disable"), json!({})).await;
    }

    for def in ["catcher", "skipper"] {
        let r = runs(&api, def).await;
        let mut slots: Vec<&str> = r.iter().map(|j| j["schedule_time"].as_str().unwrap()).collect();
        let n = slots.len();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), n, "{def}: a scheduled time ran twice: {r:?}");
    }
    let caught: Vec<Value> = runs(&api, "catcher").await.into_iter().filter(|j| j["trigger"] == "catch_up").collect();
    assert_eq!(caught.len(), 1, "one run for the times missed: {caught:?}");
    let slot = ms(caught[0]["schedule_time"].as_str().unwrap());
    assert!(
        slot >= killed - 1000 && slot <= restarted + 1500,
        "the latest missed time: {slot} ({killed}..{restarted})"
    );
    let skipped = runs(&api, "skipper").await;
    assert!(skipped.iter().all(|j| j["trigger"] == "schedule"), "catch_up = none: {skipped:?}");
    assert!(
        skipped.iter().any(|j| ms(j["schedule_time"].as_str().unwrap()) > restarted),
        "the schedule goes on after the restart"
    );
    // The gap itself: no run of `skipper` for the times while it was down.
    let in_gap = skipped
        .iter()
        .filter(|j| (killed + 1000..restarted).contains(&ms(j["schedule_time"].as_str().unwrap())))
        .count();
    assert_eq!(in_gap, 0, "{skipped:?}");
}

#[tokio::test]
async fn auto_start_runs_once_at_each_start() {
    let def = "id = \"boot\"\nauto_start = true\nparams = { who = \"daemon\" }\n[[steps]]\nname = \"hi\"\ntype = \"emit\"\n[steps.config]\nmessage = \"hello {params.who}\"\n";
    let mut d = Daemon::builder().definition("boot.toml", def).start();
    let api = Api::new(&d);
    let r = until_runs(&api, "boot", 1).await;
    assert_eq!(r[0]["trigger"], "auto_start");
    assert_eq!(r[0]["params"]["who"], "daemon");
    api.wait_terminal(r[0]["id"].as_str().unwrap(), 20).await;
    assert!(d.stop().success());
    d.restart();
    let api = Api::new(&d);
    let r = until_runs(&api, "boot", 2).await;
    assert_eq!(r.len(), 2, "one more at the second start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs(&api, "boot").await.len(), 2);
}

#[tokio::test]
async fn a_bad_schedule_is_an_error_naming_its_field() {
    let d = Daemon::builder()
        .definition("bad.toml", &scheduled("bad-cron", "", "true").replace("* * * * * *", "61 * * * *"))
        .definition("tz.toml", &scheduled("bad-tz", "timezone = \"Mars/Olympus\"", "true"))
        .start();
    let api = Api::new(&d);
    let bad = definition(&api, "bad-cron").await;
    assert_eq!(bad["valid"], false);
    assert!(bad["error"].as_str().unwrap().starts_with("schedule: \"61 * * * *\""), "{bad}");
    assert!(bad.get("next_run_at").is_none());
    let tz = definition(&api, "bad-tz").await;
    assert!(tz["error"].as_str().unwrap().starts_with("timezone: \"Mars/Olympus\""), "{tz}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(runs(&api, "bad-cron").await.is_empty(), "an invalid definition never runs");

    let base =
        json!({"id": "api-sched", "steps": [{"name": "s", "type": "emit", "config": {"message": "{params.host}"}}]});
    let with = |extra: Value| {
        let mut d = base.clone();
        d.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        d
    };
    for (extra, field) in [
        (json!({"schedule": "*/5 * *"}), "schedule: "),
        (json!({"schedule": "@daily", "timezone": "Nowhere/Land"}), "timezone: "),
        (
            json!({"schedule": "@hourly", "params": {"host": {"description": "no default"}}}),
            "params.host: needs a default",
        ),
        (json!({"schedule": "@hourly", "overlap": "sometimes"}), "overlap"),
        (json!({"schedule": "0 0 30 2 *"}), "schedule: "),
    ] {
        let (s, body) = api.post("/api/job-definitions", with(extra.clone())).await;
        assert_eq!(s, 400, "{extra}: {body}");
        assert!(body["error"].as_str().unwrap().contains(field), "{extra}: {body}");
    }
    let (s, ok) = api
        .post(
            "/api/job-definitions",
            with(json!({"schedule": "@daily", "timezone": "Europe/Berlin", "params": {"host": "h"}})),
        )
        .await;
    assert_eq!(s, 201, "{ok}");
    assert_eq!(ok["timezone"], "Europe/Berlin");
    let next = ok["next_run_at"].as_str().unwrap();
    // Midnight in Berlin is 22:00 or 23:00 UTC.
    assert!(next.contains("T22:00:00") || next.contains("T23:00:00"), "{ok}");
}

#[tokio::test]
async fn times_a_definition_was_disabled_for_never_run_also_after_kill_9() {
    let mut d = Daemon::builder().definition("tick.toml", &scheduled("tick", "", "true")).start();
    let api = Api::new(&d);
    until_runs(&api, "tick", 1).await;
    api.post("/api/job-definitions/tick/disable", json!({})).await;
    let disabled = now_ms();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (s, _) = api.post("/api/job-definitions/tick/enable", json!({})).await;
    assert_eq!(s, 200);
    let enabled = now_ms();
    d.kill9();
    std::thread::sleep(Duration::from_millis(300));
    d.restart();
    let api = Api::new(&d);
    let n = runs(&api, "tick").await.len();
    until_runs(&api, "tick", n + 1).await;
    api.post("/api/job-definitions/tick/disable", json!({})).await;
    let r = runs(&api, "tick").await;
    let in_gap: Vec<&Value> = r
        .iter()
        .filter(|j| (disabled + 1000..enabled - 100).contains(&ms(j["schedule_time"].as_str().unwrap())))
        .collect();
    assert!(in_gap.is_empty(), "a time while disabled ran: {in_gap:?}");
}

#[tokio::test]
async fn a_run_delayed_to_later_does_not_hold_back_the_schedule() {
    let d = Daemon::builder().definition("tick.toml", &scheduled("tick", "", "true")).start();
    let api = Api::new(&d);
    let (s, later) = api.post("/api/job-definitions/tick/execute", json!({"delay": "1h"})).await;
    assert_eq!(s, 202, "{later}");
    let later = later["job_id"].as_str().unwrap().to_string();
    // Schedule runs go on beside the pending one (overlap = skip counts it only from its time).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = runs(&api, "tick").await;
        if r.iter().filter(|j| j["trigger"] == "schedule" && j["status"] == "completed").count() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the schedule was held back by a run delayed an hour: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api.status(&later).await, "pending");
    api.post("/api/job-definitions/tick/disable", json!({})).await;
}

#[tokio::test]
async fn a_definition_shows_its_last_run_as_it_goes_and_after_a_restart() {
    let mut d = Daemon::builder()
        .definition("tick.toml", &scheduled("once", "", "sleep 0.3").replace("schedule = \"* * * * * *\"\n", ""))
        .start();
    let api = Api::new(&d);
    assert!(definition(&api, "once").await.get("last_run").is_none(), "no run yet");
    let m = api.execute("once").await;
    api.wait_status(&m, "running", 20).await;
    let info = definition(&api, "once").await;
    assert_eq!(
        (info["last_run"]["job_id"].as_str(), info["last_run"]["status"].as_str()),
        (Some(m.as_str()), Some("running"))
    );
    api.wait_terminal(&m, 20).await;
    let info = definition(&api, "once").await;
    assert_eq!(info["last_run"]["status"], "completed", "{info}");
    assert!(info["last_run"]["finished_at"].is_string(), "{info}");
    assert!(d.stop().success());
    d.restart();
    let api = Api::new(&d);
    assert_eq!(definition(&api, "once").await["last_run"]["job_id"], m.as_str(), "read back at the start");
    let (s, _) = api.delete(&format!("/api/jobs/{m}")).await;
    assert_eq!(s, 200);
    assert!(definition(&api, "once").await.get("last_run").is_none(), "a deleted run is not shown");
}
