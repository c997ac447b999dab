//! Wall-clock helpers: the store keeps milliseconds since the Unix epoch; the wire wants
//! RFC 3339 with milliseconds and `HH:MM:SS.mmm`, both UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `2026-11-28T13:04:05.123Z`
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// `13:04:05.123`
pub fn clock(ms: i64) -> String {
    let ms = ms.max(0);
    let day_ms = ms % 86_400_000;
    format!("{:02}:{:02}:{:02}.{:03}", day_ms / 3_600_000, day_ms / 60_000 % 60, day_ms / 1000 % 60, day_ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_agree() {
        let ms = 1_795_871_045_123; // 2026-11-28T13:04:05.123Z
        assert_eq!(rfc3339(ms), "2026-11-28T13:04:05.123Z");
        assert_eq!(clock(ms), "13:04:05.123");
    }
}
