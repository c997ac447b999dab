//! Scenario 3: durable ingest. Events/s from the first emitted event to the step's
//! `finished` trigger (sent only after every event is flushed), the daemon's peak RSS and
//! bytes on disk; and, alternating with it, two ceilings for the same event bytes run in
//! this process: plain sled (one key per event, batches of 1000, flushed per batch) and a
//! plain file append (fdatasync every 1000 records).

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{Ctx, check_children_events, fan_out_definition, first_worker_event, mb, secs_between, wait_finished};
use crate::client::{Finished, Watcher};
use crate::daemon::{Daemon, dir_bytes};
use crate::report::{Metric, ScenarioReport, Target};

/// Records per durable batch in both ceilings.
const BATCH: usize = 1000;

#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Shape {
    pub children: u64,
    pub per_child: u64,
}

impl Shape {
    pub fn events(&self) -> u64 {
        self.children * self.per_child
    }
}

#[derive(Debug, Clone, Serialize)]
struct DaemonRun {
    events_per_s: f64,
    /// From the execute request instead of the first event (includes creating the jobs).
    events_per_s_wall: f64,
    seconds: f64,
    peak_rss_mb: f64,
    disk_mb: f64,
    disk_apparent_mb: f64,
    cpu_s: f64,
    events_in_scope: u64,
}

#[derive(Debug, Clone, Serialize)]
struct CeilingRun {
    events_per_s: f64,
    seconds: f64,
    disk_mb: f64,
}

/// The bytes quaerod stores per event (`store/block.rs`): `u32 len`, `u64 seq`,
/// `i64 ts_ms`, `u8 level`, `u8 originator`, `u32 child`, message.
fn encode(buf: &mut Vec<u8>, seq: u64, ts_ms: i64, child: u32, message: &str) {
    buf.extend_from_slice(&((22 + message.len()) as u32).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&ts_ms.to_le_bytes());
    buf.push(1); // info
    buf.push(2); // worker
    buf.extend_from_slice(&child.to_le_bytes());
    buf.extend_from_slice(message.as_bytes());
}

/// The same events the daemon's children emit, in batches of [`BATCH`] records.
fn for_each_batch(shape: Shape, mut f: impl FnMut(&[(u64, Vec<u8>)]) -> Result<()>) -> Result<()> {
    let ts = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
    let mut batch = Vec::with_capacity(BATCH);
    let mut seq = 0u64;
    for child in 1..=shape.children {
        for i in 1..=shape.per_child {
            seq += 1;
            let mut rec = Vec::with_capacity(64);
            encode(&mut rec, seq, ts, child as u32, &format!("child {child}: event {i} of {}", shape.per_child));
            batch.push((seq, rec));
            if batch.len() == BATCH {
                f(&batch)?;
                batch.clear();
            }
        }
    }
    if !batch.is_empty() {
        f(&batch)?;
    }
    Ok(())
}

fn sled_ceiling(shape: Shape) -> Result<CeilingRun> {
    let dir = tempfile::Builder::new().prefix("quaero-bench-sled-").tempdir()?;
    // The daemon's settings (store/mod.rs): 64 MiB cache, no background flusher.
    let db = sled::Config::new().path(dir.path()).cache_capacity(64 * 1024 * 1024).flush_every_ms(None).open()?;
    let tree = db.open_tree("events")?;
    let t0 = Instant::now();
    for_each_batch(shape, |recs| {
        let mut b = sled::Batch::default();
        for (seq, rec) in recs {
            b.insert(&seq.to_be_bytes()[..], &rec[..]);
        }
        tree.apply_batch(b)?;
        db.flush()?;
        Ok(())
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    if tree.len() as u64 != shape.events() {
        bail!("sled ceiling: {} keys stored, expected {}", tree.len(), shape.events());
    }
    drop(tree);
    drop(db);
    Ok(CeilingRun { events_per_s: shape.events() as f64 / seconds, seconds, disk_mb: mb(dir_bytes(dir.path()).0) })
}

fn file_ceiling(shape: Shape) -> Result<CeilingRun> {
    let dir = tempfile::Builder::new().prefix("quaero-bench-file-").tempdir()?;
    let path = dir.path().join("events.log");
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, file);
    let mut expected = 0u64;
    let t0 = Instant::now();
    for_each_batch(shape, |recs| {
        for (_, rec) in recs {
            w.write_all(rec)?;
            expected += rec.len() as u64;
        }
        w.flush()?;
        w.get_ref().sync_data()?;
        Ok(())
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    let len = std::fs::metadata(&path)?.len();
    if len != expected {
        bail!("file ceiling: {len} bytes written, expected {expected}");
    }
    Ok(CeilingRun { events_per_s: shape.events() as f64 / seconds, seconds, disk_mb: mb(dir_bytes(dir.path()).0) })
}

/// Executes the fan-out definition on a fresh daemon and waits for the step's finished
/// trigger; the daemon is returned running, with the step's id, for further use.
pub(super) async fn ingest_into(daemon: &Daemon, shape: Shape) -> Result<(String, f64, f64, f64)> {
    let api = crate::client::api(daemon)?;
    api.put_definition(&fan_out_definition("ingest", shape.children, shape.per_child)).await?;
    let (ftx, mut frx) = mpsc::unbounded_channel::<Finished>();
    let watcher = Watcher::start(&daemon.ws_url(), None, Some(ftx)).await?;
    let cpu0 = daemon.cpu_seconds()?;
    let t_exec = SystemTime::now();
    let mgr = api.execute("ingest").await?.job_id;
    let step = format!("{mgr}-s1");
    let t_end = wait_finished(&mut frx, &step, Duration::from_secs(1800)).await?;
    let cpu_s = daemon.cpu_seconds()? - cpu0;
    watcher.stop().await?;
    let job = api.wait_terminal(&mgr, Duration::from_millis(20), Duration::from_secs(60)).await?;
    if job.status != quaero_shared::JobStatus::Completed {
        bail!("{mgr} ended {} ({:?})", job.status, job.error);
    }
    let t_first = first_worker_event(&api, &step).await?;
    Ok((step, secs_between(t_first, t_end), secs_between(t_exec, t_end), cpu_s))
}

async fn daemon_run(ctx: &Ctx, shape: Shape) -> Result<DaemonRun> {
    let daemon = crate::daemon::start(&ctx.bin, &[])?;
    let res = async {
        let (step, seconds, wall, cpu_s) = ingest_into(&daemon, shape).await?;
        let peak = daemon.peak_rss()?;
        let (disk, apparent) = daemon.disk_bytes();
        let api = crate::client::api(&daemon)?;
        let events_in_scope = check_children_events(&api, &step, shape.children, shape.per_child).await?;
        let n = shape.events() as f64;
        Ok::<_, anyhow::Error>(DaemonRun {
            events_per_s: n / seconds,
            events_per_s_wall: n / wall,
            seconds,
            peak_rss_mb: mb(peak),
            disk_mb: mb(disk),
            disk_apparent_mb: mb(apparent),
            cpu_s,
            events_in_scope,
        })
    }
    .await;
    let stopped = crate::daemon::stop(daemon);
    let run = res?;
    stopped?;
    Ok(run)
}

pub async fn run(ctx: &Ctx) -> Result<ScenarioReport> {
    let shape =
        if ctx.quick { Shape { children: 10, per_child: 2_000 } } else { Shape { children: 100, per_child: 10_000 } };
    let rounds = ctx.rounds(3);
    let (mut q, mut s, mut f) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let d = daemon_run(ctx, shape).await?;
        eprintln!(
            "  round {round}/{rounds} quaerod        {:>9.0} events/s, peak RSS {:.0} MB",
            d.events_per_s, d.peak_rss_mb
        );
        q.push(d);
        let c = tokio::task::spawn_blocking(move || sled_ceiling(shape)).await.context("sled ceiling")??;
        eprintln!("  round {round}/{rounds} sled ceiling   {:>9.0} events/s", c.events_per_s);
        s.push(c);
        let c = tokio::task::spawn_blocking(move || file_ceiling(shape)).await.context("file ceiling")??;
        eprintln!("  round {round}/{rounds} file ceiling   {:>9.0} events/s", c.events_per_s);
        f.push(c);
    }
    let pct = |c: &[CeilingRun]| q.iter().zip(c).map(|(q, c)| q.events_per_s / c.events_per_s * 100.0).collect();
    let metrics = vec![
        Metric::rounds(
            "quaerod: first emit → committed",
            "events/s",
            q.iter().map(|r| r.events_per_s).collect(),
            Target::at_least(200_000.0, "≥ 200,000"),
        ),
        Metric::rounds(
            "ceiling: plain sled, 1 key/event",
            "events/s",
            s.iter().map(|r| r.events_per_s).collect(),
            None,
        ),
        Metric::rounds(
            "ceiling: file append + fdatasync",
            "events/s",
            f.iter().map(|r| r.events_per_s).collect(),
            None,
        ),
        Metric::rounds("quaerod as % of sled ceiling", "%", pct(&s), None),
        Metric::rounds("quaerod as % of file ceiling", "%", pct(&f), None),
        Metric::rounds(
            "quaerod peak RSS",
            "MB",
            q.iter().map(|r| r.peak_rss_mb).collect(),
            Target::at_most(200.0, "≤ 200 MB"),
        ),
        Metric::rounds("quaerod bytes on disk", "MB", q.iter().map(|r| r.disk_mb).collect(), None),
        Metric::rounds("plain sled bytes on disk", "MB", s.iter().map(|r| r.disk_mb).collect(), None),
        Metric::rounds("plain file bytes on disk", "MB", f.iter().map(|r| r.disk_mb).collect(), None),
        Metric::rounds("quaerod server CPU", "s", q.iter().map(|r| r.cpu_s).collect(), None),
    ];
    Ok(ScenarioReport {
        id: 3,
        name: "ingest",
        title: "Durable ingest",
        setup: format!(
            "{} events: one emit step, {} children × {} events (default config, 16 workers); the ceilings write the same records (quaerod's packed layout: length, 22-byte header, message) in the bench process, durable per {BATCH}; {rounds} rounds alternating quaerod, sled, file",
            shape.events(),
            shape.children,
            shape.per_child,
        ),
        metrics,
        details: json!({ "shape": shape, "quaerod": q, "sled": s, "file": f }),
        error: None,
    })
}
