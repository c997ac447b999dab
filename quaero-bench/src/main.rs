//! `quaero-bench`: the benchmarks of BENCHMARKS.md, run against the real release `quaerod` over
//! HTTP and WebSocket. Prints a Markdown table and writes the same as JSON (`--out`).
//!
//! Layout:
//! - [`daemon`]: finds (builds) and starts `quaerod`; its CPU time, peak RSS, disk use.
//! - [`client`]: REST helper and WebSocket clients (idle, and dashboard-like readers).
//! - [`scenarios`]: the scenarios; each checks that its run completed correctly.
//! - [`report`]: metrics, medians, targets, the Markdown table and the JSON.
//!
//! Exit code: 0 when every scenario completed correctly (targets are reported, never
//! asserted), 1 when one did not, 2 on a usage error.

mod client;
mod daemon;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

use report::{Machine, Report, ScenarioReport};

#[derive(Debug, Parser)]
#[command(
    name = "quaero-bench",
    about = "Benchmarks quaerod (release build) over its real HTTP and WebSocket. Scenarios: watching, push, ingest, jobs, reads, trigger-latency, retries, schedules.",
    after_help = "Uses QUAERO_BIN if set; otherwise builds quaerod (cargo build --release -p quaerod) and runs the one next to this executable."
)]
struct Args {
    /// Tiny sizes and one round each: proves the harness works (CI); numbers mean little.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// Run only these scenarios (comma-separated names or numbers 1-8).
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Rounds per scenario instead of the defaults (9 for 1, 5 for 2, 3 for the rest; 1 with --quick).
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
}

fn selected(arg: Option<&str>) -> Result<Vec<&'static str>, String> {
    let Some(arg) = arg else { return Ok(scenarios::NAMES.to_vec()) };
    let mut out = Vec::new();
    for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let name = match part.parse::<usize>() {
            Ok(n) if (1..=scenarios::NAMES.len()).contains(&n) => scenarios::NAMES[n - 1],
            _ => *scenarios::NAMES
                .iter()
                .find(|s| **s == part)
                .ok_or_else(|| format!("unknown scenario {part:?}; expected one of {}", scenarios::NAMES.join(", ")))?,
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// Which quaerod this is: its version and the git commit of the workspace, marked when
/// quaerod/ had uncommitted changes.
fn describe_quaerod(bin: &std::path::Path) -> String {
    let version = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().trim().to_string())
        .unwrap_or_default();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown commit".into());
    let dirty = git(&["status", "--porcelain", "--", "quaerod", "shared"]).is_some_and(|s| !s.is_empty());
    format!("{version} ({commit}{})", if dirty { " + uncommitted changes in quaerod/ or shared/" } else { "" })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let names = match selected(args.scenario.as_deref()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("quaero-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let bin = match daemon::quaerod_bin() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("quaero-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let ctx = scenarios::Ctx { bin: bin.clone(), quick: args.quick, rounds: args.rounds };
    let started = Instant::now();
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let loadavg_before = report::loadavg();
    let mut reports = Vec::new();
    for name in names {
        eprintln!("== {name}");
        let t = Instant::now();
        let mut r = runtime.block_on(scenarios::run(name, &ctx)).unwrap_or_else(|e| {
            eprintln!("quaero-bench: scenario {name} FAILED: {e:#}");
            ScenarioReport {
                id: scenarios::NAMES.iter().position(|n| *n == name).map_or(0, |i| i as u32 + 1),
                name,
                title: name,
                setup: String::new(),
                metrics: Vec::new(),
                details: serde_json::Value::Null,
                error: Some(format!("{e:#}")),
            }
        });
        for m in &mut r.metrics {
            m.judge(args.quick);
        }
        eprintln!("   ({:.1} s)", t.elapsed().as_secs_f64());
        reports.push(r);
    }
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        quick: args.quick,
        started_at,
        total_seconds: started.elapsed().as_secs_f64(),
        machine: Machine::probe(),
        loadavg_before,
        loadavg_after: report::loadavg(),
        quaerod: describe_quaerod(&bin),
        scenarios: reports,
    };
    println!("{}", report.markdown());
    for s in &report.scenarios {
        if !s.setup.is_empty() {
            println!("{}. {}: {}", s.id, s.title, s.setup);
        }
    }
    println!(
        "\n{}; {} cores, {} MB; load average {} before, {} after; {:.0} s{}",
        report.quaerod,
        report.machine.nproc,
        report.machine.mem_total_mb,
        report.loadavg_before,
        report.loadavg_after,
        report.total_seconds,
        if report.quick { " (--quick: sizes too small to judge targets)" } else { "" }
    );
    if let Some(path) = &args.out {
        let written = serde_json::to_vec_pretty(&report)
            .context("serialise")
            .and_then(|j| std::fs::write(path, j).with_context(|| format!("write {}", path.display())));
        if let Err(e) = written {
            eprintln!("quaero-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    let failed: Vec<&str> = report.scenarios.iter().filter(|s| s.error.is_some()).map(|s| s.name).collect();
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("quaero-bench: FAILED: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
