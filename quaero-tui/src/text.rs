//! Formatting shared by the tail and the dashboard.

use quaero_shared::{Event, Level, sanitize_terminal};

/// `HH:MM:SS.mmm` from an event's `full_timestamp` (RFC 3339, UTC), falling back to its
/// short `timestamp` when the full one has an unexpected shape.
pub fn event_time(e: &Event) -> String {
    e.full_timestamp
        .split_once('T')
        .map(|(_, t)| t.trim_end_matches('Z'))
        .filter(|t| t.len() >= 12)
        .map(|t| t[..12].to_string())
        .unwrap_or_else(|| sanitize_terminal(&e.timestamp))
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
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let time = time.trim_end_matches('Z');
    let time = time.split(['+']).next()?;
    let mut t = time.splitn(3, ':');
    let hh: i64 = t.next()?.parse().ok()?;
    let mm: i64 = t.next()?.parse().ok()?;
    let sec = t.next()?;
    let (ss, frac) = sec.split_once('.').unwrap_or((sec, "0"));
    let ss: i64 = ss.parse().ok()?;
    let frac3: String = frac.chars().chain("000".chars()).take(3).collect();
    let ms: i64 = frac3.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
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

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(12_000), "12s");
        assert_eq!(human_duration(184_000), "3m04s");
        assert_eq!(human_duration(7_500_000), "2h05m");
    }
}
