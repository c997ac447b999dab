//! Formatting shared by the tail and the dashboard.

use quaero_shared::{Event, Level, sanitize_terminal};

/// `HH:MM:SS.mmm` from an event's `full_timestamp` (RFC 3339, UTC), falling back to its
/// short `timestamp` when the full one has an unexpected shape.
pub fn event_time(e: &Event) -> String {
    e.full_timestamp
        .split_once('T')
        .map(|(_, t)| t.trim_end_matches('Z'))
        .and_then(|t| t.get(..12))
        .filter(|t| is_clock_time(t))
        .map(str::to_string)
        .unwrap_or_else(|| sanitize_terminal(&e.timestamp))
}

/// `HH:MM:SS.mmm`, all digits where digits belong.
fn is_clock_time(t: &str) -> bool {
    t.bytes().zip(*b"00:00:00.000").all(|(c, shape)| if shape == b'0' { c.is_ascii_digit() } else { c == shape })
}

/// `[step/originator]`, or `[originator]` for manager-level events.
pub fn event_source(e: &Event) -> String {
    match &e.step_name {
        Some(step) => format!("[{}/{}]", sanitize_terminal(step), e.originator.as_str()),
        None => format!("[{}]", e.originator.as_str()),
    }
}

pub fn level_label(l: Level) -> &'static str {
    match l {
        Level::Debug => "DEBUG",
        Level::Info => "INFO ",
        Level::Warn => "WARN ",
        Level::Error => "ERROR",
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time (`2026-11-28T13:04:05.123Z`).
/// `None` for anything else: ages are cosmetic and must not fail on odd input.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).ok(),
        Err(before) => i64::try_from(before.duration().as_millis()).ok().map(|ms| -ms),
    }
}

/// Compact human duration: `850ms`, `12s`, `3m04s`, `2h05m`, `3d04h`.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_times() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.500Z"), Some(1500));
        assert_eq!(parse_rfc3339_ms("2000-03-01T00:00:00Z"), Some(951_868_800_000));
        assert_eq!(parse_rfc3339_ms("garbage"), None);
    }

    fn event(full_timestamp: &str, timestamp: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "seq": 1, "job_id": "m1-s1", "manager_id": "m1", "step_id": "m1-s1", "step_name": "build",
            "level": "info", "message": "x", "originator": "worker",
            "timestamp": timestamp, "full_timestamp": full_timestamp,
        }))
        .unwrap()
    }

    /// Server text is hostile: a timestamp with a multibyte character where the
    /// milliseconds end used to be sliced mid-character and panic the TUI and the tail.
    #[test]
    fn odd_timestamps_never_panic() {
        assert_eq!(event_time(&event("2026-11-28T13:04:05.123Z", "x")), "13:04:05.123");
        for odd in [
            "2026-11-28T13:04:05.12é",
            "2026-11-28T13:04:0€.1234",
            "T",
            "",
            "TTTTTTTTTTTTTT",
            "2026-11-28T日本語日本語",
        ] {
            let shown = event_time(&event(odd, "12:00:00.000"));
            assert_eq!(shown, "12:00:00.000", "{odd:?} falls back to the short timestamp");
        }
        let shown = event_time(&event("garbage", "\u{1b}[2J12:00"));
        assert!(!shown.contains('\u{1b}'), "the fallback is sanitised: {shown:?}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(12_000), "12s");
        assert_eq!(human_duration(184_000), "3m04s");
        assert_eq!(human_duration(7_500_000), "2h05m");
    }
}
