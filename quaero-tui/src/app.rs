//! Dashboard state and its one entry point, [`App::update`]: a pure function of the state,
//! a message and the current instant, returning the network commands to run. Nothing here
//! touches the terminal, the network or the clock, so tests drive it with plain values.

use std::collections::{BTreeMap, HashMap};

use quaero_shared::{
    DefinitionInfo, Event, ExecuteRequest, Job, JobKind, JobStatus, JobsList, LogsResponse, ParamSpec, ParamValue,
    QueueInfo, ServerMessage, Stats, StepSummary,
};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::time::Instant;

use crate::client::{LinkEvent, STEP_REFETCH_EVERY, Throttle};
/// Managers list page size.
pub const PAGE_SIZE: u32 = 50;
/// Events shown in a step's pane.
pub const EVENTS_SHOWN: u32 = 100;

/// Everything that can happen to the app.
#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    /// Time passed; `wall_ms` is the wall clock (ms since the epoch) for job ages.
    Tick {
        wall_ms: i64,
    },
    Resize,
    Link(LinkEvent),
    Managers(Result<JobsList, String>),
    Stats(Result<Stats, String>),
    Manager {
        id: String,
        result: Result<Box<Job>, String>,
    },
    Logs {
        step_id: String,
        result: Result<LogsResponse, String>,
    },
    /// An older page of a step's events (history, loaded at the top of the pane).
    Older {
        step_id: String,
        result: Result<LogsResponse, String>,
    },
    Definitions(Result<Vec<DefinitionInfo>, String>),
    Queues(Result<Vec<QueueInfo>, String>),
    /// A run asked for from the run dialog started (the text says which), or was refused:
    /// the dialog opens again with what was typed and the daemon's reason.
    Executed(Result<String, String>),
    /// An action finished; the text goes to the status line.
    ActionDone(Result<String, String>),
}

/// Work for the network task.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    LoadManagers {
        status: Option<JobStatus>,
        offset: u64,
    },
    LoadStats,
    LoadManager(String),
    /// The last [`EVENTS_SHOWN`] events of a step, oldest first.
    LoadLogs(String),
    /// The [`EVENTS_SHOWN`] events before `before`, oldest first (scrolled to the top).
    LoadOlder {
        step_id: String,
        before: u64,
    },
    LoadDefinitions,
    LoadQueues,
    Execute {
        definition: String,
        req: ExecuteRequest,
    },
    SetEnabled {
        definition: String,
        enabled: bool,
    },
    SetQueuePaused {
        queue: String,
        paused: bool,
    },
    Cancel(String),
    Delete(String),
    /// `DELETE /api/jobs?status=…`: every finished run of these statuses.
    DeleteFinished(String),
    Rerun(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    Connecting,
    Connected,
    Reconnecting { retry_at: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Steps,
    Events,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Managers,
    Manager {
        id: String,
        focus: Focus,
        step_sel: usize,
        /// The step the user opened; when none, a running or failed step opens by itself.
        opened: Option<String>,
    },
    /// The definitions: schedule, next run, enabled; run one, enable or disable it.
    Definitions {
        selected: usize,
    },
    /// The named queues: counts; pause or resume one.
    Queues {
        selected: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cancel,
    Delete,
    /// Every finished run of the statuses in `job_id` (comma-separated).
    DeleteFinished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickerKind {
    Run,
    Filter,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    Help,
    Confirm {
        action: Action,
        job_id: String,
    },
    Picker {
        kind: PickerKind,
        selected: usize,
    },
    /// Run a definition: a field per parameter, then an optional delay.
    Params(ParamsForm),
}

/// The run dialog's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamsForm {
    pub definition: String,
    pub fields: Vec<ParamField>,
    /// The field being edited (`fields.len()`: the delay).
    pub at: usize,
    pub delay: String,
    /// Why the daemon refused it the last time.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamField {
    pub name: String,
    pub value: String,
    /// No default: a value must be given.
    pub required: bool,
    pub description: String,
}

/// The longest value typed into a field.
const FIELD_MAX: usize = 500;

impl ParamsForm {
    pub fn new(def: &DefinitionInfo) -> ParamsForm {
        let fields = def
            .params
            .iter()
            .map(|(name, spec)| ParamField {
                name: name.clone(),
                value: spec.default_text().unwrap_or_default(),
                required: spec.default_text().is_none(),
                description: match spec {
                    ParamSpec::Declared(d) => d.description.clone(),
                    ParamSpec::Default(_) => String::new(),
                },
            })
            .collect();
        ParamsForm { definition: def.id.clone(), fields, at: 0, delay: String::new(), error: None }
    }

    fn current(&mut self) -> &mut String {
        match self.fields.get_mut(self.at) {
            Some(f) => &mut f.value,
            None => &mut self.delay,
        }
    }

    /// The request: every filled field as text. An empty field is left out: an optional
    /// one keeps its default, and for a required one the daemon answers naming it.
    pub fn request(&self) -> ExecuteRequest {
        let params: BTreeMap<String, ParamValue> = self
            .fields
            .iter()
            .filter(|f| !f.value.is_empty())
            .map(|f| (f.name.clone(), ParamValue::Text(f.value.clone())))
            .collect();
        let delay = Some(self.delay.trim().to_string()).filter(|d| !d.is_empty());
        ExecuteRequest { params, delay, run_at: None }
    }
}

/// The events pane of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSearch {
    pub text: String,
    pub typing: bool,
}

#[derive(Debug, Clone, Default)]
pub struct StepEvents {
    /// Older pages loaded by scrolling to the top, oldest first, all before `events`.
    pub older: Vec<Event>,
    /// The first event is loaded (an older page came back empty).
    pub older_done: bool,
    pub older_loading: bool,
    /// The newest events, as the last fetch returned them.
    pub events: Vec<Event>,
    pub loaded: bool,
    /// Lines scrolled up from the bottom; 0 follows the tail.
    pub scroll_back: usize,
    pub throttle: Throttle,
    pub error: Option<String>,
}

pub struct App {
    pub conn: Conn,
    pub stats: Option<Stats>,
    pub managers: Vec<Job>,
    pub total: u64,
    pub offset: u64,
    pub selected: usize,
    pub status_filter: Option<JobStatus>,
    pub definitions: Vec<DefinitionInfo>,
    pub queues: Vec<QueueInfo>,
    /// The run dialog whose request is in flight, to reopen if it is refused.
    sent_form: Option<ParamsForm>,
    defs_throttle: Throttle,
    /// Managers with their steps, by id: fetched on demand, then kept current by the socket.
    pub details: HashMap<String, Job>,
    pub events: HashMap<String, StepEvents>,
    pub view: View,
    pub overlay: Option<Overlay>,
    pub status_line: Option<String>,
    pub should_quit: bool,
    pub color: bool,
    /// The events pane wraps long events (the default: a failed fetch's reason comes at
    /// its end) or shows one line each, cut at the pane's edge (`w` switches).
    pub wrap_events: bool,
    /// `/` in the events pane: only the loaded events containing this text (ASCII case
    /// ignored), matches marked; `typing` while it is being written.
    pub search: Option<EventSearch>,
    /// Last instant seen by `update`, for countdowns in the header.
    pub now: Instant,
    /// Wall clock (ms since the epoch) for ages; 0 until the first tick.
    pub wall_ms: i64,
    managers_throttle: Throttle,
}

impl App {
    pub fn new(color: bool, now: Instant) -> Self {
        Self {
            conn: Conn::Connecting,
            stats: None,
            managers: Vec::new(),
            total: 0,
            offset: 0,
            selected: 0,
            status_filter: None,
            definitions: Vec::new(),
            queues: Vec::new(),
            sent_form: None,
            defs_throttle: Throttle::default(),
            details: HashMap::new(),
            events: HashMap::new(),
            view: View::Managers,
            overlay: None,
            status_line: None,
            wrap_events: true,
            search: None,
            should_quit: false,
            color,
            now,
            wall_ms: 0,
            managers_throttle: Throttle::default(),
        }
    }

    /// The first loads, before any message.
    pub fn init(&mut self) -> Vec<Cmd> {
        vec![self.load_managers_cmd(), Cmd::LoadStats, Cmd::LoadDefinitions, Cmd::LoadQueues]
    }

    pub fn update(&mut self, msg: Msg, now: Instant) -> Vec<Cmd> {
        self.now = now;
        let mut cmds = Vec::new();
        match msg {
            Msg::Key(k) => self.on_key(k, now, &mut cmds),
            Msg::Tick { wall_ms } => {
                self.wall_ms = wall_ms;
                // A next run that came: the definitions view shows the one after it.
                let passed = |d: &DefinitionInfo| {
                    d.next_run_at.as_deref().and_then(crate::text::parse_rfc3339_ms).is_some_and(|t| t <= wall_ms)
                };
                if matches!(self.view, View::Definitions { .. })
                    && self.definitions.iter().any(passed)
                    && self.defs_throttle.request(now, STEP_REFETCH_EVERY, false)
                {
                    cmds.push(Cmd::LoadDefinitions);
                }
            }
            Msg::Resize => {}
            Msg::Link(ev) => self.on_link(ev, now, &mut cmds),
            Msg::Managers(Ok(list)) => {
                self.total = list.total_count;
                self.managers = list.jobs;
                self.selected = self.selected.min(self.managers.len().saturating_sub(1));
                // Details give the "step i/N" and progress columns; each manager is fetched
                // once, then the socket keeps it current.
                for m in &self.managers {
                    if !self.details.contains_key(&m.id) {
                        cmds.push(Cmd::LoadManager(m.id.clone()));
                    }
                }
            }
            Msg::Stats(Ok(s)) => self.stats = Some(s),
            Msg::Manager { id, result: Ok(job) } => {
                if let Some(row) = self.managers.iter_mut().find(|m| m.id == id) {
                    *row = Job { steps: None, ..(*job).clone() };
                }
                self.details.insert(id, *job);
            }
            Msg::Manager { id, result: Err(e) } => {
                self.status_line = Some(format!("{id}: {e}"));
            }
            Msg::Logs { step_id, result } => {
                let pane = self.events.entry(step_id).or_default();
                match result {
                    Ok(resp) => {
                        let old_last = pane.events.last().map(|e| e.seq).unwrap_or(0);
                        let mut logs = resp.logs;
                        // Order is by seq, whatever order the server listed them in.
                        logs.sort_by_key(|e| e.seq);
                        if pane.scroll_back > 0 {
                            // Keep the lines in view still while the user reads them.
                            let new = logs.iter().filter(|e| e.seq > old_last).count();
                            pane.scroll_back = (pane.scroll_back + new).min(pane.older.len() + logs.len());
                        }
                        if !pane.older.is_empty() {
                            // History was loaded: what slides out of the newest page joins it,
                            // unless a gap opened (more new events than a page).
                            let first_new = logs.first().map_or(u64::MAX, |e| e.seq);
                            if pane.events.first().is_some_and(|e| e.seq <= first_new) {
                                let slid = pane.events.iter().filter(|e| e.seq < first_new).cloned();
                                pane.older.extend(slid);
                            } else {
                                pane.older.clear();
                                pane.older_done = false;
                            }
                        }
                        pane.events = logs;
                        pane.loaded = true;
                        pane.error = None;
                    }
                    Err(e) => pane.error = Some(e),
                }
            }
            Msg::Older { step_id, result } => {
                let pane = self.events.entry(step_id).or_default();
                pane.older_loading = false;
                match result {
                    Ok(resp) => {
                        let first = pane.older.first().or(pane.events.first()).map_or(u64::MAX, |e| e.seq);
                        let mut page: Vec<Event> = resp.logs.into_iter().filter(|e| e.seq < first).collect();
                        page.sort_by_key(|e| e.seq);
                        if page.is_empty() {
                            pane.older_done = true;
                        }
                        page.append(&mut pane.older);
                        pane.older = page;
                    }
                    Err(e) => pane.error = Some(e),
                }
            }
            Msg::Definitions(Ok(defs)) => {
                self.definitions = defs;
                if let View::Definitions { selected } = &mut self.view {
                    *selected = (*selected).min(self.definitions.len().saturating_sub(1));
                }
            }
            Msg::Queues(Ok(q)) => self.queues = q,
            Msg::Executed(result) => {
                let form = self.sent_form.take();
                match (result, form) {
                    (Err(e), Some(mut form)) => {
                        form.error = Some(e);
                        self.overlay = Some(Overlay::Params(form));
                    }
                    (Ok(m) | Err(m), _) => self.status_line = Some(m),
                }
                cmds.push(Cmd::LoadStats);
                self.managers_throttle.request(now, STEP_REFETCH_EVERY, true);
                cmds.push(self.load_managers_cmd());
            }
            Msg::ActionDone(result) => {
                self.status_line = Some(match result {
                    Ok(m) | Err(m) => m,
                });
                cmds.push(Cmd::LoadStats);
                match self.view {
                    View::Definitions { .. } => cmds.push(Cmd::LoadDefinitions),
                    View::Queues { .. } => cmds.push(Cmd::LoadQueues),
                    _ => {}
                }
                self.managers_throttle.request(now, STEP_REFETCH_EVERY, true);
                cmds.push(self.load_managers_cmd());
            }
            Msg::Managers(Err(e)) | Msg::Stats(Err(e)) | Msg::Definitions(Err(e)) | Msg::Queues(Err(e)) => {
                self.status_line = Some(e);
            }
        }
        self.after_update(now, &mut cmds);
        cmds
    }

    /// Effects that follow from the state whatever changed it: the shown step's events get
    /// loaded, and throttled fetches that came due run.
    fn after_update(&mut self, now: Instant, cmds: &mut Vec<Cmd>) {
        if let Some(step) = self.shown_step() {
            let pane = self.events.entry(step.clone()).or_default();
            if !pane.loaded && pane.throttle.never_fetched() {
                pane.throttle.request(now, STEP_REFETCH_EVERY, true);
                cmds.push(Cmd::LoadLogs(step.clone()));
            } else if pane.throttle.poll(now) {
                cmds.push(Cmd::LoadLogs(step));
            }
        }
        if self.managers_throttle.poll(now) {
            cmds.push(self.load_managers_cmd());
        }
        if self.defs_throttle.poll(now) {
            cmds.push(Cmd::LoadDefinitions);
        }
    }

    fn load_managers_cmd(&self) -> Cmd {
        Cmd::LoadManagers { status: self.status_filter, offset: self.offset }
    }

    fn reload_managers(&mut self, now: Instant, cmds: &mut Vec<Cmd>) {
        if self.managers_throttle.request(now, STEP_REFETCH_EVERY, false) {
            cmds.push(self.load_managers_cmd());
        }
    }

    fn on_link(&mut self, ev: LinkEvent, now: Instant, cmds: &mut Vec<Cmd>) {
        match ev {
            LinkEvent::Connected => {
                self.conn = Conn::Connected;
                // Triggers were missed while away (and the first loads may have failed
                // before the daemon was up): reload what is on screen.
                if self.definitions.is_empty() || matches!(self.view, View::Definitions { .. }) {
                    cmds.push(Cmd::LoadDefinitions);
                }
                cmds.push(Cmd::LoadQueues);
                cmds.push(Cmd::LoadStats);
                self.managers_throttle.request(now, STEP_REFETCH_EVERY, true);
                cmds.push(self.load_managers_cmd());
                if let View::Manager { id, .. } = &self.view {
                    cmds.push(Cmd::LoadManager(id.clone()));
                }
                if let Some(step) = self.shown_step() {
                    let pane = self.events.entry(step.clone()).or_default();
                    if pane.throttle.request(now, STEP_REFETCH_EVERY, true) {
                        cmds.push(Cmd::LoadLogs(step));
                    }
                }
            }
            LinkEvent::Disconnected { retry_at, .. } => self.conn = Conn::Reconnecting { retry_at },
            LinkEvent::Message(m) => self.on_server(m, now, cmds),
        }
    }

    fn on_server(&mut self, m: ServerMessage, now: Instant, cmds: &mut Vec<Cmd>) {
        match m {
            ServerMessage::Hello(_) => self.conn = Conn::Connected,
            ServerMessage::RefreshStepEvents(r) => {
                if let Some(step) = self.shown_step()
                    && r.step_ids.contains(&step)
                {
                    let pane = self.events.entry(step.clone()).or_default();
                    if pane.throttle.request(now, STEP_REFETCH_EVERY, r.finished) {
                        cmds.push(Cmd::LoadLogs(step));
                    }
                }
            }
            ServerMessage::JobStatusChange(c) => match c.kind {
                JobKind::Manager => {
                    // A run began or ended: the definitions view's last runs moved.
                    if matches!(self.view, View::Definitions { .. })
                        && self.defs_throttle.request(now, STEP_REFETCH_EVERY, false)
                    {
                        cmds.push(Cmd::LoadDefinitions);
                    }
                    if let Some(d) = self.details.get_mut(&c.job_id) {
                        d.status = c.status;
                        d.error = c.error.clone().or(d.error.take());
                        if c.status.is_terminal() {
                            // The final duration and step errors come with the job.
                            cmds.push(Cmd::LoadManager(c.job_id.clone()));
                        }
                    }
                    match self.managers.iter_mut().find(|m| m.id == c.job_id) {
                        Some(row) if !c.status.is_terminal() => row.status = c.status,
                        // New managers appear, finished ones get their duration: reload.
                        _ => {
                            if let Some(row) = self.managers.iter_mut().find(|m| m.id == c.job_id) {
                                row.status = c.status;
                            }
                            self.reload_managers(now, cmds);
                        }
                    }
                }
                _ => {
                    if let Some(step) = self.step_mut(&c.manager_id, &c.job_id) {
                        step.status = c.status;
                        if c.error.is_some() {
                            step.error = c.error;
                        }
                    } else if matches!(&self.view, View::Manager { id, .. } if *id == c.manager_id)
                        || self.managers.iter().any(|m| m.id == c.manager_id)
                    {
                        cmds.push(Cmd::LoadManager(c.manager_id));
                    }
                }
            },
            ServerMessage::StepProgress(p) => {
                if let Some(step) = self.step_mut(&p.manager_id, &p.step_id) {
                    step.child_counts = p.child_counts;
                }
            }
            ServerMessage::QueueStats(s) => self.stats = Some(s),
            ServerMessage::Queues(q) => self.queues = q.queues,
            ServerMessage::JobLog(_) | ServerMessage::Error(_) => {}
        }
    }

    fn step_mut(&mut self, manager_id: &str, step_id: &str) -> Option<&mut StepSummary> {
        self.details.get_mut(manager_id)?.steps.as_mut()?.iter_mut().find(|s| s.id == step_id)
    }

    /// Steps of the open manager, in order.
    pub fn open_steps(&self) -> &[StepSummary] {
        match &self.view {
            View::Manager { id, .. } => self.details.get(id).and_then(|d| d.steps.as_deref()).unwrap_or(&[]),
            View::Managers | View::Definitions { .. } | View::Queues { .. } => &[],
        }
    }

    /// The step whose events pane is shown: the one the user opened, else a running step,
    /// else a failed one.
    pub fn shown_step(&self) -> Option<String> {
        let View::Manager { opened, .. } = &self.view else {
            return None;
        };
        if opened.is_some() {
            return opened.clone();
        }
        let steps = self.open_steps();
        steps
            .iter()
            .find(|s| s.status == JobStatus::Running)
            .or_else(|| steps.iter().find(|s| s.status == JobStatus::Failed))
            .map(|s| s.id.clone())
    }

    /// The manager that `c`, `d` and `R` act on.
    fn target_manager(&self) -> Option<String> {
        match &self.view {
            View::Managers => self.managers.get(self.selected).map(|m| m.id.clone()),
            View::Manager { id, .. } => Some(id.clone()),
            View::Definitions { .. } | View::Queues { .. } => None,
        }
    }

    /// Runs a definition: at once if it takes no parameters, else through the run dialog.
    fn run_definition(&mut self, index: usize, cmds: &mut Vec<Cmd>) {
        let Some(def) = self.definitions.get(index) else { return };
        if !def.valid {
            self.status_line = Some(format!("{} is not valid", def.id));
        } else if !def.enabled {
            self.status_line =
                Some(format!("{} is disabled; press e in the definitions view (D) to enable it", def.id));
        } else if def.params.is_empty() {
            cmds.push(Cmd::Execute { definition: def.id.clone(), req: ExecuteRequest::default() });
        } else {
            self.overlay = Some(Overlay::Params(ParamsForm::new(def)));
        }
    }

    pub fn picker_len(&self, kind: PickerKind) -> usize {
        match kind {
            PickerKind::Run => self.definitions.len(),
            PickerKind::Filter => JobStatus::ALL.len() + 1,
        }
    }

    fn on_key(&mut self, k: KeyEvent, now: Instant, cmds: &mut Vec<Cmd>) {
        if k.kind != KeyEventKind::Press {
            return;
        }
        if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
            self.should_quit = true;
            return;
        }
        if let Some(overlay) = self.overlay.take() {
            self.on_overlay_key(overlay, k, now, cmds);
            return;
        }
        self.status_line = None;
        let in_events = matches!(self.view, View::Manager { focus: Focus::Events, .. });
        if let Some(s) = self.search.as_mut().filter(|s| s.typing) {
            match k.code {
                KeyCode::Char(c) => s.text.push(c),
                KeyCode::Backspace => {
                    s.text.pop();
                }
                KeyCode::Enter => s.typing = false,
                KeyCode::Esc => self.search = None,
                _ => {}
            }
            if self.search.as_ref().is_some_and(|s| !s.typing && s.text.is_empty()) {
                self.search = None;
            }
            return;
        }
        match k.code {
            KeyCode::Char('/') if in_events => {
                self.search = Some(EventSearch { text: String::new(), typing: true });
                return;
            }
            KeyCode::Esc if in_events && self.search.is_some() => {
                self.search = None;
                return;
            }
            _ => {}
        }
        match k.code {
            KeyCode::Char('q') => self.should_quit = true,
            KeyCode::Char('?') => self.overlay = Some(Overlay::Help),
            KeyCode::Char('r') => {
                cmds.push(Cmd::LoadDefinitions);
                self.overlay = Some(Overlay::Picker { kind: PickerKind::Run, selected: 0 });
            }
            KeyCode::Char('/') => {
                let selected =
                    self.status_filter.and_then(|s| JobStatus::ALL.iter().position(|x| *x == s)).map_or(0, |i| i + 1);
                self.overlay = Some(Overlay::Picker { kind: PickerKind::Filter, selected });
            }
            KeyCode::Char('c') => {
                if let Some(job_id) = self.target_manager() {
                    self.overlay = Some(Overlay::Confirm { action: Action::Cancel, job_id });
                }
            }
            KeyCode::Char('d') => {
                if let Some(job_id) = self.target_manager() {
                    self.overlay = Some(Overlay::Confirm { action: Action::Delete, job_id });
                }
            }
            KeyCode::Char('R') => {
                if let Some(id) = self.target_manager() {
                    cmds.push(Cmd::Rerun(id));
                }
            }
            KeyCode::Char('D') => {
                cmds.push(Cmd::LoadDefinitions);
                self.view = View::Definitions { selected: 0 };
            }
            KeyCode::Char('Q') => {
                cmds.push(Cmd::LoadQueues);
                self.view = View::Queues { selected: 0 };
            }
            _ => match self.view.clone() {
                View::Managers => self.on_managers_key(k, now, cmds),
                View::Manager { .. } => self.on_manager_key(k, cmds),
                View::Definitions { selected } => self.on_definitions_key(k, selected, cmds),
                View::Queues { selected } => self.on_queues_key(k, selected, cmds),
            },
        }
    }

    fn on_overlay_key(&mut self, overlay: Overlay, k: KeyEvent, now: Instant, cmds: &mut Vec<Cmd>) {
        match overlay {
            Overlay::Help => {} // any key closes it
            Overlay::Confirm { action, job_id } => match k.code {
                KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => {
                    cmds.push(match action {
                        Action::Cancel => Cmd::Cancel(job_id.clone()),
                        Action::Delete => Cmd::Delete(job_id.clone()),
                        Action::DeleteFinished => Cmd::DeleteFinished(job_id.clone()),
                    });
                    if action == Action::Delete && matches!(&self.view, View::Manager { id, .. } if *id == job_id) {
                        self.view = View::Managers;
                    }
                }
                KeyCode::Char('n') | KeyCode::Esc | KeyCode::Char('q') => {}
                _ => self.overlay = Some(Overlay::Confirm { action, job_id }),
            },
            Overlay::Params(mut form) => {
                let fields = form.fields.len() + 1;
                match k.code {
                    KeyCode::Esc => return,
                    KeyCode::Enter => {
                        cmds.push(Cmd::Execute { definition: form.definition.clone(), req: form.request() });
                        form.error = None;
                        self.sent_form = Some(form);
                        return;
                    }
                    KeyCode::Tab | KeyCode::Down => form.at = (form.at + 1) % fields,
                    KeyCode::BackTab | KeyCode::Up => form.at = (form.at + fields - 1) % fields,
                    KeyCode::Backspace => {
                        form.current().pop();
                    }
                    KeyCode::Char(c) if !c.is_control() && form.current().chars().count() < FIELD_MAX => {
                        form.current().push(c);
                    }
                    _ => {}
                }
                self.overlay = Some(Overlay::Params(form));
            }
            Overlay::Picker { kind, selected } => {
                let selected = match k.code {
                    KeyCode::Esc | KeyCode::Char('q') => return,
                    KeyCode::Enter => {
                        self.pick(kind, selected, now, cmds);
                        return;
                    }
                    code => moved(code, selected, self.picker_len(kind)).unwrap_or(selected),
                };
                self.overlay = Some(Overlay::Picker { kind, selected });
            }
        }
    }

    fn pick(&mut self, kind: PickerKind, selected: usize, now: Instant, cmds: &mut Vec<Cmd>) {
        match kind {
            PickerKind::Run => self.run_definition(selected, cmds),
            PickerKind::Filter => {
                self.status_filter = selected.checked_sub(1).and_then(|i| JobStatus::ALL.get(i).copied());
                self.offset = 0;
                self.selected = 0;
                self.managers_throttle.request(now, STEP_REFETCH_EVERY, true);
                cmds.push(self.load_managers_cmd());
            }
        }
    }

    fn on_managers_key(&mut self, k: KeyEvent, now: Instant, cmds: &mut Vec<Cmd>) {
        if let Some(s) = moved(k.code, self.selected, self.managers.len()) {
            self.selected = s;
            return;
        }
        match k.code {
            KeyCode::Char('X') => match self.status_filter {
                None => {
                    let all = "completed,failed,cancelled".to_string();
                    self.overlay = Some(Overlay::Confirm { action: Action::DeleteFinished, job_id: all });
                }
                Some(s) if s.is_terminal() => {
                    let job_id = s.as_str().to_string();
                    self.overlay = Some(Overlay::Confirm { action: Action::DeleteFinished, job_id });
                }
                Some(s) => self.status_line = Some(format!("only finished runs can be deleted, not {s} ones")),
            },
            KeyCode::PageDown | KeyCode::Char('n') if self.offset + (PAGE_SIZE as u64) < self.total => {
                self.offset += PAGE_SIZE as u64;
                self.selected = 0;
                self.managers_throttle.request(now, STEP_REFETCH_EVERY, true);
                cmds.push(self.load_managers_cmd());
            }
            KeyCode::PageUp | KeyCode::Char('p') if self.offset > 0 => {
                self.offset = self.offset.saturating_sub(PAGE_SIZE as u64);
                self.selected = 0;
                self.managers_throttle.request(now, STEP_REFETCH_EVERY, true);
                cmds.push(self.load_managers_cmd());
            }
            KeyCode::Enter | KeyCode::Char('l') | KeyCode::Right => {
                if let Some(m) = self.managers.get(self.selected) {
                    let id = m.id.clone();
                    // Always refetch: the cached detail may predate steps that started.
                    cmds.push(Cmd::LoadManager(id.clone()));
                    self.view = View::Manager { id, focus: Focus::Steps, step_sel: 0, opened: None };
                }
            }
            _ => {}
        }
    }

    fn on_definitions_key(&mut self, k: KeyEvent, selected: usize, cmds: &mut Vec<Cmd>) {
        let selected = match k.code {
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Char('h') | KeyCode::Left => {
                self.view = View::Managers;
                return;
            }
            KeyCode::Enter => {
                self.run_definition(selected, cmds);
                selected
            }
            KeyCode::Char('e') => {
                if let Some(d) = self.definitions.get(selected) {
                    cmds.push(Cmd::SetEnabled { definition: d.id.clone(), enabled: !d.enabled });
                }
                selected
            }
            code => moved(code, selected, self.definitions.len()).unwrap_or(selected),
        };
        self.view = View::Definitions { selected };
    }

    fn on_queues_key(&mut self, k: KeyEvent, selected: usize, cmds: &mut Vec<Cmd>) {
        let selected = match k.code {
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Char('h') | KeyCode::Left => {
                self.view = View::Managers;
                return;
            }
            KeyCode::Char('p') | KeyCode::Enter => {
                if let Some(q) = self.queues.get(selected) {
                    cmds.push(Cmd::SetQueuePaused { queue: q.name.clone(), paused: !q.paused });
                }
                selected
            }
            code => moved(code, selected, self.queues.len()).unwrap_or(selected),
        };
        self.view = View::Queues { selected };
    }

    fn on_manager_key(&mut self, k: KeyEvent, cmds: &mut Vec<Cmd>) {
        if k.code == KeyCode::Char('w') {
            // The events pane is on screen whichever pane has the focus.
            self.wrap_events = !self.wrap_events;
            return;
        }
        let steps_len = self.open_steps().len();
        let shown = self.shown_step();
        let View::Manager { focus, step_sel, opened, .. } = &mut self.view else {
            return;
        };
        match (*focus, k.code) {
            (_, KeyCode::Esc | KeyCode::Backspace | KeyCode::Char('h') | KeyCode::Left) => {
                if *focus == Focus::Events {
                    *focus = Focus::Steps;
                } else {
                    self.view = View::Managers;
                }
            }
            (Focus::Steps, KeyCode::Char('j') | KeyCode::Down) => {
                *step_sel = (*step_sel + 1).min(steps_len.saturating_sub(1));
            }
            (Focus::Steps, KeyCode::Char('k') | KeyCode::Up) => *step_sel = step_sel.saturating_sub(1),
            (Focus::Steps, KeyCode::Char('g') | KeyCode::Home) => *step_sel = 0,
            (Focus::Steps, KeyCode::Char('G') | KeyCode::End) => *step_sel = steps_len.saturating_sub(1),
            (Focus::Steps, KeyCode::Enter | KeyCode::Char('l') | KeyCode::Right) => {
                let sel = *step_sel;
                if let Some(id) = self.open_steps().get(sel).map(|s| s.id.clone()) {
                    // Opening loads afresh (after_update sees an unloaded pane).
                    let pane = self.events.entry(id.clone()).or_default();
                    pane.loaded = false;
                    pane.throttle = Throttle::default();
                    pane.scroll_back = 0;
                    pane.older.clear();
                    pane.older_done = false;
                    if let View::Manager { focus, opened, .. } = &mut self.view {
                        *opened = Some(id);
                        *focus = Focus::Events;
                    }
                }
            }
            (Focus::Events, code) => {
                let _ = opened;
                let Some(step) = shown else { return };
                let pane = self.events.entry(step.clone()).or_default();
                let total = pane.older.len() + pane.events.len();
                let max = total.saturating_sub(1);
                // Scrolling up at the oldest line loaded asks for the page before it.
                let up = matches!(
                    code,
                    KeyCode::Char('k') | KeyCode::Up | KeyCode::PageUp | KeyCode::Char('g') | KeyCode::Home
                );
                if up
                    && pane.scroll_back >= max
                    && !pane.older_done
                    && !pane.older_loading
                    && let Some(first) = pane.older.first().or(pane.events.first())
                {
                    pane.older_loading = true;
                    cmds.push(Cmd::LoadOlder { step_id: step, before: first.seq });
                }
                pane.scroll_back = match code {
                    KeyCode::Char('k') | KeyCode::Up => (pane.scroll_back + 1).min(max),
                    KeyCode::Char('j') | KeyCode::Down => pane.scroll_back.saturating_sub(1),
                    KeyCode::PageUp => (pane.scroll_back + 10).min(max),
                    KeyCode::PageDown => pane.scroll_back.saturating_sub(10),
                    KeyCode::Char('g') | KeyCode::Home => max,
                    KeyCode::Char('G') | KeyCode::End => 0,
                    _ => pane.scroll_back,
                };
            }
            _ => {}
        }
    }
}

/// Where a list's selection moves on `code` (j/k, arrows, g/G, Home/End) in a list of
/// `len` rows; `None` for any other key.
fn moved(code: KeyCode, selected: usize, len: usize) -> Option<usize> {
    let last = len.saturating_sub(1);
    Some(match code {
        KeyCode::Char('j') | KeyCode::Down => (selected + 1).min(last),
        KeyCode::Char('k') | KeyCode::Up => selected.saturating_sub(1),
        KeyCode::Char('g') | KeyCode::Home => 0,
        KeyCode::Char('G') | KeyCode::End => last,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use quaero_shared::{JobStatusChange, Level, RefreshStepEvents};
    use std::time::Duration;

    fn key(c: char) -> Msg {
        Msg::Key(KeyEvent::from(KeyCode::Char(c)))
    }

    fn trigger(step: &str, finished: bool) -> Msg {
        Msg::Link(LinkEvent::Message(ServerMessage::RefreshStepEvents(RefreshStepEvents {
            step_ids: vec![step.into()],
            manager_ids: vec!["m1".into()],
            timestamp: "13:04:05.000".into(),
            finished,
            last_seq: 10,
        })))
    }

    fn logs_cmds(cmds: &[Cmd]) -> usize {
        cmds.iter().filter(|c| matches!(c, Cmd::LoadLogs(_))).count()
    }

    /// An app showing manager m1 with its running step m1-s2 open and loaded at `t0`.
    fn app_with_open_step(t0: Instant) -> App {
        let mut app = App::new(true, t0);
        app.update(Msg::Link(LinkEvent::Connected), t0);
        app.update(
            Msg::Managers(Ok(JobsList {
                jobs: vec![manager(1, "Nightly build", JobStatus::Running)],
                total_count: 1,
                limit: 50,
                offset: 0,
                next_cursor: None,
            })),
            t0,
        );
        let cmds = app.update(Msg::Key(KeyEvent::from(KeyCode::Enter)), t0);
        assert_eq!(cmds, vec![Cmd::LoadManager("m1".into())]);
        let cmds = app.update(Msg::Manager { id: "m1".into(), result: Ok(Box::new(nightly_detail())) }, t0);
        // The running step opens by itself and loads on demand.
        assert_eq!(cmds, vec![Cmd::LoadLogs("m1-s2".into())]);
        app.update(
            Msg::Logs {
                step_id: "m1-s2".into(),
                result: Ok(logs("m1-s2", vec![event(1, "m1-s2", Level::Info, "hello")])),
            },
            t0,
        );
        app
    }

    #[test]
    fn a_finished_trigger_fetches_at_once() {
        let t0 = Instant::now();
        let mut app = app_with_open_step(t0);
        // Inside the 500 ms window of the opening fetch, yet fetched at once.
        let cmds = app.update(trigger("m1-s2", true), t0 + Duration::from_millis(50));
        assert_eq!(cmds, vec![Cmd::LoadLogs("m1-s2".into())]);
    }

    #[test]
    fn two_triggers_100ms_apart_lead_to_one_fetch() {
        let t0 = Instant::now();
        let mut app = app_with_open_step(t0);
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(logs_cmds(&app.update(trigger("m1-s2", false), t1)), 1);
        assert_eq!(logs_cmds(&app.update(trigger("m1-s2", false), t1 + Duration::from_millis(100))), 0);
        assert_eq!(logs_cmds(&app.update(Msg::Tick { wall_ms: 0 }, t1 + Duration::from_millis(499))), 0);
        // The folded trigger is not lost: one trailing fetch when the window ends, then quiet.
        assert_eq!(logs_cmds(&app.update(Msg::Tick { wall_ms: 0 }, t1 + Duration::from_millis(500))), 1);
        assert_eq!(logs_cmds(&app.update(Msg::Tick { wall_ms: 0 }, t1 + Duration::from_secs(5))), 0);
    }

    #[test]
    fn triggers_for_steps_not_shown_fetch_nothing() {
        let t0 = Instant::now();
        let mut app = app_with_open_step(t0);
        assert!(app.update(trigger("m1-s1", true), t0 + Duration::from_secs(2)).is_empty());
        assert!(app.update(trigger("m9-s1", false), t0 + Duration::from_secs(3)).is_empty());
    }

    #[test]
    fn the_next_running_step_opens_by_itself() {
        let t0 = Instant::now();
        let mut app = app_with_open_step(t0);
        let change = |id: &str, status| {
            Msg::Link(LinkEvent::Message(ServerMessage::JobStatusChange(JobStatusChange {
                job_id: id.into(),
                parent_id: Some("m1".into()),
                manager_id: "m1".into(),
                kind: JobKind::Step,
                status,
                step_name: None,
                error: None,
                timestamp: "13:04:05.000".into(),
            })))
        };
        app.update(change("m1-s2", JobStatus::Completed), t0);
        let cmds = app.update(change("m1-s3", JobStatus::Running), t0);
        assert_eq!(app.shown_step().as_deref(), Some("m1-s3"));
        assert_eq!(cmds, vec![Cmd::LoadLogs("m1-s3".into())]);
    }

    #[test]
    fn cancel_asks_first() {
        let t0 = Instant::now();
        let mut app = App::new(true, t0);
        app.update(
            Msg::Managers(Ok(JobsList {
                jobs: vec![manager(1, "a", JobStatus::Running)],
                total_count: 1,
                limit: 50,
                offset: 0,
                next_cursor: None,
            })),
            t0,
        );
        assert!(app.update(key('c'), t0).is_empty());
        assert!(matches!(app.overlay, Some(Overlay::Confirm { action: Action::Cancel, .. })));
        assert!(app.update(key('n'), t0).is_empty());
        assert_eq!(app.overlay, None);
        app.update(key('c'), t0);
        assert_eq!(app.update(key('y'), t0), vec![Cmd::Cancel("m1".into())]);
    }

    /// `X` deletes every finished run the filter shows, after a confirmation; under a filter
    /// of unfinished runs it says why it cannot.
    #[test]
    fn x_deletes_the_finished_runs_shown() {
        let t0 = Instant::now();
        let mut app = App::new(true, t0);
        assert!(app.update(key('X'), t0).is_empty());
        assert!(matches!(app.overlay, Some(Overlay::Confirm { action: Action::DeleteFinished, .. })));
        assert!(app.update(key('n'), t0).is_empty(), "n keeps everything");
        app.update(key('X'), t0);
        let cmds = app.update(key('y'), t0);
        assert_eq!(cmds, vec![Cmd::DeleteFinished("completed,failed,cancelled".into())]);

        app.status_filter = Some(JobStatus::Failed);
        app.update(key('X'), t0);
        assert_eq!(app.update(key('y'), t0), vec![Cmd::DeleteFinished("failed".into())]);
        app.status_filter = Some(JobStatus::Running);
        assert!(app.update(key('X'), t0).is_empty());
        assert_eq!(app.overlay, None);
        assert!(app.status_line.as_deref().is_some_and(|s| s.contains("only finished runs")), "{:?}", app.status_line);
    }

    #[test]
    fn the_filter_picker_reloads_with_the_status() {
        let t0 = Instant::now();
        let mut app = App::new(true, t0);
        app.update(key('/'), t0);
        app.update(key('j'), t0);
        app.update(key('j'), t0);
        let cmds = app.update(Msg::Key(KeyEvent::from(KeyCode::Enter)), t0);
        assert_eq!(cmds, vec![Cmd::LoadManagers { status: Some(JobStatus::Running), offset: 0 }]);
    }

    /// Scrolled to the oldest line loaded, one more step up asks for the page before it;
    /// pages come on top until one is empty; a refetch of the newest page keeps them.
    #[test]
    fn scrolling_up_at_the_top_loads_older_pages() {
        let t0 = Instant::now();
        let mut app = app_with_open_step(t0);
        let page =
            |from: u64| (from..from + 100).map(|i| event(i, "m1-s2", Level::Info, &format!("line {i}"))).collect();
        app.update(Msg::Logs { step_id: "m1-s2".into(), result: Ok(logs("m1-s2", page(201))) }, t0);
        if let View::Manager { focus, .. } = &mut app.view {
            *focus = Focus::Events;
        }
        // Up to the top: nothing asked while lines are left above.
        for _ in 0..99 {
            assert!(app.update(key('k'), t0).is_empty());
        }
        let cmds = app.update(key('k'), t0);
        assert_eq!(cmds, vec![Cmd::LoadOlder { step_id: "m1-s2".into(), before: 201 }]);
        assert!(app.update(key('k'), t0).is_empty(), "one page at a time");
        app.update(Msg::Older { step_id: "m1-s2".into(), result: Ok(logs("m1-s2", page(101))) }, t0);
        let pane = &app.events["m1-s2"];
        assert_eq!((pane.older.len(), pane.older[0].seq), (100, 101));
        // The newest page fetched again (a trigger), with two new events: history stays.
        app.update(Msg::Logs { step_id: "m1-s2".into(), result: Ok(logs("m1-s2", page(203))) }, t0);
        let pane = &app.events["m1-s2"];
        let seqs: Vec<u64> = pane.older.iter().chain(&pane.events).map(|e| e.seq).collect();
        assert_eq!(seqs, (101..303).collect::<Vec<_>>(), "every event once, in order");
        for _ in 0..300 {
            app.update(key('k'), t0);
        }
        app.update(Msg::Older { step_id: "m1-s2".into(), result: Ok(logs("m1-s2", vec![])) }, t0);
        assert!(app.events["m1-s2"].older_done);
        assert!(app.update(key('k'), t0).is_empty(), "nothing before the first event");
    }

    #[test]
    fn reconnecting_reloads_what_is_on_screen() {
        let t0 = Instant::now();
        let mut app = app_with_open_step(t0);
        let t1 = t0 + Duration::from_secs(5);
        app.update(Msg::Link(LinkEvent::Disconnected { retry_at: t1, reason: "closed".into() }), t0);
        assert_eq!(app.conn, Conn::Reconnecting { retry_at: t1 });
        let cmds = app.update(Msg::Link(LinkEvent::Connected), t1);
        assert_eq!(app.conn, Conn::Connected);
        for want in [Cmd::LoadStats, Cmd::LoadManager("m1".into()), Cmd::LoadLogs("m1-s2".into())] {
            assert!(cmds.contains(&want), "{want:?} missing from {cmds:?}");
        }
    }

    #[test]
    fn scrolled_up_events_stay_put_when_new_ones_arrive() {
        let t0 = Instant::now();
        let mut app = app_with_open_step(t0);
        let evs: Vec<Event> = (1..=10).map(|i| event(i, "m1-s2", Level::Info, "x")).collect();
        app.update(Msg::Logs { step_id: "m1-s2".into(), result: Ok(logs("m1-s2", evs.clone())) }, t0);
        app.view = View::Manager { id: "m1".into(), focus: Focus::Events, step_sel: 1, opened: Some("m1-s2".into()) };
        app.update(key('k'), t0);
        app.update(key('k'), t0);
        assert_eq!(app.events["m1-s2"].scroll_back, 2);
        let more: Vec<Event> = (1..=13).map(|i| event(i, "m1-s2", Level::Info, "x")).collect();
        app.update(Msg::Logs { step_id: "m1-s2".into(), result: Ok(logs("m1-s2", more)) }, t0);
        assert_eq!(app.events["m1-s2"].scroll_back, 5);
        app.update(key('G'), t0);
        assert_eq!(app.events["m1-s2"].scroll_back, 0);
    }
}
