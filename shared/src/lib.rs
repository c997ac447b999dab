//! Wire types shared by `quaerod` and `quaero-tui`.
//!
//! Everything here is the JSON contract written out in `docs/`: jobs, steps, statuses, events,
//! REST bodies, WebSocket messages and the error body. Both binaries (and the tests) use
//! these types so that a field renamed on one side fails to compile on the other.
//!
//! With the `client` feature, [`client`] is the one client of the daemon (REST, the `after`
//! follower, the WebSocket link, the refetch throttle).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[cfg(feature = "client")]
pub mod client;

/// Default port of the daemon; the TUI's default server points at it.
pub const DEFAULT_PORT: u16 = 8080;

/// The lifecycle of every job, at every depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] =
        [JobStatus::Pending, JobStatus::Running, JobStatus::Completed, JobStatus::Failed, JobStatus::Cancelled];

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown status {s:?}"))
    }
}

/// Depth of a job: manager (0), step (1), child job (2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobKind {
    Manager,
    Step,
    Job,
}

/// Event severity. Ordered so that a filter `level >= min` is hierarchical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Level {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;
    /// Accepts the four names and the usual aliases (`warning`, `err`), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "debug" | "trace" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warn" | "warning" => Ok(Self::Warn),
            "error" | "err" => Ok(Self::Error),
            _ => Err(format!("unknown level {s:?}")),
        }
    }
}

/// Who wrote an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Originator {
    Manager,
    Step,
    Worker,
}

impl Originator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manager => "manager",
            Self::Step => "step",
            Self::Worker => "worker",
        }
    }
}

/// One step event (log line) as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub seq: u64,
    pub job_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    pub manager_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_name: Option<String>,
    pub level: Level,
    pub message: String,
    pub originator: Originator,
    /// `HH:MM:SS.mmm`, UTC.
    pub timestamp: String,
    /// RFC 3339 with milliseconds, UTC.
    pub full_timestamp: String,
}

/// Counts of a step's (or manager's) child jobs by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChildCounts {
    pub total: u64,
    pub pending: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl ChildCounts {
    pub fn add(&mut self, status: JobStatus, delta: i64) {
        let slot = match status {
            JobStatus::Pending => &mut self.pending,
            JobStatus::Running => &mut self.running,
            JobStatus::Completed => &mut self.completed,
            JobStatus::Failed => &mut self.failed,
            JobStatus::Cancelled => &mut self.cancelled,
        };
        *slot = slot.saturating_add_signed(delta);
    }

    /// How many have `status`.
    pub fn get(&self, status: JobStatus) -> u64 {
        match status {
            JobStatus::Pending => self.pending,
            JobStatus::Running => self.running,
            JobStatus::Completed => self.completed,
            JobStatus::Failed => self.failed,
            JobStatus::Cancelled => self.cancelled,
        }
    }

    pub fn terminal(&self) -> u64 {
        self.completed + self.failed + self.cancelled
    }
}

/// A step as listed inside its manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepSummary {
    pub id: String,
    /// 1-based position in the definition.
    pub index: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub step_type: StepType,
    #[serde(default)]
    pub description: String,
    pub status: JobStatus,
    pub child_counts: ChildCounts,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// A step without children, or a child: the attempt running or next (1-based), when the
    /// step has a retry policy or has been tried more than once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Present while it waits to retry: when the next attempt starts (its status stays
    /// `running` meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

/// A job at any depth, as `GET /api/jobs` and `GET /api/jobs/{id}` return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    /// `None` for managers.
    #[serde(default)]
    pub parent_id: Option<String>,
    pub manager_id: String,
    pub definition_id: String,
    pub name: String,
    pub status: JobStatus,
    pub created_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Milliseconds between start and finish (or now, while running).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
    pub child_counts: ChildCounts,
    /// Managers only: their steps, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepSummary>>,
    /// Managers only: the parameters this run was given (defaults included).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Managers only: a delayed run's start time; it stays `pending` until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// Managers only: the tags of the definition it ran from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// A step without children, or a child: the attempt running or next (1-based), when the
    /// step has a retry policy or has been tried more than once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Present while it waits to retry: when the next attempt starts (its status stays
    /// `running` meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// Managers only: what started it (absent from a daemon that does not say: `api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Managers only, started by the schedule: the scheduled time it ran for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_time: Option<String>,
    /// Managers only: the named queue its work runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// Step types of a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StepType {
    Command,
    HttpFetch,
    Emit,
}

impl StepType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::HttpFetch => "http_fetch",
            Self::Emit => "emit",
        }
    }
}

/// A step's `type` as written in a definition: one of the [`StepType`]s, or a name this
/// daemon does not know. The unknown name is kept (rather than failing the whole decode)
/// so that the definition is still listed by its id and its error names `steps[i].type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepTypeName {
    Known(StepType),
    Unknown(String),
}

impl From<StepType> for StepTypeName {
    fn from(t: StepType) -> Self {
        Self::Known(t)
    }
}

/// What a step does when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OnError {
    #[default]
    Fail,
    Continue,
}

/// A step of a definition, as written in TOML or JSON. `config` stays free-form here; the
/// daemon validates it per step type and names the offending field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepDefinition {
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub name: String,
    /// `command`, `http_fetch` or `emit` (an unknown name is reported with the step's
    /// path, and the definition still listed).
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(value_type = StepType))]
    pub step_type: StepTypeName,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Tries again when it fails: a step without children, or each child of a fan-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Each attempt (of the step, or of each child) fails after this long, e.g. `"10m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A step's retry policy: `retry = { max_attempts = 3, backoff = "exponential",
/// initial = "1s", max_delay = "5m", jitter = true }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetrySpec {
    /// Attempts in all, the first included (1 to 100).
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff: Backoff,
    /// The wait after the first failed attempt (default `"1s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<String>,
    /// The longest wait (default `"5m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<String>,
    /// Wait a random 50% to 100% of the computed delay (default true).
    #[serde(default = "yes")]
    pub jitter: bool,
}

fn yes() -> bool {
    true
}

/// How the wait between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Backoff {
    /// `initial`, doubling after each failed attempt, up to `max_delay`.
    #[default]
    Exponential,
    /// `initial` every time.
    Fixed,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A job definition, as written in TOML or JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobDefinition {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z0-9_-]{1,64}$"))]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// e.g. `"30m"`; the manager fails when it runs longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 100))]
    pub steps: Vec<StepDefinition>,
    /// The parameters a run takes, by name: `{params.NAME}` in a step's text values is
    /// replaced by the run's value (docs/jobs.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, ParamSpec>,
    /// The named queue its work runs on (`[queues.<name>]` in the config); `default` when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Labels to find its runs by (`GET /api/jobs?tag=…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// False: execute is refused (409) until it is enabled (`POST …/enable`), and its
    /// schedule does not fire.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// When it runs by itself: cron with 5 fields (minute first), 6 (seconds first), or
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` (docs/jobs.md, Schedules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The IANA time zone its schedule reads in (`Europe/Berlin`); UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// True: one run each time the daemon starts.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_start: bool,
    /// What a scheduled time does while a run of this definition is active.
    #[serde(default, skip_serializing_if = "Overlap::is_default")]
    pub overlap: Overlap,
    /// What the times missed while the daemon was down do.
    #[serde(default, skip_serializing_if = "CatchUp::is_default")]
    pub catch_up: CatchUp,
    /// Higher first: within a queue, a unit of a run with a higher priority takes the next
    /// free slot before one of a lower priority (in order of arrival within a priority).
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
}

impl Default for JobDefinition {
    /// An empty definition (no id, no steps), enabled, with every option at its default.
    fn default() -> Self {
        JobDefinition {
            id: String::new(),
            name: String::new(),
            description: String::new(),
            timeout: None,
            steps: Vec::new(),
            params: BTreeMap::new(),
            queue: None,
            tags: Vec::new(),
            enabled: true,
            schedule: None,
            timezone: None,
            auto_start: false,
            overlap: Overlap::Skip,
            catch_up: CatchUp::One,
            priority: 0,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

/// A scheduled time comes while a run of the definition is active (pending or running).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Overlap {
    /// No run for that time.
    #[default]
    Skip,
    /// A run that stays pending until the active ones have finished.
    Queue,
    /// A run that starts at once, beside the active ones.
    Allow,
}

impl Overlap {
    pub fn is_default(&self) -> bool {
        *self == Self::Skip
    }
}

/// The scheduled times that passed while the daemon was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CatchUp {
    /// One run at the start, for the latest of them.
    #[default]
    One,
    /// None of them runs.
    None,
}

impl CatchUp {
    pub fn is_default(&self) -> bool {
        *self == Self::One
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Trigger {
    /// An execute request.
    #[default]
    Api,
    /// A rerun of an earlier run.
    Rerun,
    /// Its definition's schedule, at `schedule_time`.
    Schedule,
    /// A scheduled time missed while the daemon was down (`catch_up = "one"`).
    CatchUp,
    /// The daemon started (`auto_start = true`).
    AutoStart,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Rerun => "rerun",
            Self::Schedule => "schedule",
            Self::CatchUp => "catch_up",
            Self::AutoStart => "auto_start",
        }
    }
}

/// The newest run of a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LastRun {
    pub job_id: String,
    pub status: JobStatus,
    #[serde(default)]
    pub finished_at: Option<String>,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A parameter of a definition: its default (`env = "staging"`), or a table that may
/// leave the default out, making the parameter required (`host = { description = "…" }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ParamSpec {
    Default(ParamValue),
    Declared(ParamDecl),
}

impl ParamSpec {
    /// The default as text, if there is one.
    pub fn default_text(&self) -> Option<String> {
        match self {
            Self::Default(v) => Some(v.to_text()),
            Self::Declared(d) => d.default.as_ref().map(ParamValue::to_text),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParamDecl {
    /// None: every run must give a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ParamValue>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A parameter's value: text, a number or a boolean (all are substituted as text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ParamValue {
    Text(String),
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl ParamValue {
    pub fn to_text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Bool(b) => b.to_string(),
            Self::Int(n) => n.to_string(),
            Self::Float(f) => f.to_string(),
        }
    }
}

/// The body of `POST /api/job-definitions/{id}/execute` (all of it optional: `{}` or no
/// body runs the definition now with its defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecuteRequest {
    /// Values for the definition's parameters, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, ParamValue>,
    /// Start at this time (RFC 3339); a time in the past starts at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub run_at: Option<String>,
    /// Start after this long (`"10m"`, `"90s"`); not together with `run_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
}

/// One entry of `GET /api/job-definitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub steps: Vec<StepDefinition>,
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `file:<path>` or `api`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The parameters a run takes (see `JobDefinition::params`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, ParamSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Whether it may run: the definition's `enabled`, or what enable/disable set since
    /// (kept across restarts). Read as `true` from a daemon that does not say.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The named queue its runs go to.
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule's time zone (`UTC` when the definition names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The schedule in words (`At 02:30 on every day`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_text: Option<String>,
    /// When the schedule fires next; absent while disabled or invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub next_run_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_start: bool,
    #[serde(default, skip_serializing_if = "Overlap::is_default")]
    pub overlap: Overlap,
    #[serde(default, skip_serializing_if = "CatchUp::is_default")]
    pub catch_up: CatchUp,
}

fn default_queue() -> String {
    "default".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionsList {
    pub job_definitions: Vec<DefinitionInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobsList {
    pub jobs: Vec<Job>,
    /// Every job the filters match (not only this page's), exact.
    pub total_count: u64,
    pub limit: u64,
    pub offset: u64,
    /// Give it back as `cursor` for the next page (absent on the last page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    pub total_jobs: u64,
    pub pending_jobs: u64,
    pub running_jobs: u64,
    pub completed_jobs: u64,
    pub failed_jobs: u64,
    pub cancelled_jobs: u64,
}

impl Stats {
    pub fn add(&mut self, status: JobStatus, delta: i64) {
        let slot = match status {
            JobStatus::Pending => &mut self.pending_jobs,
            JobStatus::Running => &mut self.running_jobs,
            JobStatus::Completed => &mut self.completed_jobs,
            JobStatus::Failed => &mut self.failed_jobs,
            JobStatus::Cancelled => &mut self.cancelled_jobs,
        };
        *slot = slot.saturating_add_signed(delta);
        self.total_jobs = self.total_jobs.saturating_add_signed(delta);
    }
}

/// Sort order of `GET /api/jobs/{id}/logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Order {
    #[default]
    Desc,
    Asc,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogsResponse {
    pub job_id: String,
    pub logs: Vec<Event>,
    pub count: u64,
    pub limit: u64,
    pub order: Order,
    /// `all` or a level name.
    pub level: String,
    /// Highest seq of this job's scope at the time of the read (0 if none).
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelResponse {
    pub job_id: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteResponse {
    pub job_id: String,
    pub deleted_jobs: u64,
    pub deleted_events: u64,
}

/// `DELETE /api/jobs?…`: accepted; the runs are deleted in the background, in batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkDeleteResponse {
    /// Finished managers that matched and are being deleted (with their steps, children
    /// and events).
    pub count: u64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RerunResponse {
    pub original_job_id: String,
    pub new_job_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecuteResponse {
    pub job_id: String,
}

/// One named queue, as `GET /api/queues` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueInfo {
    pub name: String,
    /// Units of work (a step without children, or a child) it runs at once.
    pub concurrency: u64,
    /// A paused queue starts nothing new; what runs goes on.
    pub paused: bool,
    /// Runs waiting for it to resume, and units waiting for a free slot.
    pub pending: u64,
    /// Units running now.
    pub running: u64,
    /// Units that ended in the last 60 seconds.
    pub completed_last_minute: u64,
}

/// `GET /api/queues`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueuesList {
    pub queues: Vec<QueueInfo>,
}

/// `DELETE /api/job-definitions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionDeleted {
    pub id: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: String,
}

/// Server → client WebSocket messages: `{"type": …, "payload": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ServerMessage {
    Hello(Hello),
    RefreshStepEvents(RefreshStepEvents),
    JobStatusChange(JobStatusChange),
    StepProgress(StepProgress),
    QueueStats(Stats),
    /// The named queues (`GET /api/queues`), at a tick when any of them changed: paused,
    /// resumed, or its counts.
    Queues(QueuesList),
    JobLog(JobLog),
    Error(WsError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hello {
    pub version: String,
    /// `trigger` or `push`.
    pub mode: String,
    pub time_threshold_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshStepEvents {
    pub step_ids: Vec<String>,
    pub manager_ids: Vec<String>,
    pub timestamp: String,
    pub finished: bool,
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatusChange {
    pub job_id: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    pub manager_id: String,
    /// `manager` or `step`.
    pub kind: JobKind,
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepProgress {
    pub step_id: String,
    pub manager_id: String,
    pub child_counts: ChildCounts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobLog {
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WsError {
    pub message: String,
}

/// Client → server WebSocket messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ClientMessage {
    /// Narrows this client to these managers; an empty list means all.
    Subscribe { job_ids: Vec<String> },
}

/// Where a job id sits in the tree. Ids are `m<N>` for managers, `m<N>-s<I>` for the I-th
/// step (1-based) and `m<N>-s<I>-c<K>` for the K-th child (1-based) of that step, so any id
/// names its ancestors without a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobPath {
    pub manager: u64,
    /// 0 for the manager itself.
    pub step: u32,
    /// 0 for a manager or a step.
    pub child: u32,
}

impl JobPath {
    pub fn manager(manager: u64) -> Self {
        Self { manager, step: 0, child: 0 }
    }
    pub fn step(manager: u64, step: u32) -> Self {
        Self { manager, step, child: 0 }
    }
    pub fn child(manager: u64, step: u32, child: u32) -> Self {
        Self { manager, step, child }
    }

    pub fn kind(&self) -> JobKind {
        if self.child > 0 {
            JobKind::Job
        } else if self.step > 0 {
            JobKind::Step
        } else {
            JobKind::Manager
        }
    }

    pub fn parent(&self) -> Option<JobPath> {
        match self.kind() {
            JobKind::Manager => None,
            JobKind::Step => Some(Self::manager(self.manager)),
            JobKind::Job => Some(Self::step(self.manager, self.step)),
        }
    }

    pub fn manager_path(&self) -> JobPath {
        Self::manager(self.manager)
    }

    pub fn step_path(&self) -> Option<JobPath> {
        (self.step > 0).then(|| Self::step(self.manager, self.step))
    }

    pub fn parse(id: &str) -> Option<JobPath> {
        fn num<T: FromStr>(s: &str, prefix: char) -> Option<T> {
            let digits = s.strip_prefix(prefix)?;
            // No leading zeros or signs, so every path has exactly one spelling.
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || (digits.len() > 1 && digits.starts_with('0'))
            {
                return None;
            }
            digits.parse().ok()
        }
        let mut parts = id.split('-');
        let manager: u64 = num(parts.next()?, 'm')?;
        let step: u32 = match parts.next() {
            None => return (manager > 0).then(|| Self::manager(manager)),
            Some(p) => num(p, 's')?,
        };
        let child: u32 = match parts.next() {
            None => 0,
            Some(p) => num(p, 'c')?,
        };
        if parts.next().is_some() || manager == 0 || step == 0 {
            return None;
        }
        if child == 0 && id.matches('-').count() == 2 {
            return None;
        }
        Some(Self { manager, step, child })
    }
}

impl fmt::Display for JobPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.manager)?;
        if self.step > 0 {
            write!(f, "-s{}", self.step)?;
        }
        if self.child > 0 {
            write!(f, "-c{}", self.child)?;
        }
        Ok(())
    }
}

impl Serialize for JobPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JobPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        JobPath::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad job id {s:?}")))
    }
}

/// Removes terminal control sequences (CSI, OSC, other ESC sequences) and C0/C1 control
/// characters from untrusted text, keeping tabs as spaces. What remains is safe to print to
/// a terminal.
pub fn sanitize_terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                // CSI: ESC [ params intermediates final(0x40..=0x7e)
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC / DCS / SOS / PM / APC: up to BEL or ST (ESC \)
                Some(']') | Some('P') | Some('X') | Some('^') | Some('_') => {
                    chars.next();
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_paths_round_trip() {
        for id in ["m1", "m42-s3", "m42-s3-c17"] {
            assert_eq!(JobPath::parse(id).unwrap().to_string(), id);
        }
        for bad in ["", "m", "m0", "x1", "m1-s0", "m1-s1-c0", "m01", "m1-s1-c1-x", "m1-c1", "m-1"] {
            assert_eq!(JobPath::parse(bad), None, "{bad}");
        }
        let p = JobPath::parse("m7-s2-c5").unwrap();
        assert_eq!(p.kind(), JobKind::Job);
        assert_eq!(p.parent().unwrap().to_string(), "m7-s2");
        assert_eq!(p.manager_path().to_string(), "m7");
    }

    #[test]
    fn sanitize_strips_escapes_and_controls() {
        assert_eq!(sanitize_terminal("a\x1b[2Jb"), "ab");
        assert_eq!(sanitize_terminal("x\x1b]52;c;ZXZpbA==\x07y"), "xy");
        assert_eq!(sanitize_terminal("x\x1b]0;title\x1b\\y"), "xy");
        assert_eq!(sanitize_terminal("r\x1b[31mred\x1b[0m"), "rred");
        assert_eq!(sanitize_terminal("bell\x07\r\n\u{9b}2J"), "bell2J");
        assert_eq!(sanitize_terminal("tab\there é"), "tab here é");
    }

    #[test]
    fn ws_messages_have_type_and_payload() {
        let m = ServerMessage::Hello(Hello { version: "1".into(), mode: "trigger".into(), time_threshold_ms: 1000 });
        let v: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "hello");
        assert_eq!(v["payload"]["time_threshold_ms"], 1000);
        let c: ClientMessage = serde_json::from_str(r#"{"type":"subscribe","job_ids":["m1"]}"#).unwrap();
        assert_eq!(c, ClientMessage::Subscribe { job_ids: vec!["m1".into()] });
    }
}
