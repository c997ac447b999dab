//! Job definitions: parsing (TOML files, JSON over the API) and validation into a plan the
//! runner can execute without further checks. Every error names the field it is about.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use quaero_shared::{JobDefinition, Level, ParamValue, StepDefinition, StepType, StepTypeName};
use serde::Deserialize;

/// Caps that keep one definition from exhausting the daemon.
pub const MAX_STEPS: usize = 100;
pub const MAX_CHILDREN: u64 = 100_000;
pub const MAX_EMIT_COUNT: u64 = 100_000_000;
pub const MAX_ID_LEN: usize = 64;

/// A validated definition, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub timeout: Option<Duration>,
    pub steps: Vec<StepPlan>,
    /// Per step, in the same order: how its work is retried and timed out.
    pub policies: Vec<StepPolicy>,
}

/// How a step's units of work (the step itself, or each child) are tried.
#[derive(Debug, Clone, Default)]
pub struct StepPolicy {
    pub retry: Retry,
    /// Each attempt fails after this long.
    pub timeout: Option<Duration>,
}

/// A validated retry policy; the default tries once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    pub max_attempts: u32,
    pub backoff: quaero_shared::Backoff,
    pub initial: Duration,
    pub max_delay: Duration,
    pub jitter: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 1,
            backoff: quaero_shared::Backoff::Exponential,
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            jitter: true,
        }
    }
}

impl Retry {
    /// The wait after attempt `failed` (1-based) failed. `random` in [0, 1) picks the
    /// jitter: 50% to 100% of the computed delay.
    pub fn delay(&self, failed: u32, random: f64) -> Duration {
        let base = match self.backoff {
            quaero_shared::Backoff::Fixed => self.initial,
            quaero_shared::Backoff::Exponential => {
                let factor = 2u32.saturating_pow(failed.saturating_sub(1).min(31));
                self.initial.saturating_mul(factor)
            }
        };
        let d = base.min(self.max_delay);
        if self.jitter { d.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0)) } else { d }
    }
}

/// Most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

fn step_policy(at: &str, s: &StepDefinition) -> Result<StepPolicy, String> {
    let dur = |field: &str, v: &str| {
        humantime::parse_duration(v.trim())
            .map_err(|e| format!("{at}.{field}: {v:?} is not a duration like \"30s\": {e}"))
    };
    let timeout = match &s.timeout {
        None => None,
        Some(t) => match dur("timeout", t)? {
            d if d.is_zero() => return Err(format!("{at}.timeout: must be more than 0")),
            d => Some(d),
        },
    };
    let mut retry = Retry::default();
    if let Some(r) = &s.retry {
        if !(1..=MAX_ATTEMPTS).contains(&r.max_attempts) {
            return Err(format!("{at}.retry.max_attempts: {} is not between 1 and {MAX_ATTEMPTS}", r.max_attempts));
        }
        retry.max_attempts = r.max_attempts;
        retry.backoff = r.backoff;
        retry.jitter = r.jitter;
        if let Some(v) = &r.initial {
            retry.initial = dur("retry.initial", v)?;
        }
        if let Some(v) = &r.max_delay {
            retry.max_delay = dur("retry.max_delay", v)?;
        }
        if retry.max_delay > Duration::from_secs(7 * 24 * 3600) {
            return Err(format!("{at}.retry.max_delay: at most 7 days"));
        }
    }
    Ok(StepPolicy { retry, timeout })
}

#[derive(Debug, Clone)]
pub enum StepPlan {
    Command(CommandSpec),
    HttpFetch(HttpSpec),
    Emit(EmitSpec),
}

impl StepPlan {
    pub fn step_type(&self) -> StepType {
        match self {
            Self::Command(_) => StepType::Command,
            Self::HttpFetch(_) => StepType::HttpFetch,
            Self::Emit(_) => StepType::Emit,
        }
    }

    /// Number of child jobs this step fans out (0: it runs as one unit of work).
    pub fn children(&self) -> u64 {
        match self {
            Self::Command(c) => c.for_each.as_ref().map_or(0, |v| v.len() as u64),
            Self::HttpFetch(h) => h.urls.len() as u64,
            Self::Emit(e) => e.children,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    #[serde(default)]
    pub run: Option<String>,
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub for_each: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    pub urls: Vec<String>,
    #[serde(default)]
    pub allow_failures: u64,
    /// Per request, e.g. "10s". Default 30 s.
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(skip)]
    pub timeout_dur: Duration,
}

fn default_count() -> u64 {
    1000
}
fn default_message() -> String {
    "event {i} of {n}".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitSpec {
    #[serde(default = "default_count")]
    pub count: u64,
    #[serde(default)]
    pub children: u64,
    #[serde(default)]
    pub interval_ms: u64,
    #[serde(default)]
    pub level: Level,
    #[serde(default = "default_message")]
    pub message: String,
    #[serde(default)]
    pub fail: bool,
    /// `N > 0`: a unit whose number is a multiple of N (the child's; 1 without fan-out)
    /// fails its first attempt after its events, then succeeds (for retries under load).
    #[serde(default)]
    pub flaky_every: u64,
}

pub fn valid_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!("id: must be 1 to {MAX_ID_LEN} characters"));
    }
    if !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
        return Err(format!("id: {id:?} may only contain a-z, 0-9, _ and -"));
    }
    Ok(())
}

/// Decodes a step's `config`; an error names the key at fault (`steps[0].config.count: …`),
/// also a key of the wrong type, which serde_json's own message leaves out.
fn step_config<T: for<'de> Deserialize<'de>>(at: &str, v: &serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| match e.path().to_string().as_str() {
        "." => format!("{at}.config: {}", e.inner()),
        path => format!("{at}.config.{path}: {}", e.inner()),
    })
}

/// A run's parameter values, by name.
pub type Params = BTreeMap<String, String>;

/// Most parameters a definition declares.
pub const MAX_PARAMS: usize = 64;

/// The values a run gets: `given` over the definition's defaults. A name the definition
/// does not declare, or a declared one with no default and no value, is an error naming it.
pub fn resolve_params(def: &JobDefinition, given: &BTreeMap<String, ParamValue>) -> Result<Params, String> {
    if let Some(name) = given.keys().find(|n| !def.params.contains_key(*n)) {
        let declared: Vec<&str> = def.params.keys().map(String::as_str).collect();
        return Err(if declared.is_empty() {
            format!("params.{name}: {:?} takes no parameters", def.id)
        } else {
            format!("params.{name}: no such parameter (this definition takes: {})", declared.join(", "))
        });
    }
    let mut out = Params::new();
    for (name, spec) in &def.params {
        let value = match given.get(name) {
            Some(v) => v.to_text(),
            None => spec.default_text().ok_or_else(|| format!("params.{name}: required (it has no default)"))?,
        };
        if value.len() > 64 * 1024 {
            return Err(format!("params.{name}: longer than 64 KiB"));
        }
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// The definition as a run with `params` executes it: `{params.NAME}` replaced in every
/// text value of every step's `config`, then validated. An unknown name is an error naming
/// where it is written.
pub fn plan_with(def: &JobDefinition, params: &Params) -> Result<Plan, String> {
    let mut def = def.clone();
    for (i, s) in def.steps.iter_mut().enumerate() {
        substitute_value(&mut s.config, &format!("steps[{i}].config"), params)?;
    }
    validate_resolved(&def)
}

/// Replaces `{params.NAME}` in the text values (never the keys) under `v`.
fn substitute_value(v: &mut serde_json::Value, at: &str, params: &Params) -> Result<(), String> {
    match v {
        serde_json::Value::String(s) if s.contains("{params.") => {
            *s = substitute(s, params).map_err(|name| {
                let known: Vec<&str> = params.keys().map(String::as_str).collect();
                format!(
                    "{at}: {{params.{name}}} names no parameter of this definition (it has: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )
            })?;
        }
        serde_json::Value::Array(items) => {
            for (j, item) in items.iter_mut().enumerate() {
                substitute_value(item, &format!("{at}[{j}]"), params)?;
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                substitute_value(item, &format!("{at}.{k}"), params)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `text` with each `{params.NAME}` replaced; `Err(NAME)` for a name not in `params`.
fn substitute(text: &str, params: &Params) -> Result<String, String> {
    const OPEN: &str = "{params.";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        let value = params.get(name).ok_or_else(|| name.to_string())?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks a definition as it is listed: [`validate`], except that a field holding a
/// required parameter can only be checked with a run's value (`urls = ["{params.url}"]`):
/// an error there waits for execute, which validates each run with its own values.
pub fn check(def: &JobDefinition) -> Result<(), String> {
    let Err(e) = validate(def) else { return Ok(()) };
    let required: HashSet<&str> =
        def.params.iter().filter(|(_, spec)| spec.default_text().is_none()).map(|(n, _)| n.as_str()).collect();
    let mut deferred = Vec::new();
    for (i, s) in def.steps.iter().enumerate() {
        placeholder_paths(&s.config, &format!("steps[{i}].config"), &required, &mut deferred);
    }
    if deferred.iter().any(|p| e.starts_with(&format!("{p}:"))) { Ok(()) } else { Err(e) }
}

/// Where under `v` a text value names one of `names` (`{params.NAME}`).
fn placeholder_paths(v: &serde_json::Value, at: &str, names: &HashSet<&str>, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if names.iter().any(|n| s.contains(&format!("{{params.{n}}}"))) => {
            out.push(at.to_string());
        }
        serde_json::Value::Array(items) => {
            for (j, item) in items.iter().enumerate() {
                placeholder_paths(item, &format!("{at}[{j}]"), names, out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                placeholder_paths(item, &format!("{at}.{k}"), names, out);
            }
        }
        _ => {}
    }
}

/// Validates a definition with its defaults, and a stand-in value (`x`) for a required
/// parameter, so that `{params.NAME}` is checked wherever it is written. A run is
/// validated again with its own values ([`plan_with`]).
pub fn validate(def: &JobDefinition) -> Result<Plan, String> {
    if def.params.len() > MAX_PARAMS {
        return Err(format!("params: at most {MAX_PARAMS} parameters"));
    }
    for name in def.params.keys() {
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("params.{name}: a name is 1 to 64 of a-z, A-Z, 0-9 and _"));
        }
    }
    if let Some(q) = &def.queue
        && (q.is_empty()
            || q.len() > 64
            || !q.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'))
    {
        return Err(format!("queue: {q:?} is not 1 to 64 of a-z, 0-9, _ and -"));
    }
    if def.tags.len() > 32 {
        return Err("tags: at most 32".into());
    }
    for (i, t) in def.tags.iter().enumerate() {
        if t.is_empty() || t.len() > 64 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b)) {
            return Err(format!("tags[{i}]: {t:?} is not 1 to 64 of a-z, A-Z, 0-9 and _ - . : /"));
        }
    }
    if def.schedule.is_some() || def.timezone.is_some() {
        let expr = def.schedule.as_deref().unwrap_or("@daily");
        super::schedule::Schedule::parse(expr, def.timezone.as_deref())?;
    }
    if def.schedule.is_some() || def.auto_start {
        // A run that starts by itself has only the defaults.
        if let Some((name, _)) = def.params.iter().find(|(_, spec)| spec.default_text().is_none()) {
            let why = if def.schedule.is_some() { "it has a schedule" } else { "it has auto_start" };
            return Err(format!(
                "params.{name}: needs a default: {why}, and a run that starts by itself has no values but the defaults"
            ));
        }
    }
    let sample: Params =
        def.params.iter().map(|(n, spec)| (n.clone(), spec.default_text().unwrap_or_else(|| "x".into()))).collect();
    plan_with(def, &sample)
}

/// Validates a definition whose parameters are already substituted; errors name the field
/// (`steps[1].config.count: …`).
fn validate_resolved(def: &JobDefinition) -> Result<Plan, String> {
    valid_id(&def.id)?;
    if def.name.len() > 200 {
        return Err("name: longer than 200 characters".into());
    }
    let timeout = match &def.timeout {
        None => None,
        Some(t) => Some(
            humantime::parse_duration(t).map_err(|e| format!("timeout: {t:?} is not a duration like \"30m\": {e}"))?,
        ),
    };
    if def.steps.is_empty() {
        return Err("steps: a definition needs at least one step".into());
    }
    if def.steps.len() > MAX_STEPS {
        return Err(format!("steps: at most {MAX_STEPS} steps"));
    }
    let mut names = HashSet::new();
    let mut steps = Vec::new();
    let mut policies = Vec::new();
    for (i, s) in def.steps.iter().enumerate() {
        let at = format!("steps[{i}]");
        if s.name.trim().is_empty() {
            return Err(format!("{at}.name: must not be empty"));
        }
        if !names.insert(s.name.as_str()) {
            return Err(format!("{at}.name: {:?} is used by another step", s.name));
        }
        if !s.config.is_object() {
            return Err(format!("{at}.config: must be a table"));
        }
        steps.push(validate_step(&at, s)?);
        policies.push(step_policy(&at, s)?);
    }
    Ok(Plan { timeout, steps, policies })
}

fn validate_step(at: &str, s: &StepDefinition) -> Result<StepPlan, String> {
    let kind = match &s.step_type {
        StepTypeName::Known(t) => *t,
        StepTypeName::Unknown(other) => {
            return Err(format!("{at}.type: unknown step type {other:?} (expected command, http_fetch or emit)"));
        }
    };
    match kind {
        StepType::Command => {
            let c: CommandSpec = step_config(at, &s.config)?;
            match (&c.run, &c.argv) {
                (Some(_), Some(_)) => return Err(format!("{at}.config: give run or argv, not both")),
                (None, None) => return Err(format!("{at}.config.run: missing (or give argv)")),
                (Some(r), None) if r.trim().is_empty() => {
                    return Err(format!("{at}.config.run: must not be empty"));
                }
                (None, Some(a)) if a.is_empty() || a[0].is_empty() => {
                    return Err(format!("{at}.config.argv: must name a program"));
                }
                _ => {}
            }
            if let Some(items) = &c.for_each
                && (items.is_empty() || items.len() as u64 > MAX_CHILDREN)
            {
                return Err(format!("{at}.config.for_each: 1 to {MAX_CHILDREN} items"));
            }
            Ok(StepPlan::Command(c))
        }
        StepType::HttpFetch => {
            let mut h: HttpSpec = step_config(at, &s.config)?;
            if h.urls.is_empty() || h.urls.len() as u64 > MAX_CHILDREN {
                return Err(format!("{at}.config.urls: 1 to {MAX_CHILDREN} URLs"));
            }
            for (j, u) in h.urls.iter().enumerate() {
                let ok = reqwest::Url::parse(u).map(|u| u.scheme() == "http").unwrap_or(false);
                if !ok {
                    return Err(format!("{at}.config.urls[{j}]: {u:?} is not an http:// URL (https is not built in)"));
                }
            }
            h.timeout_dur = match &h.timeout {
                None => Duration::from_secs(30),
                Some(t) => humantime::parse_duration(t).map_err(|e| format!("{at}.config.timeout: {t:?}: {e}"))?,
            };
            Ok(StepPlan::HttpFetch(h))
        }
        StepType::Emit => {
            let e: EmitSpec = step_config(at, &s.config)?;
            if e.count > MAX_EMIT_COUNT {
                return Err(format!("{at}.config.count: at most {MAX_EMIT_COUNT}"));
            }
            if e.children > MAX_CHILDREN {
                return Err(format!("{at}.config.children: at most {MAX_CHILDREN}"));
            }
            if e.message.len() > 64 * 1024 {
                return Err(format!("{at}.config.message: longer than 64 KiB"));
            }
            Ok(StepPlan::Emit(e))
        }
    }
}

/// A definition as found in the definitions dir or the API, valid or not.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub def: JobDefinition,
    /// Whether it [`check`]s out; each run is planned from `def` with its own values.
    pub valid: Result<(), String>,
    pub source: Source,
    /// False for a file that did not parse: `def` is then a stand-in with the file's name as
    /// its id, and takes no part in the duplicate-id check.
    pub parsed: bool,
}

/// Where a definition comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(std::path::PathBuf),
    Api,
}

impl Source {
    /// As the API lists it: `file:<path>` or `api`.
    pub fn wire(&self) -> String {
        match self {
            Source::File(p) => format!("file:{}", p.display()),
            Source::Api => "api".into(),
        }
    }
}

/// The file's path, or `api`: for messages and logs.
impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Api => f.write_str("api"),
        }
    }
}

/// Reads every `*.toml` in `dir`. A file that does not parse or validate is kept with
/// its error (listed as invalid) so the operator sees it; nothing else is affected.
pub fn load_dir(dir: &Path) -> Vec<Loaded> {
    let mut out: Vec<Loaded> = Vec::new();
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the definitions dir");
            return out;
        }
    };
    entries.sort();
    for path in entries {
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let source = Source::File(path.clone());
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("invalid").to_string();
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|t| toml::from_str::<JobDefinition>(&t).map_err(|e| e.to_string().trim().to_string()));
        let loaded = match parsed {
            Ok(def) => {
                let valid = check(&def);
                Loaded { def, valid, source, parsed: true }
            }
            Err(e) => {
                Loaded { def: JobDefinition { id: stem, ..Default::default() }, valid: Err(e), source, parsed: false }
            }
        };
        out.push(loaded);
    }
    // An id that more than one file defines runs from neither: which one was meant is not
    // for the daemon to guess (the first by file name used to win, silently). Each says
    // where the others are. A file that does not parse (its id is only its file name)
    // keeps its own error and does not count.
    let mut by_id: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (k, l) in out.iter().enumerate().filter(|(_, l)| l.parsed) {
        by_id.entry(l.def.id.clone()).or_default().push(k);
    }
    for (id, same) in by_id.into_iter().filter(|(_, same)| same.len() > 1) {
        let files: Vec<String> = same.iter().map(|&k| out[k].source.to_string()).collect();
        let error = format!(
            "id: {id:?} is defined in more than one file ({}): none of them runs until one is renamed",
            files.join(", ")
        );
        for k in same {
            out[k].valid = Err(error.clone());
        }
    }
    for l in &out {
        if let Err(e) = &l.valid {
            tracing::warn!(file = %l.source, error = %e, "job definition not loaded");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(toml_text: &str) -> Result<Plan, String> {
        let d: JobDefinition = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        validate(&d)
    }

    #[test]
    fn errors_name_the_field() {
        let e = def("id = \"x\"\n[[steps]]\nname = \"a\"\ntype = \"shell\"\n").unwrap_err();
        assert!(e.contains("steps[0].type") && e.contains("shell"), "{e}");
        let e = def("id = \"x\"\n[[steps]]\nname = \"a\"\ntype = \"emit\"\n[steps.config]\ncount = \"many\"\n")
            .unwrap_err();
        assert!(e.starts_with("steps[0].config.count: invalid type"), "{e}");
        let e = def("id = \"x\"\n[[steps]]\nname = \"a\"\ntype = \"command\"\n[steps.config]\nrun = \"true\"\nfor_each = \"abc\"\n")
            .unwrap_err();
        assert!(e.starts_with("steps[0].config.for_each: invalid type"), "{e}");
        let e = def(
            "id = \"x\"\n[[steps]]\nname = \"a\"\ntype = \"command\"\n[steps.config]\nrun = \"x\"\nenv = { A = 1 }\n",
        )
        .unwrap_err();
        assert!(e.starts_with("steps[0].config.env.A: invalid type"), "a nested key is named too: {e}");
        let e = def("id = \"X!\"\n[[steps]]\nname = \"a\"\ntype = \"emit\"\n").unwrap_err();
        assert!(e.starts_with("id:"), "{e}");
        let e = def("id = \"x\"\n[[steps]]\nname = \"a\"\ntype = \"command\"\n").unwrap_err();
        assert!(e.contains("steps[0].config.run"), "{e}");
        let e =
            def("id = \"x\"\n[[steps]]\nname = \"a\"\ntype = \"http_fetch\"\n[steps.config]\nurls = [\"ftp://x\"]\n")
                .unwrap_err();
        assert!(e.contains("steps[0].config.urls[0]"), "{e}");
        let e = def("id = \"x\"\ntimeout = \"soon\"\n[[steps]]\nname = \"a\"\ntype = \"emit\"\n").unwrap_err();
        assert!(e.starts_with("timeout:"), "{e}");
        assert!(
            def("id = \"x\"\n[[steps]]\nname = \"a\"\ntype = \"emit\"\n[steps.config]\ncount = 3\nchildren = 2\n")
                .is_ok()
        );
    }

    #[test]
    fn broken_files_are_listed_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.toml"), "id = \"good\"\n[[steps]]\nname = \"a\"\ntype = \"emit\"\n")
            .unwrap();
        std::fs::write(dir.path().join("broken.toml"), "id = \"broken\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let l = load_dir(dir.path());
        assert_eq!(l.len(), 2);
        let broken = l.iter().find(|l| l.def.id == "broken").unwrap();
        assert!(broken.valid.is_err());
        assert!(l.iter().find(|l| l.def.id == "good").unwrap().valid.is_ok());
    }

    /// A file that parses but has no steps still claims its id: the id is defined twice and
    /// neither file runs (a file without steps used to be taken for one that did not parse).
    #[test]
    fn a_file_without_steps_still_claims_its_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "id = \"x\"\n").unwrap();
        std::fs::write(dir.path().join("b.toml"), "id = \"x\"\n[[steps]]\nname = \"a\"\ntype = \"emit\"\n").unwrap();
        let l = load_dir(dir.path());
        assert_eq!(l.len(), 2);
        for d in &l {
            let e = d.valid.as_ref().unwrap_err();
            assert!(e.contains("more than one file") && e.contains("a.toml") && e.contains("b.toml"), "{e}");
        }
        assert_eq!(l[0].source.wire(), format!("file:{}", dir.path().join("a.toml").display()));
    }

    fn params_def() -> JobDefinition {
        toml::from_str(
            r#"
id = "deploy"
params = { env = "staging", retries = 3, target = { description = "host to deploy to" } }
[[steps]]
name = "push"
type = "command"
[steps.config]
argv = ["deploy", "--env", "{params.env}", "--to", "{params.target}", "-n{params.retries}"]
env = { TARGET = "{params.target}" }
"#,
        )
        .unwrap()
    }

    #[test]
    fn params_take_defaults_and_given_values_and_name_what_is_wrong() {
        let def = params_def();
        assert!(validate(&def).is_ok(), "a required parameter does not make the definition invalid");
        let given: BTreeMap<String, ParamValue> =
            [("target".to_string(), ParamValue::Text("db1".into())), ("retries".into(), ParamValue::Int(5))].into();
        let p = resolve_params(&def, &given).unwrap();
        assert_eq!(p["env"], "staging");
        assert_eq!(p["target"], "db1");
        assert_eq!(p["retries"], "5");
        let Plan { steps, .. } = plan_with(&def, &p).unwrap();
        let StepPlan::Command(c) = &steps[0] else { panic!("command") };
        assert_eq!(c.argv.as_deref().unwrap(), ["deploy", "--env", "staging", "--to", "db1", "-n5"]);
        assert_eq!(c.env["TARGET"], "db1", "env values are substituted, keys are not");

        let e = resolve_params(&def, &BTreeMap::new()).unwrap_err();
        assert_eq!(e, "params.target: required (it has no default)");
        let e = resolve_params(&def, &[("tagret".to_string(), ParamValue::Text("x".into()))].into()).unwrap_err();
        assert!(e.starts_with("params.tagret: no such parameter") && e.contains("env, retries, target"), "{e}");
    }

    #[test]
    fn an_unknown_placeholder_names_where_it_is_written() {
        let e = def(
            "id = \"x\"\nparams = { env = \"a\" }\n[[steps]]\nname = \"a\"\ntype = \"command\"\n[steps.config]\nargv = [\"echo\", \"{params.nope}\"]\n",
        )
        .unwrap_err();
        assert!(e.starts_with("steps[0].config.argv[1]: {params.nope} names no parameter"), "{e}");
        assert!(e.contains("(it has: env)"), "{e}");
        assert_eq!(
            substitute("a {params.x} b {params.x}{params.y", &[("x".into(), "1".into())].into()),
            Ok("a 1 b 1{params.y".into())
        );
        let e = def("id = \"x\"\nparams = { \"bad name\" = \"a\" }\n[[steps]]\nname = \"a\"\ntype = \"emit\"\n")
            .unwrap_err();
        assert!(e.starts_with("params.bad name:"), "{e}");
    }

    #[test]
    fn backoff_grows_to_its_cap_and_jitter_stays_within_half() {
        let secs = Duration::from_secs;
        let r = Retry { max_attempts: 10, initial: secs(1), max_delay: secs(5), jitter: false, ..Retry::default() };
        let waits: Vec<Duration> = (1..=5).map(|a| r.delay(a, 0.0)).collect();
        assert_eq!(waits, [secs(1), secs(2), secs(4), secs(5), secs(5)]);
        assert_eq!(r.delay(u32::MAX, 0.0), secs(5), "no overflow");
        let fixed = Retry { backoff: quaero_shared::Backoff::Fixed, ..r };
        assert_eq!(fixed.delay(7, 0.0), secs(1));
        let j = Retry { jitter: true, ..r };
        assert_eq!(j.delay(2, 0.0), secs(1));
        assert_eq!(j.delay(2, 0.999_999), Duration::from_secs_f64(2.0 * (0.5 + 0.5 * 0.999_999)));
    }

    #[test]
    fn retry_and_timeout_errors_name_the_field() {
        let step = |extra: &str| def(&format!("id = \"x\"\n[[steps]]\nname = \"a\"\ntype = \"emit\"\n{extra}\n"));
        let e = step("retry = { max_attempts = 0 }").unwrap_err();
        assert_eq!(e, "steps[0].retry.max_attempts: 0 is not between 1 and 100");
        let e = step("retry = { max_attempts = 2, initial = \"soon\" }").unwrap_err();
        assert!(e.starts_with("steps[0].retry.initial: \"soon\" is not a duration"), "{e}");
        let e = step("timeout = \"0s\"").unwrap_err();
        assert_eq!(e, "steps[0].timeout: must be more than 0");
        let p = step("retry = { max_attempts = 4, backoff = \"fixed\", initial = \"2s\" }\ntimeout = \"1m\"").unwrap();
        assert_eq!(p.policies[0].retry.max_attempts, 4);
        assert_eq!(p.policies[0].retry.initial, Duration::from_secs(2));
        assert_eq!(p.policies[0].timeout, Some(Duration::from_secs(60)));
    }
}
