//! Results: metrics with their samples and targets, and the two renderings of the same
//! data (the Markdown table printed at the end and the JSON written with `--out`).

use serde::Serialize;

/// What a target demands of a metric's median.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// As the issue words it, e.g. "≤ 1.05".
    pub text: String,
    pub bound: Bound,
}

impl Target {
    pub fn at_most(v: f64, text: impl Into<String>) -> Option<Target> {
        Some(Target { text: text.into(), bound: Bound::AtMost(v) })
    }
    pub fn at_least(v: f64, text: impl Into<String>) -> Option<Target> {
        Some(Target { text: text.into(), bound: Bound::AtLeast(v) })
    }
}

/// One row of the table. `value` is the median of `samples` (one sample per round) unless
/// the metric was built from a single statistic.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
    pub target: Option<Target>,
    /// Whether the median meets the target; `None` without a target or in `--quick` runs.
    pub met: Option<bool>,
}

impl Metric {
    /// Median and range of per-round samples.
    pub fn rounds(name: impl Into<String>, unit: &'static str, samples: Vec<f64>, target: Option<Target>) -> Metric {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let value = median(&sorted);
        let min = sorted.first().copied().unwrap_or(f64::NAN);
        let max = sorted.last().copied().unwrap_or(f64::NAN);
        Metric { name: name.into(), unit, value, min, max, samples, target, met: None }
    }

    /// Applies the target to the median (skipped in quick runs: tiny sizes prove nothing).
    pub fn judge(&mut self, quick: bool) {
        self.met = match (&self.target, quick) {
            (Some(t), false) => Some(match t.bound {
                Bound::AtMost(v) => self.value <= v,
                Bound::AtLeast(v) => self.value >= v,
            }),
            _ => None,
        };
    }

    /// "met", or "not met: 12% over" — how far the median is from the target.
    pub fn verdict(&self) -> String {
        let Some(t) = &self.target else { return String::new() };
        match self.met {
            None => "(quick: not judged)".into(),
            Some(true) => "**met**".into(),
            Some(false) => match t.bound {
                Bound::AtMost(v) => format!("**not met**: {:.0}% over", (self.value / v - 1.0) * 100.0),
                Bound::AtLeast(v) => format!("**not met**: {:.0}% short", (1.0 - self.value / v) * 100.0),
            },
        }
    }
}

pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile of sorted samples (`p` in 0..=100).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    pub id: u32,
    pub name: &'static str,
    pub title: &'static str,
    /// The shape that was run, in words (sizes, clients, rounds).
    pub setup: String,
    pub metrics: Vec<Metric>,
    /// Per-round raw measurements, for whoever wants to look closer.
    pub details: serde_json::Value,
    /// Set when the scenario did not complete correctly; the bench then exits non-zero.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub mem_total_mb: u64,
    pub cpu_model: String,
    pub kernel: String,
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

impl Machine {
    pub fn probe() -> Machine {
        let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        Machine { nproc, mem_total_mb: mem_kb / 1024, cpu_model, kernel }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub quick: bool,
    pub started_at: String,
    pub total_seconds: f64,
    pub machine: Machine,
    /// /proc/loadavg before and after: other work on the machine skews the numbers.
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub quaerod: String,
    pub scenarios: Vec<ScenarioReport>,
}

/// Numbers as a reader wants them: few significant digits, thousands separated.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn with_unit(v: f64, unit: &str) -> String {
    match unit {
        "" => fmt_num(v),
        "×" => format!("{}×", fmt_num(v)),
        "%" => format!("{}%", fmt_num(v)),
        u => format!("{} {u}", fmt_num(v)),
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("| # | Scenario | Metric | Median | Min–max | Target | Result |\n");
        s.push_str("|---|---|---|---:|---:|---|---|\n");
        for sc in &self.scenarios {
            if let Some(e) = &sc.error {
                s.push_str(&format!("| {} | {} | **failed** | | | | {} |\n", sc.id, sc.title, e.replace('|', "\\|")));
            }
            for (i, m) in sc.metrics.iter().enumerate() {
                let title = if i == 0 { sc.title } else { "" };
                let range = if m.samples.len() > 1 {
                    format!("{} – {}", fmt_num(m.min), with_unit(m.max, m.unit))
                } else {
                    String::new()
                };
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} |\n",
                    if i == 0 { sc.id.to_string() } else { String::new() },
                    title,
                    m.name,
                    with_unit(m.value, m.unit),
                    range,
                    m.target.as_ref().map(|t| t.text.as_str()).unwrap_or(""),
                    m.verdict(),
                ));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        assert_eq!(median(&[1.0, 2.0, 10.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), 2.5);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn verdicts_say_by_how_much() {
        let mut m = Metric::rounds("ratio", "×", vec![1.2, 1.1, 1.0], Target::at_most(1.05, "≤ 1.05"));
        m.judge(false);
        assert_eq!(m.value, 1.1);
        assert_eq!(m.verdict(), "**not met**: 5% over");
        let mut m = Metric::rounds("rate", "events/s", vec![150_000.0], Target::at_least(200_000.0, "≥ 200,000"));
        m.judge(false);
        assert_eq!(m.verdict(), "**not met**: 25% short");
        m.judge(true);
        assert_eq!(m.met, None);
        assert_eq!(fmt_num(1_234_567.0), "1,234,567");
        assert_eq!(fmt_num(0.5), "0.500");
    }
}
