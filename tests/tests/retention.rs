//! Bounded storage: `[storage] max_events_per_job`, `[storage] retention`, and a data
//! directory sled cannot read (reported, nothing deleted; `--recover` moves it aside).

use std::time::{Duration, Instant};

use quaero_tests::{Api, Daemon, bin_path, emit_definition};

#[tokio::test]
async fn a_job_keeps_at_most_max_events_and_says_how_many_were_dropped() {
    let d = Daemon::builder()
        .arg("--max-events-per-job")
        .arg("100")
        .definition("e.toml", &emit_definition("many", "count = 1000"))
        .definition("f.toml", &emit_definition("fan", "count = 300\nchildren = 3"))
        .start();
    let api = Api::new(&d);

    let m = api.execute("many").await;
    assert_eq!(api.wait_terminal(&m, 30).await, "completed");
    let step = format!("{m}-s1");
    let events = api.all_events(&step, 5000).await;
    assert!(events.len() <= 100, "{} events kept for {step}", events.len());
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs not increasing: {seqs:?}");
    let texts: Vec<&str> = events.iter().map(|e| e["message"].as_str().unwrap()).collect();
    // The newest events survive; the oldest are gone.
    assert!(texts.iter().any(|t| t.contains("event 1000 of 1000")), "{texts:?}");
    assert!(!texts.iter().any(|t| t.contains("event 1 of 1000")), "{texts:?}");
    // Each trim says how many it dropped; together they account for every missing event.
    let dropped: u64 = events
        .iter()
        .filter(|e| e["level"] == "warn")
        .filter_map(|e| e["message"].as_str()?.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(dropped > 0, "no drop marker in {texts:?}");
    let (_, b) = api.get(&format!("/api/jobs/{step}/logs?limit=5000")).await;
    let last_seq = b["last_seq"].as_u64().unwrap();
    assert_eq!(last_seq, *seqs.last().unwrap());

    // In a fan-out step each child job is bounded on its own: 300 events each, 100 kept.
    let m = api.execute("fan").await;
    assert_eq!(api.wait_terminal(&m, 30).await, "completed");
    for k in 1..=3 {
        let child = format!("{m}-s1-c{k}");
        let events = api.all_events(&child, 5000).await;
        assert!(!events.is_empty() && events.len() <= 100, "{child}: {} events", events.len());
        let texts: Vec<&str> = events.iter().map(|e| e["message"].as_str().unwrap()).collect();
        assert!(texts.iter().any(|t| t.contains("event 300 of 300")), "{child}: {texts:?}");
        assert!(texts.iter().any(|t| t.contains("older events of this job were dropped")), "{child}: {texts:?}");
    }
}

#[tokio::test]
async fn finished_managers_older_than_retention_are_deleted() {
    let d = Daemon::builder()
        .arg("--retention")
        .arg("2s")
        .definition("e.toml", &emit_definition("quick", "count = 5"))
        .definition("s.toml", &emit_definition("slow", "count = 1000\ninterval_ms = 20"))
        .start();
    let api = Api::new(&d);
    let done = api.execute("quick").await;
    assert_eq!(api.wait_terminal(&done, 10).await, "completed");
    let running = api.execute("slow").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, _) = api.get(&format!("/api/jobs/{done}")).await;
        if s == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "{done} still there 15 s after it finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its events went with it; the running manager (older than 2 s by now) stays.
    let (s, _) = api.get(&format!("/api/jobs/{done}-s1/logs")).await;
    assert_eq!(s, 404);
    assert_eq!(api.status(&running).await, "running");
    let (_, list) = api.get("/api/jobs").await;
    assert_eq!(list["total_count"], 1, "{list}");
}

/// Runs quaerod on `data`: returns (exit code, stdout, stderr). A daemon that starts is
/// stopped (SIGTERM) as soon as it has printed its start line.
fn run_quaerod(data: &std::path::Path, extra: &[&str]) -> (Option<i32>, String, String) {
    use std::io::{BufRead, Read};
    let mut child = std::process::Command::new(bin_path("quaerod"))
        .args(["--port", "0", "--definitions"])
        .arg(data.with_file_name("jobs"))
        .arg("--data")
        .arg(data)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    if child.try_wait().unwrap().is_none() {
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    stdout.read_to_string(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), first, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn a_damaged_data_directory_is_reported_and_kept_and_recover_moves_it_aside() {
    let mut d = Daemon::builder().definition("e.toml", &emit_definition("small", "count = 50")).start();
    let api = Api::new(&d);
    let m = api.execute("small").await;
    assert_eq!(api.wait_terminal(&m, 10).await, "completed");
    d.stop();
    let data = d.data_dir.clone();

    // Damage the sled file.
    let db = data.join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().step_by(3) {
        *b ^= 0xff;
    }
    std::fs::write(&db, &bytes).unwrap();
    let files_before: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();

    let (code, _, err) = run_quaerod(&data, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&*data.to_string_lossy()), "the message names the directory: {err}");
    assert!(err.contains("--recover"), "{err}");
    // Nothing was deleted.
    let files_after: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files_before, files_after);

    // --recover moves it aside (next to it, with a timestamp) and starts empty.
    let (code, std_out, err) = run_quaerod(&data, &["--recover"]);
    assert!(err.contains("moved it to"), "{err}");
    assert_eq!(code, Some(0), "{err}");
    assert!(std_out.contains("quaerod listening on"), "{std_out}");
    let parent = data.parent().unwrap();
    let aside: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.broken-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(parent.join(&aside[0]).join("db").exists());
    // The new directory opens normally from now on, with no jobs.
    d.restart();
    let api = Api::new(&d);
    let (_, list) = api.get("/api/jobs").await;
    assert_eq!(list["total_count"], 0, "{list}");
}

/// A data directory another daemon is using is not damaged: a second daemon on it is told
/// so (exit 2, no advice to `--recover`), and `--recover` does not move it aside.
#[tokio::test]
async fn a_data_directory_in_use_is_never_moved_aside() {
    let d = Daemon::builder().definition("e.toml", &emit_definition("small", "count = 50")).start();
    let api = Api::new(&d);
    let m = api.execute("small").await;
    assert_eq!(api.wait_terminal(&m, 10).await, "completed");
    let data = d.data_dir.clone();
    for args in [&[][..], &["--recover"][..]] {
        let (code, _, err) = run_quaerod(&data, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("in use by another process"), "{args:?}: {err}");
        assert!(!err.contains("--recover"), "{args:?}: {err}");
    }
    let parent = data.parent().unwrap();
    let aside: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".broken-"))
        .collect();
    assert!(aside.is_empty(), "{aside:?}");
    // The first daemon still has its job.
    assert_eq!(api.status(&m).await, "completed");
}
