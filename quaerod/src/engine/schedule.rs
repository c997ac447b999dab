//! Schedules: a definition's `schedule` (cron, in its `timezone`) starts runs by itself.
//!
//! One task ([`Scheduler::run`]) sleeps on tokio's clock until the earliest scheduled time
//! of any definition, then hands every definition that is due to the engine in one batch.
//! The wall time it compares with comes from a [`Clock`]: the system's, or in tests a
//! virtual one that moves with tokio's paused clock.
//!
//! The last scheduled time acted on is kept per definition (by the engine, as a store
//! setting, and in each run's record), and the next one is always searched for after it,
//! so a time is never acted on twice, even when the wall clock steps back. Several times
//! that became due at once (the daemon was stopped, or the machine slept) make one run,
//! for the latest of them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use quaero_shared::{CatchUp, Trigger};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A parsed `schedule` with its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
}

impl Schedule {
    /// Parses a definition's `schedule` and `timezone`; the error names the field.
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<Schedule, String> {
        let tz = match timezone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| {
                format!("timezone: {name:?} is not an IANA time zone name (like \"Europe/Berlin\" or \"UTC\")")
            })?,
        };
        let fields = expr.split_whitespace().count();
        if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "schedule: {expr:?} has {fields} fields; cron takes 5 (minute hour day month weekday) or 6 (seconds first)"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("schedule: {expr:?} is not a cron schedule: {e}"))?;
        let s = Schedule { cron, tz };
        // A pattern that can never match (the 30th of February) is refused now rather than
        // never firing.
        if s.next_after(crate::time::now_ms()).is_none() {
            return Err(format!("schedule: {expr:?} never comes"));
        }
        Ok(s)
    }

    fn zoned(&self, ms: i64) -> Option<jiff::Zoned> {
        Some(Timestamp::from_millisecond(ms).ok()?.to_zoned(self.tz.clone()))
    }

    /// The first scheduled time strictly after `ms` (ms since the epoch).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let from = self.zoned(ms)?;
        let next = self.cron.find_next_occurrence(&from, false).ok()?;
        Some(next.timestamp().as_millisecond())
    }

    /// The last scheduled time at or before `ms`.
    pub fn latest_until(&self, ms: i64) -> Option<i64> {
        let from = self.zoned(ms)?;
        let prev = self.cron.find_previous_occurrence(&from, true).ok()?;
        Some(prev.timestamp().as_millisecond())
    }

    /// The schedule in words (`At 02:30`, `Every 5 minutes`, …).
    pub fn describe(&self) -> String {
        self.cron.describe()
    }
}

/// Where the scheduler reads the wall time.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    /// Starts at `wall_ms` and moves with tokio's clock (paused in tests).
    Virtual {
        wall_ms: i64,
        at: tokio::time::Instant,
    },
}

impl Clock {
    pub fn virtual_at(wall_ms: i64) -> Clock {
        Clock::Virtual { wall_ms, at: tokio::time::Instant::now() }
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => crate::time::now_ms(),
            Clock::Virtual { wall_ms, at } => wall_ms + at.elapsed().as_millis() as i64,
        }
    }
}

/// What the scheduler decided for one definition at one scheduled time.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub id: String,
    /// The scheduled time (ms since the epoch).
    pub slot_ms: i64,
    /// `Schedule` or `CatchUp`; `None`: the time passes without a run (`catch_up = "none"`).
    pub trigger: Option<Trigger>,
    /// How long after the scheduled time it was handed over.
    pub late_ms: i64,
}

struct Entry {
    schedule: Arc<Schedule>,
    /// The last scheduled time acted on.
    last_ms: Option<i64>,
    next_ms: Option<i64>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// The last time acted on of definitions taken out (disabled, deleted), so that one
    /// put back never goes before it, even when the wall clock stepped back meanwhile.
    parked: HashMap<String, i64>,
    /// (next time, id) of every entry, earliest first.
    order: BTreeSet<(i64, String)>,
}

impl State {
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let e = self.entries.remove(id)?;
        if let Some(n) = e.next_ms {
            self.order.remove(&(n, id.to_string()));
        }
        Some(e)
    }

    fn insert(&mut self, id: String, e: Entry) {
        if let Some(n) = e.next_ms {
            self.order.insert((n, id.clone()));
        }
        self.entries.insert(id, e);
    }
}

pub struct Scheduler {
    clock: Clock,
    state: Mutex<State>,
    changed: Notify,
}

/// The longest the loop sleeps before it looks at the wall clock again, so that a clock
/// set forward is noticed within it.
const MAX_SLEEP: Duration = Duration::from_secs(1);

impl Scheduler {
    pub fn new(clock: Clock) -> Arc<Scheduler> {
        Arc::new(Scheduler { clock, state: Mutex::new(State::default()), changed: Notify::new() })
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Schedules `id` (or stops scheduling it, with `None`). Its next time is the first
    /// after now and after `last_ms`, the last time acted on (kept if `None` and `id` was
    /// scheduled already). No time before now runs: see [`Self::catch_up`] for those.
    pub fn set(&self, id: &str, schedule: Option<Arc<Schedule>>, last_ms: Option<i64>) {
        let now = self.now_ms();
        let mut st = self.state.lock().expect("scheduler");
        let old = st.remove(id).and_then(|o| o.last_ms).max(st.parked.remove(id));
        match schedule {
            None => {
                if let Some(last) = old.max(last_ms) {
                    st.parked.insert(id.to_string(), last);
                }
            }
            Some(schedule) => {
                let last_ms = last_ms.max(old);
                let next_ms = schedule.next_after(now.max(last_ms.unwrap_or(i64::MIN)));
                st.insert(id.to_string(), Entry { schedule, last_ms, next_ms });
            }
        }
        drop(st);
        self.changed.notify_one();
    }

    /// At the daemon's start, for a definition last acted on at `last_ms`: the latest
    /// scheduled time missed since, as `catch_up` says to treat it. `None` when nothing was
    /// missed, or the definition never ran on its schedule (it starts counting now).
    pub fn catch_up(&self, id: &str, schedule: &Schedule, last_ms: Option<i64>, catch_up: CatchUp) -> Option<Due> {
        let now = self.now_ms();
        let missed = schedule.latest_until(now)?;
        if missed <= last_ms? {
            return None;
        }
        let trigger = match catch_up {
            CatchUp::One => Some(Trigger::CatchUp),
            CatchUp::None => None,
        };
        Some(Due { id: id.to_string(), slot_ms: missed, trigger, late_ms: now - missed })
    }

    /// When `id` fires next.
    pub fn next_run(&self, id: &str) -> Option<i64> {
        self.state.lock().expect("scheduler").entries.get(id).and_then(|e| e.next_ms)
    }

    /// Takes every entry that is due: one [`Due`] each, for the latest of its times that
    /// passed; its next time is the first after now.
    fn take_due(&self) -> Vec<Due> {
        let now = self.now_ms();
        let mut st = self.state.lock().expect("scheduler");
        let mut out = Vec::new();
        while let Some((at, id)) = st.order.first().cloned() {
            if at > now {
                break;
            }
            let mut e = st.remove(&id).expect("ordered entry");
            let slot = e.schedule.latest_until(now).filter(|s| *s >= at).unwrap_or(at);
            e.last_ms = Some(slot);
            e.next_ms = e.schedule.next_after(now.max(slot));
            out.push(Due { id: id.clone(), slot_ms: slot, trigger: Some(Trigger::Schedule), late_ms: now - slot });
            st.insert(id, e);
        }
        out
    }

    fn sleep_for(&self) -> Duration {
        let now = self.now_ms();
        let st = self.state.lock().expect("scheduler");
        match st.order.first() {
            Some((at, _)) => Duration::from_millis((at - now).max(0) as u64).min(MAX_SLEEP),
            None => MAX_SLEEP,
        }
    }

    /// Hands what is due to `fire`, until `stop`.
    pub async fn run<F, Fut>(self: Arc<Self>, stop: CancellationToken, mut fire: F)
    where
        F: FnMut(Vec<Due>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        loop {
            let due = self.take_due();
            if !due.is_empty() {
                fire(due).await;
                continue;
            }
            let changed = self.changed.notified();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = changed => {}
                _ = tokio::time::sleep(self.sleep_for()) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc: &str) -> i64 {
        rfc.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn at(ms: i64) -> String {
        Timestamp::from_millisecond(ms).unwrap().to_string()
    }

    /// Runs a scheduler with `(id, schedule, timezone)` from `start` for `span` of paused
    /// time; returns what fired, as (id, scheduled time, lateness ms).
    async fn fires(start: &str, defs: &[(&str, &str, Option<&str>)], span: Duration) -> Vec<(String, String, i64)> {
        let s = Scheduler::new(Clock::virtual_at(ms(start)));
        for (id, expr, tz) in defs {
            s.set(id, Some(Arc::new(Schedule::parse(expr, *tz).unwrap())), None);
        }
        let out = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = {
            let out = out.clone();
            tokio::spawn(s.clone().run(stop.clone(), move |due| {
                out.lock().unwrap().extend(due.into_iter().map(|d| (d.id, at(d.slot_ms), d.late_ms)));
                async {}
            }))
        };
        tokio::time::sleep(span).await;
        stop.cancel();
        task.await.unwrap();
        Arc::try_unwrap(out).unwrap().into_inner().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn fires_each_time_once_and_on_time() {
        let got = fires("2026-06-01T10:02:00Z", &[("five", "*/5 * * * *", None)], Duration::from_secs(3600)).await;
        let times: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
        assert_eq!(times.len(), 12, "{times:?}");
        assert_eq!(times[0], "2026-06-01T10:05:00Z");
        assert_eq!(times[11], "2026-06-01T11:00:00Z");
        assert!(got.iter().all(|g| g.2 <= 1), "late: {got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn seconds_field_and_nicknames() {
        let got = fires(
            "2026-06-01T23:59:58Z",
            &[("sec", "*/1 * * * * *", None), ("daily", "@daily", None)],
            Duration::from_millis(4500),
        )
        .await;
        let sec: Vec<&str> = got.iter().filter(|g| g.0 == "sec").map(|g| g.1.as_str()).collect();
        assert_eq!(
            sec,
            ["2026-06-01T23:59:59Z", "2026-06-02T00:00:00Z", "2026-06-02T00:00:01Z", "2026-06-02T00:00:02Z"]
        );
        let daily: Vec<&str> = got.iter().filter(|g| g.0 == "daily").map(|g| g.1.as_str()).collect();
        assert_eq!(daily, ["2026-06-02T00:00:00Z"]);
    }

    /// Europe/Berlin springs forward on 2026-03-29 (02:00 → 03:00: 02:30 never happens) and
    /// falls back on 2026-10-25 (03:00 → 02:00: 02:30 happens twice). A daily 02:30 runs
    /// once on each of those days.
    #[tokio::test(start_paused = true)]
    async fn daylight_saving_days_run_a_daily_time_once() {
        let spring = fires(
            "2026-03-28T12:00:00Z",
            &[("nightly", "30 2 * * *", Some("Europe/Berlin"))],
            Duration::from_secs(3 * 86400),
        )
        .await;
        let times: Vec<&str> = spring.iter().map(|g| g.1.as_str()).collect();
        // 02:30 CET = 01:30Z on the 30th; on the 29th the skipped 02:30 runs at 03:00 CEST
        // (01:00Z), as cron implementations following OCPS do.
        assert_eq!(times, ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]);

        let autumn = fires(
            "2026-10-24T12:00:00Z",
            &[("nightly", "30 2 * * *", Some("Europe/Berlin"))],
            Duration::from_secs(2 * 86400),
        )
        .await;
        let times: Vec<&str> = autumn.iter().map(|g| g.1.as_str()).collect();
        // The first 02:30 (CEST, 00:30Z) only.
        assert_eq!(times, ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_hourly_schedule_runs_every_real_hour_across_the_fall_back() {
        let got = fires(
            "2026-10-24T22:00:30Z",
            &[("hourly", "0 * * * *", Some("Europe/Berlin"))],
            Duration::from_secs(5 * 3600),
        )
        .await;
        let times: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
        assert_eq!(
            times,
            [
                "2026-10-24T23:00:00Z",
                "2026-10-25T00:00:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T02:00:00Z",
                "2026-10-25T03:00:00Z"
            ],
            "an hour apart, though the wall clock shows 02:00 twice"
        );
    }

    #[test]
    fn the_29th_of_february_comes_in_a_leap_year() {
        let s = Schedule::parse("0 12 29 2 *", None).unwrap();
        assert_eq!(at(s.next_after(ms("2026-11-30T00:00:00Z")).unwrap()), "2028-02-29T12:00:00Z");
        let s = Schedule::parse("0 0 L 2 *", Some("UTC")).unwrap();
        assert_eq!(at(s.next_after(ms("2027-03-01T00:00:00Z")).unwrap()), "2028-02-29T00:00:00Z");
    }

    #[test]
    fn bad_schedules_name_their_field() {
        let err = |e: &str, tz: Option<&str>| Schedule::parse(e, tz).unwrap_err();
        assert!(err("61 * * * *", None).starts_with("schedule: \"61 * * * *\" is not a cron schedule"));
        assert!(err("* * *", None).starts_with("schedule: \"* * *\" has 3 fields"));
        assert!(err("0 0 * * * * 2027", None).starts_with("schedule:"));
        assert!(err("0 0 30 2 *", None).contains("never comes"));
        assert!(err("@daily", Some("Mars/Olympus")).starts_with("timezone: \"Mars/Olympus\""));
        assert!(Schedule::parse("@hourly", Some("America/New_York")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn missed_times_catch_up_once_or_not_at_all() {
        let s = Scheduler::new(Clock::virtual_at(ms("2026-06-01T10:07:30Z")));
        let every = Schedule::parse("* * * * *", None).unwrap();
        // Last run at 10:00: seven minutes were missed; one run, for 10:07.
        let due = s.catch_up("a", &every, Some(ms("2026-06-01T10:00:00Z")), CatchUp::One).unwrap();
        assert_eq!((at(due.slot_ms), due.trigger), ("2026-06-01T10:07:00Z".into(), Some(Trigger::CatchUp)));
        let due = s.catch_up("a", &every, Some(ms("2026-06-01T10:00:00Z")), CatchUp::None).unwrap();
        assert_eq!(due.trigger, None, "the missed time is passed over");
        assert_eq!(s.catch_up("a", &every, Some(ms("2026-06-01T10:07:00Z")), CatchUp::One), None, "nothing missed");
        assert_eq!(s.catch_up("a", &every, None, CatchUp::One), None, "never ran: counts from now");
    }

    /// The wall clock stepping back (as `set` re-reads it) never brings a time acted on
    /// back: the next time is searched for after the last one.
    #[tokio::test(start_paused = true)]
    async fn a_time_acted_on_never_comes_again() {
        let s = Scheduler::new(Clock::virtual_at(ms("2026-06-01T10:00:30Z")));
        let every = Arc::new(Schedule::parse("* * * * *", None).unwrap());
        s.set("a", Some(every.clone()), Some(ms("2026-06-01T10:05:00Z")));
        assert_eq!(at(s.next_run("a").unwrap()), "2026-06-01T10:06:00Z");
        s.set("a", Some(every), None);
        assert_eq!(at(s.next_run("a").unwrap()), "2026-06-01T10:06:00Z", "the last time is kept");
        s.set("a", None, None);
        assert_eq!(s.next_run("a"), None);
        // Taken out and put back: still after the last time acted on.
        s.set("a", Some(Arc::new(Schedule::parse("* * * * *", None).unwrap())), None);
        assert_eq!(at(s.next_run("a").unwrap()), "2026-06-01T10:06:00Z", "kept while it was out");
    }

    #[tokio::test(start_paused = true)]
    async fn times_that_passed_together_make_one_run() {
        let s = Scheduler::new(Clock::virtual_at(ms("2026-06-01T10:00:30Z")));
        s.set("a", Some(Arc::new(Schedule::parse("*/10 * * * * *", None).unwrap())), None);
        // The loop did not look for 35 s (the process was stopped): one run, for 10:01:00.
        tokio::time::advance(Duration::from_secs(35)).await;
        let due = s.take_due();
        assert_eq!(due.len(), 1);
        assert_eq!(at(due[0].slot_ms), "2026-06-01T10:01:00Z");
        assert_eq!(due[0].late_ms, 5000);
        assert_eq!(at(s.next_run("a").unwrap()), "2026-06-01T10:01:10Z");
    }
}
