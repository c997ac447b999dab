//! Stored events dressed for the wire, serialised straight from the stored records.
//!
//! A logs page is the one response every watching client asks for on every trigger, so it
//! is written without building the shared [`quaero_shared::Event`] for each record (three
//! id `String`s, two timestamp `String`s and copies of the name and message): ids and
//! timestamps are formatted into stack buffers and everything else is borrowed. The bytes
//! are exactly those of serialising `LogsResponse` (tested below against that oracle).

use quaero_shared::{JobPath, Level, Order, Originator};
use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

use crate::store::{ManagerRecord, RawEvent};
use crate::time::Stamp;

/// JSON as serde_json writes it, except that DEL and the C1 controls (U+007F–U+009F, where
/// U+009B is the 8-bit CSI some terminals obey) are `\u` escapes too, like C0 controls: a
/// response printed raw to a terminal (`curl`) carries no control character of any kind.
pub struct ControlEscaping;

impl serde_json::ser::Formatter for ControlEscaping {
    fn write_string_fragment<W: ?Sized + std::io::Write>(&mut self, w: &mut W, fragment: &str) -> std::io::Result<()> {
        // U+0080–U+009F are 0xC2 0x80–0x9F in UTF-8: most fragments have neither byte.
        if !fragment.bytes().any(|b| b == 0x7f || b == 0xc2) {
            return w.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if ('\u{7f}'..='\u{9f}').contains(&c) {
                w.write_all(&fragment.as_bytes()[start..i])?;
                write!(w, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// `value` as JSON bytes, with [`ControlEscaping`].
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, ControlEscaping);
    value.serialize(&mut ser).expect("serialising to memory cannot fail");
    out
}

/// A job id (`m12-s3-c40`) formatted on the stack.
struct Id {
    buf: [u8; 48],
    len: usize,
}

impl Id {
    fn new(p: JobPath) -> Id {
        let mut id = Id { buf: [0; 48], len: 0 };
        id.push(b"m", p.manager);
        if p.step > 0 {
            id.push(b"-s", p.step.into());
        }
        if p.child > 0 {
            id.push(b"-c", p.child.into());
        }
        id
    }

    /// Appends `tag` and the decimal digits of `n` (at most 2 + 20 bytes; three fit).
    fn push(&mut self, tag: &[u8], mut n: u64) {
        self.buf[self.len..self.len + tag.len()].copy_from_slice(tag);
        self.len += tag.len();
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let digits = &tmp[i..];
        self.buf[self.len..self.len + digits.len()].copy_from_slice(digits);
        self.len += digits.len();
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("ascii")
    }
}

/// One event with the field order and names of [`quaero_shared::Event`].
#[derive(Serialize)]
struct WireEvent<'a> {
    seq: u64,
    job_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_id: Option<&'a str>,
    manager_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_name: Option<&'a str>,
    level: Level,
    message: &'a str,
    originator: Originator,
    timestamp: &'a str,
    full_timestamp: &'a str,
}

/// The events of one manager's page, serialised as a JSON array of events.
struct Events<'a> {
    m: &'a ManagerRecord,
    raw: &'a [RawEvent],
}

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.m;
        let mgr = Id::new(JobPath::manager(m.num));
        let mut seq = s.serialize_seq(Some(self.raw.len()))?;
        for r in self.raw {
            let step = (r.step > 0).then(|| JobPath::step(m.num, r.step));
            let step_id = step.map(Id::new);
            let child_id = (r.child > 0).then(|| Id::new(JobPath::child(m.num, r.step, r.child)));
            let job_id = child_id.as_ref().or(step_id.as_ref()).unwrap_or(&mgr);
            let stamp = Stamp::new(r.ts_ms);
            seq.serialize_element(&WireEvent {
                seq: r.seq,
                job_id: job_id.as_str(),
                step_id: step_id.as_ref().map(Id::as_str),
                manager_id: mgr.as_str(),
                step_name: step.and_then(|_| m.steps.get(r.step as usize - 1)).map(|st| st.name.as_str()),
                level: r.level,
                message: &r.message,
                originator: r.originator,
                timestamp: stamp.clock(),
                full_timestamp: stamp.rfc3339(),
            })?;
        }
        seq.end()
    }
}

/// `GET /api/jobs/<id>/logs`: the fields and order of [`quaero_shared::LogsResponse`].
#[derive(Serialize)]
pub struct LogsBody<'a> {
    pub job_id: &'a str,
    logs: Events<'a>,
    pub count: u64,
    pub limit: u64,
    pub order: Order,
    pub level: &'a str,
    pub last_seq: u64,
}

impl<'a> LogsBody<'a> {
    pub fn new(
        job_id: &'a str,
        m: &'a ManagerRecord,
        raw: &'a [RawEvent],
        limit: u64,
        order: Order,
        level: &'a str,
        last_seq: u64,
    ) -> Self {
        LogsBody { job_id, logs: Events { m, raw }, count: raw.len() as u64, limit, order, level, last_seq }
    }
}

/// One event as a line of text: time, level, job, originator, message. Control characters
/// of the message (from a job: untrusted) are written as escapes, never raw.
pub fn text_line(out: &mut String, manager: u64, e: &RawEvent) {
    use std::fmt::Write as _;
    let job = JobPath { manager, step: e.step, child: e.child };
    let _ = write!(out, "{} {:<5} {job} {}: ", crate::time::rfc3339(e.ts_ms), e.level.as_str(), e.originator.as_str());
    for c in e.message.chars() {
        match c {
            '\t' => out.push(c),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{clock, rfc3339};
    use quaero_shared::{Event, JobDefinition, JobStatus, LogsResponse, StepType};

    /// The straightforward construction through the shared types: the oracle.
    fn oracle(m: &ManagerRecord, raw: &[RawEvent]) -> Vec<Event> {
        raw.iter()
            .map(|r| {
                let step = (r.step > 0).then(|| JobPath::step(m.num, r.step));
                let job = if r.child > 0 { JobPath::child(m.num, r.step, r.child) } else { step.unwrap_or(m_path(m)) };
                Event {
                    seq: r.seq,
                    job_id: job.to_string(),
                    step_id: step.map(|s| s.to_string()),
                    manager_id: m_path(m).to_string(),
                    step_name: step.and_then(|_| m.steps.get(r.step as usize - 1).map(|s| s.name.clone())),
                    level: r.level,
                    message: r.message.clone(),
                    originator: r.originator,
                    timestamp: clock(r.ts_ms),
                    full_timestamp: rfc3339(r.ts_ms),
                }
            })
            .collect()
    }

    fn m_path(m: &ManagerRecord) -> JobPath {
        JobPath::manager(m.num)
    }

    fn manager(num: u64, steps: &[&str]) -> ManagerRecord {
        let def: JobDefinition = serde_json::from_value(serde_json::json!({
            "id": "d", "name": "d", "steps": [{"name": "s", "type": "emit"}]
        }))
        .expect("definition");
        ManagerRecord {
            num,
            definition_id: "d".into(),
            name: "d".into(),
            status: JobStatus::Running,
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
            error: None,
            steps: steps
                .iter()
                .map(|n| crate::store::StepRecord {
                    name: n.to_string(),
                    step_type: StepType::Emit,
                    description: String::new(),
                    status: JobStatus::Running,
                    child_counts: Default::default(),
                    started_ms: None,
                    finished_ms: None,
                    error: None,
                    attempt: 0,
                    next_attempt_ms: None,
                })
                .collect(),
            definition: def,
            params: Default::default(),
            scheduled_ms: None,
            trigger: None,
            schedule_ms: None,
        }
    }

    #[test]
    fn page_bytes_equal_the_shared_types() {
        let m = manager(u64::MAX, &["build \"it\"", "ünïcode <b>"]);
        let raw = vec![
            RawEvent {
                seq: 1,
                ts_ms: 0,
                level: Level::Info,
                originator: Originator::Manager,
                step: 0,
                child: 0,
                message: "start".into(),
            },
            RawEvent {
                seq: 20,
                ts_ms: 1_795_871_045_123,
                level: Level::Warn,
                originator: Originator::Step,
                step: 1,
                child: 0,
                message: "a \"quoted\"\n\u{1b}[31mline".into(),
            },
            RawEvent {
                seq: u64::MAX,
                ts_ms: -3,
                level: Level::Error,
                originator: Originator::Worker,
                step: 2,
                child: u32::MAX,
                message: String::new(),
            },
            // A step index past the record's steps has no name (as with the oracle).
            RawEvent {
                seq: 7,
                ts_ms: 5,
                level: Level::Debug,
                originator: Originator::Worker,
                step: 9,
                child: 1,
                message: "x".into(),
            },
        ];
        for (order, level) in [(Order::Asc, "all"), (Order::Desc, "warn")] {
            let body = LogsBody::new("m1-s2", &m, &raw, 100, order, level, 42);
            let expected = LogsResponse {
                job_id: "m1-s2".into(),
                logs: oracle(&m, &raw),
                count: raw.len() as u64,
                limit: 100,
                order,
                level: level.into(),
                last_seq: 42,
            };
            assert_eq!(
                serde_json::to_string(&body).expect("serialises"),
                serde_json::to_string(&expected).expect("serialises")
            );
        }
    }

    #[test]
    fn c1_controls_and_del_are_escaped_and_the_text_kept() {
        let text = "csi \u{9b}2J del \u{7f} nel \u{85} é \u{a0} esc \u{1b} end";
        let json = String::from_utf8(to_json(&serde_json::json!({ "m": text }))).unwrap();
        assert!(!json.chars().any(|c| c.is_control()), "{json:?}");
        assert!(json.contains("\\u009b") && json.contains("\\u007f") && json.contains('é'), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["m"], text);
        // Without such characters the bytes are serde_json's own.
        let plain = serde_json::json!({ "m": "plain é \" \n" });
        assert_eq!(to_json(&plain), serde_json::to_vec(&plain).unwrap());
    }

    #[test]
    fn ids_match_job_path_display() {
        for p in [
            JobPath::manager(0),
            JobPath::manager(7),
            JobPath::step(12, 3),
            JobPath::child(u64::MAX, u32::MAX, u32::MAX),
            JobPath::child(100, 10, 1000),
        ] {
            assert_eq!(Id::new(p).as_str(), p.to_string());
        }
    }
}
