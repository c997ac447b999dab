//! Test data: small managers, steps and events in the wire shapes.

use quaero_shared::{
    ChildCounts, Event, Job, JobKind, JobStatus, Level, LogsResponse, Order, Originator, StepSummary, StepType,
};
use ratatui::buffer::Buffer;

pub fn manager(n: u64, name: &str, status: JobStatus) -> Job {
    Job {
        id: format!("m{n}"),
        kind: JobKind::Manager,
        parent_id: None,
        manager_id: format!("m{n}"),
        definition_id: "nightly".into(),
        name: name.into(),
        status,
        created_at: "2026-11-28T13:00:00.000Z".into(),
        started_at: Some("2026-11-28T13:00:00.100Z".into()),
        finished_at: None,
        duration_ms: Some(65_000),
        error: None,
        child_counts: ChildCounts::default(),
        steps: None,
        params: Default::default(),
        scheduled_at: None,
        tags: Vec::new(),
        attempt: None,
        max_attempts: None,
        next_attempt_at: None,
        trigger: None,
        schedule_time: None,
        queue: None,
    }
}

pub fn step(m: u64, i: u32, name: &str, status: JobStatus, children: (u64, u64)) -> StepSummary {
    StepSummary {
        id: format!("m{m}-s{i}"),
        index: i,
        name: name.into(),
        step_type: StepType::Emit,
        description: String::new(),
        status,
        child_counts: ChildCounts { total: children.1, completed: children.0, ..Default::default() },
        started_at: None,
        finished_at: None,
        error: None,
        attempt: None,
        max_attempts: None,
        next_attempt_at: None,
    }
}

/// Manager `m1` "Nightly build": build completed, test running (3/8 children), deploy pending.
pub fn nightly_detail() -> Job {
    let mut m = manager(1, "Nightly build", JobStatus::Running);
    m.steps = Some(vec![
        step(1, 1, "build", JobStatus::Completed, (0, 0)),
        step(1, 2, "test", JobStatus::Running, (3, 8)),
        step(1, 3, "deploy", JobStatus::Pending, (0, 0)),
    ]);
    m
}

pub fn event(seq: u64, step_id: &str, level: Level, message: &str) -> Event {
    Event {
        seq,
        job_id: step_id.into(),
        step_id: Some(step_id.into()),
        manager_id: "m1".into(),
        step_name: Some("test".into()),
        level,
        message: message.into(),
        originator: Originator::Step,
        timestamp: format!("13:04:{:02}.123", seq % 60),
        full_timestamp: format!("2026-11-28T13:04:{:02}.123Z", seq % 60),
    }
}

pub fn logs(step_id: &str, logs: Vec<Event>) -> LogsResponse {
    LogsResponse {
        job_id: step_id.into(),
        count: logs.len() as u64,
        last_seq: logs.last().map_or(0, |e| e.seq),
        logs,
        limit: 100,
        order: Order::Asc,
        level: "all".into(),
    }
}

/// The buffer as lines of text, for snapshots and `contains` checks.
pub fn screen(buf: &Buffer) -> String {
    let w = buf.area.width as usize;
    buf.content()
        .chunks(w)
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>().trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
