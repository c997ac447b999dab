//! Wall-clock helpers: the store keeps milliseconds since the Unix epoch; the wire wants
//! RFC 3339 with milliseconds and `HH:MM:SS.mmm`, both UTC.
//!
//! Every event on a logs page carries both forms, so they are formatted into stack buffers
//! ([`Stamp`]) rather than through `fmt` and a `String` each.

use std::time::{SystemTime, UNIX_EPOCH};

/// The last millisecond RFC 3339's four-digit year can show (9999-12-31T23:59:59.999Z).
const MAX_MS: i64 = 253_402_300_799_999;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A timestamp formatted both ways, UTC; out-of-range values are clamped to
/// 1970-01-01 … 9999-12-31.
pub struct Stamp {
    /// `2026-11-28T13:04:05.123Z`; its bytes 11..23 are the `13:04:05.123` clock form.
    buf: [u8; 24],
}

impl Stamp {
    pub fn new(ms: i64) -> Stamp {
        let ms = ms.clamp(0, MAX_MS);
        let (days, day_ms) = (ms / 86_400_000, ms % 86_400_000);
        let (y, mo, d) = civil_from_days(days);
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        digits(&mut buf[0..4], y);
        digits(&mut buf[5..7], mo);
        digits(&mut buf[8..10], d);
        digits(&mut buf[11..13], day_ms / 3_600_000);
        digits(&mut buf[14..16], day_ms / 60_000 % 60);
        digits(&mut buf[17..19], day_ms / 1000 % 60);
        digits(&mut buf[20..23], day_ms % 1000);
        Stamp { buf }
    }

    /// `2026-11-28T13:04:05.123Z`
    pub fn rfc3339(&self) -> &str {
        std::str::from_utf8(&self.buf).expect("ascii")
    }

    /// `13:04:05.123`
    pub fn clock(&self) -> &str {
        &self.rfc3339()[11..23]
    }
}

/// Writes `n` as decimal digits filling `out`, zero-padded.
fn digits(out: &mut [u8], mut n: i64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// (year, month, day) of a day count since 1970-01-01 (days ≥ 0), by Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2026-11-28T13:04:05.123Z`
pub fn rfc3339(ms: i64) -> String {
    Stamp::new(ms).rfc3339().to_string()
}

/// `13:04:05.123`
pub fn clock(ms: i64) -> String {
    Stamp::new(ms).clock().to_string()
}

/// Milliseconds since the epoch of an RFC 3339 time: `2026-12-01T08:00:00Z`, with a
/// fraction of a second or an offset (`+01:00`) if wanted; `None` if it is not one.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    // humantime reads the UTC form; an offset is taken off here and applied after.
    let (local, offset_min) = if let Some(rest) = s.strip_suffix(['Z', 'z']) {
        (rest, 0)
    } else {
        let cut = s.len().checked_sub(6)?;
        let (local, off) = (s.get(..cut)?, s.get(cut..)?);
        let b = off.as_bytes();
        let sign = match b[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        if b[3] != b':' {
            return None;
        }
        let h: i64 = off.get(1..3)?.parse().ok()?;
        let m: i64 = off.get(4..6)?.parse().ok()?;
        if h > 23 || m > 59 {
            return None;
        }
        (local, sign * (h * 60 + m))
    };
    if local.len() < 19 || !local.is_char_boundary(10) || !matches!(local.as_bytes()[10], b'T' | b't') {
        return None;
    }
    let utc = humantime::parse_rfc3339(&format!("{}T{}Z", &local[..10], &local[11..])).ok()?;
    let ms = utc.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64;
    Some(ms - offset_min * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_times_with_offsets_parse() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:01.5+01:00"), Some(1500));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00-01:00"), Some(3_600_000));
        assert_eq!(parse_rfc3339_ms(&rfc3339(1_796_000_000_123)), Some(1_796_000_000_123));
        for bad in [
            "",
            "tomorrow",
            "2026-12-01",
            "2026-12-01T08:00:00",
            "2026-12-01T08:00:00+1:00",
            "2026-13-01T08:00:00Z",
            "2026-12-01T08:00:00+24:00",
            "é026-12-01T08:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_agree() {
        let ms = 1_795_871_045_123; // 2026-11-28T13:04:05.123Z
        assert_eq!(rfc3339(ms), "2026-11-28T13:04:05.123Z");
        assert_eq!(clock(ms), "13:04:05.123");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
        // Leap days, century rules.
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    proptest! {
        /// The hand-written formatter agrees with humantime's over the whole range.
        #[test]
        fn agrees_with_humantime(ms in 0..=MAX_MS) {
            let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
            let expected = humantime::format_rfc3339_millis(t).to_string();
            let s = Stamp::new(ms);
            prop_assert_eq!(s.rfc3339(), expected.as_str());
            prop_assert_eq!(s.clock(), &expected[11..23]);
        }
    }
}
