//! Drawing: a pure function of [`App`]. Every piece of text that came from the daemon
//! (names, messages, errors) goes through `sanitize_terminal` before it reaches a cell.

use quaero_shared::{ChildCounts, Job, JobStatus, Level, StepSummary, sanitize_terminal};
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, StatefulWidget, Table, TableState, Widget, Wrap};

use crate::app::{Action, App, Conn, EVENTS_SHOWN, Focus, Overlay, ParamsForm, PickerKind, View};
use crate::text::{event_source, event_time, human_duration, level_label, parse_rfc3339_ms};

/// Below this width the tables drop their secondary columns.
const NARROW: u16 = 60;

pub const HELP: &[(&str, &str)] = &[
    ("j/k, ↓/↑", "move (scroll events; k at the top: older)"),
    ("w", "events: wrap long lines on/off"),
    ("/ in events", "search the loaded events"),
    ("Enter", "open manager / step events"),
    ("Esc, Backspace", "back"),
    ("g / G", "top / bottom"),
    ("n / p", "next / previous page"),
    ("/", "filter by status"),
    ("r", "run a definition"),
    ("D", "definitions (e on/off, Enter run)"),
    ("Q", "queues (p pause/resume)"),
    ("c", "cancel (confirm)"),
    ("d", "delete (confirm)"),
    ("X", "delete every finished run shown (confirm)"),
    ("R", "rerun"),
    ("?", "this help"),
    ("q", "quit"),
];

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [header, body, footer] =
            Layout::vertical([Constraint::Length(2), Constraint::Min(3), Constraint::Length(1)]).areas(area);
        self.render_header(header, buf);
        match &self.view {
            View::Managers => self.render_managers(body, buf),
            View::Manager { id, focus, step_sel, .. } => self.render_manager(id, *focus, *step_sel, body, buf),
            View::Definitions { selected } => self.render_definitions(*selected, body, buf),
            View::Queues { selected } => self.render_queues(*selected, body, buf),
        }
        self.render_footer(footer, buf);
        match &self.overlay {
            None => {}
            Some(Overlay::Help) => self.render_help(area, buf),
            Some(Overlay::Confirm { action, job_id }) => self.render_confirm(*action, job_id, area, buf),
            Some(Overlay::Picker { kind, selected }) => self.render_picker(*kind, *selected, area, buf),
            Some(Overlay::Params(form)) => self.render_params(form, area, buf),
        }
    }
}

impl App {
    fn fg(&self, c: Color) -> Style {
        if self.color { Style::default().fg(c) } else { Style::default() }
    }

    fn status_style(&self, s: JobStatus) -> Style {
        self.fg(match s {
            JobStatus::Pending => Color::Gray,
            JobStatus::Running => Color::Cyan,
            JobStatus::Completed => Color::Green,
            JobStatus::Failed => Color::Red,
            JobStatus::Cancelled => Color::Yellow,
        })
    }

    fn level_style(&self, l: Level) -> Style {
        match l {
            Level::Debug => self.fg(Color::DarkGray),
            Level::Info => self.fg(Color::Green),
            Level::Warn => self.fg(Color::Yellow),
            Level::Error => self.fg(Color::Red).add_modifier(Modifier::BOLD),
        }
    }

    fn selected_style(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    fn render_header(&self, area: Rect, buf: &mut Buffer) {
        let conn = match self.conn {
            Conn::Connecting => Span::styled("● connecting", self.fg(Color::Yellow)),
            Conn::Connected => Span::styled("● connected", self.fg(Color::Green)),
            Conn::Reconnecting { retry_at } => {
                let left = retry_at.saturating_duration_since(self.now);
                let secs = left.as_millis().div_ceil(1000);
                Span::styled(format!("● reconnecting in {secs}s"), self.fg(Color::Red))
            }
        };
        let mut line1 = vec![Span::styled("Quaero ", Style::default().add_modifier(Modifier::BOLD)), conn];
        let filter = self.status_filter.map_or("all", |s| s.as_str());
        line1.push(Span::raw(format!("  filter: {filter}")));
        let stats = match &self.stats {
            // Short labels keep every count visible on narrow terminals.
            Some(s) if area.width < NARROW => Line::raw(format!(
                "{} jobs P{} R{} C{} F{} X{}",
                s.total_jobs, s.pending_jobs, s.running_jobs, s.completed_jobs, s.failed_jobs, s.cancelled_jobs
            )),
            Some(s) => Line::from(vec![
                Span::raw(format!("total {}  ", s.total_jobs)),
                Span::styled(format!("pending {}  ", s.pending_jobs), self.status_style(JobStatus::Pending)),
                Span::styled(format!("running {}  ", s.running_jobs), self.status_style(JobStatus::Running)),
                Span::styled(format!("completed {}  ", s.completed_jobs), self.status_style(JobStatus::Completed)),
                Span::styled(format!("failed {}  ", s.failed_jobs), self.status_style(JobStatus::Failed)),
                Span::styled(format!("cancelled {}", s.cancelled_jobs), self.status_style(JobStatus::Cancelled)),
            ]),
            None => Line::raw("stats: loading…"),
        };
        Paragraph::new(vec![Line::from(line1), stats]).render(area, buf);
    }

    fn render_footer(&self, area: Rect, buf: &mut Buffer) {
        let text = match &self.status_line {
            Some(s) => Line::styled(sanitize_terminal(s), self.fg(Color::Yellow)),
            None => Line::styled(
                match self.view {
                    View::Definitions { .. } => "? help  Enter run  e enable/disable  Esc back  Q queues  q quit",
                    View::Queues { .. } => "? help  p pause/resume  Esc back  D definitions  q quit",
                    _ => "? help  q quit  / filter  r run  c cancel  d delete  R rerun  D definitions  Q queues",
                },
                self.fg(Color::DarkGray),
            ),
        };
        Paragraph::new(text).render(area, buf);
    }

    /// Current step as `i/N` and a progress fraction, from the manager's details when known.
    fn step_progress(&self, m: &Job) -> (String, f64) {
        let steps = self.details.get(&m.id).and_then(|d| d.steps.as_deref());
        let n = steps
            .map(|s| s.len())
            .or_else(|| self.definitions.iter().find(|d| d.id == m.definition_id).map(|d| d.steps.len()));
        let Some(steps) = steps else {
            let done = if m.status == JobStatus::Completed { 1.0 } else { 0.0 };
            return (n.map_or("-".into(), |n| format!("?/{n}")), done);
        };
        let n = steps.len();
        if m.status == JobStatus::Completed {
            // Also when a step failed with on_error = "continue".
            return (format!("{n}/{n}"), 1.0);
        }
        let current = steps.iter().rev().find(|s| s.status != JobStatus::Pending).map_or(0, |s| s.index as usize);
        let done: f64 = steps.iter().map(step_fraction).sum();
        (format!("{current}/{n}"), if n == 0 { 0.0 } else { done / n as f64 })
    }

    fn age(&self, m: &Job) -> String {
        match parse_rfc3339_ms(&m.created_at) {
            Some(t) if self.wall_ms > 0 => human_duration((self.wall_ms - t).max(0) as u64),
            _ => "-".into(),
        }
    }

    /// A running job's duration counts up from `started_at` on the app's clock; the list's
    /// `duration_ms` is only as fresh as the last fetch.
    fn duration(&self, m: &Job) -> String {
        let live = match (m.status, m.started_at.as_deref().and_then(parse_rfc3339_ms)) {
            (JobStatus::Running, Some(t)) if self.wall_ms > 0 => Some((self.wall_ms - t).max(0) as u64),
            _ => None,
        };
        live.or(m.duration_ms).map_or("-".into(), human_duration)
    }

    fn render_managers(&self, area: Rect, buf: &mut Buffer) {
        let narrow = area.width < NARROW;
        let title = format!(
            " Managers {}-{} of {} ",
            if self.managers.is_empty() { 0 } else { self.offset + 1 },
            self.offset + self.managers.len() as u64,
            self.total
        );
        let block = Block::default().borders(Borders::ALL).title(title);
        if self.managers.is_empty() {
            Paragraph::new("No managers yet. Press r to run a definition.").block(block).render(area, buf);
            return;
        }
        let rows = self.managers.iter().map(|m| {
            let (step, frac) = self.step_progress(m);
            let status = Cell::from(Span::styled(m.status.as_str(), self.status_style(m.status)));
            let name = Cell::from(format!("{} {}", m.id, sanitize_terminal(&m.name)));
            let progress = Cell::from(bar(frac, 8));
            if narrow {
                Row::new(vec![status, name, Cell::from(step)])
            } else {
                let duration = self.duration(m);
                Row::new(vec![
                    status,
                    name,
                    Cell::from(sanitize_terminal(&m.definition_id)),
                    Cell::from(step),
                    progress,
                    Cell::from(self.age(m)),
                    Cell::from(duration),
                ])
            }
        });
        let (header, widths): (Vec<&str>, Vec<Constraint>) = if narrow {
            (vec!["STATUS", "NAME", "STEP"], vec![Constraint::Length(9), Constraint::Min(10), Constraint::Length(5)])
        } else {
            (
                vec!["STATUS", "NAME", "DEFINITION", "STEP", "PROGRESS", "AGE", "DURATION"],
                vec![
                    Constraint::Length(9),
                    Constraint::Min(16),
                    Constraint::Length(12),
                    Constraint::Length(5),
                    Constraint::Length(13),
                    Constraint::Length(7),
                    Constraint::Length(8),
                ],
            )
        };
        let table = Table::new(rows, widths)
            .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
            .block(block)
            .row_highlight_style(self.selected_style());
        let mut state = TableState::default().with_selected(Some(self.selected));
        StatefulWidget::render(table, area, buf, &mut state);
    }

    fn render_manager(&self, id: &str, focus: Focus, step_sel: usize, area: Rect, buf: &mut Buffer) {
        let detail = self.details.get(id);
        let steps = self.open_steps();
        let steps_height = (steps.len() as u16 + 3).min(area.height / 2).max(4);
        let [top, bottom] = Layout::vertical([Constraint::Length(steps_height), Constraint::Min(3)]).areas(area);

        let title = match detail {
            Some(d) => Line::from(vec![
                Span::raw(format!(" {} {} ", d.id, sanitize_terminal(&d.name))),
                Span::styled(d.status.as_str(), self.status_style(d.status)),
                Span::raw(format!(" {} ", self.duration(d))),
            ]),
            None => Line::raw(format!(" {id} (loading…) ")),
        };
        let block = Block::default().borders(Borders::ALL).title(title).border_style(if focus == Focus::Steps {
            self.fg(Color::Cyan)
        } else {
            Style::default()
        });
        let n = steps.len();
        let narrow = area.width < NARROW;
        let rows = steps.iter().map(|s| {
            let mut name = format!("Step {}/{n}: {}", s.index, sanitize_terminal(&s.name));
            if let (Some(a), Some(max)) = (s.attempt, s.max_attempts) {
                let waiting = if s.next_attempt_at.is_some() { ", waiting to retry" } else { "" };
                name.push_str(&format!(" (attempt {a}/{max}{waiting})"));
            }
            let status = Cell::from(Span::styled(s.status.as_str(), self.status_style(s.status)));
            let children = children_text(&s.child_counts);
            if narrow {
                Row::new(vec![Cell::from(name), status])
            } else {
                Row::new(vec![
                    Cell::from(name),
                    Cell::from(s.step_type.as_str()),
                    status,
                    Cell::from(format!("{} {children}", bar(step_fraction(s), 10))),
                ])
            }
        });
        let widths = if narrow {
            vec![Constraint::Min(10), Constraint::Length(9)]
        } else {
            vec![Constraint::Min(20), Constraint::Length(10), Constraint::Length(9), Constraint::Length(28)]
        };
        let table = Table::new(rows, widths).block(block).row_highlight_style(self.selected_style());
        let mut state = TableState::default().with_selected((focus == Focus::Steps && n > 0).then_some(step_sel));
        StatefulWidget::render(table, top, buf, &mut state);

        self.render_events(focus, bottom, buf);
    }

    fn render_events(&self, focus: Focus, area: Rect, buf: &mut Buffer) {
        let shown = self.shown_step();
        let step = shown.as_ref().and_then(|id| self.open_steps().iter().find(|s| &s.id == id));
        let title = match step {
            Some(s) => format!(
                " Events: Step {}/{}: {} ({}{}) ",
                s.index,
                self.open_steps().len(),
                sanitize_terminal(&s.name),
                match self.events.get(&s.id) {
                    Some(p) if p.older_done => format!("all {}, from the first", p.older.len() + p.events.len()),
                    Some(p) if p.older_loading => "loading older…".to_string(),
                    Some(p) if !p.older.is_empty() =>
                        format!("{} loaded; k at the top for more", p.older.len() + p.events.len()),
                    _ => format!("last {EVENTS_SHOWN}"),
                },
                match (&self.search, self.wrap_events) {
                    (Some(s), _) => format!(
                        ", /{}{}",
                        sanitize_terminal(&s.text),
                        if s.typing { "▏ Enter keeps, Esc clears" } else { " · Esc clears" }
                    ),
                    (None, true) => String::new(),
                    (None, false) => ", not wrapped: w".to_string(),
                }
            ),
            None => " Events ".to_string(),
        };
        let border = if focus == Focus::Events { self.fg(Color::Cyan) } else { Style::default() };
        let block = Block::default().borders(Borders::ALL).title(title).border_style(border);
        let inner = block.inner(area);
        block.render(area, buf);
        let Some(id) = shown else {
            Paragraph::new("Select a step and press Enter to see its events.").render(inner, buf);
            return;
        };
        let pane = self.events.get(&id);
        let lines: Vec<Line> = match pane {
            Some(p) if p.loaded || !p.events.is_empty() => {
                let (height, width) = (inner.height as usize, inner.width.max(1) as usize);
                let needle = self.search.as_ref().map(|s| s.text.to_ascii_lowercase()).filter(|t| !t.is_empty());
                let all: Vec<&quaero_shared::Event> = p
                    .older
                    .iter()
                    .chain(&p.events)
                    .filter(|e| {
                        needle.as_ref().is_none_or(|n| sanitize_terminal(&e.message).to_ascii_lowercase().contains(n))
                    })
                    .collect();
                let end = all.len().saturating_sub(p.scroll_back);
                let line = |e: &quaero_shared::Event| {
                    Line::from(vec![
                        Span::styled(event_time(e), self.fg(Color::DarkGray)),
                        Span::raw(" "),
                        Span::styled(level_label(e.level), self.level_style(e.level)),
                        Span::raw(format!(" {} ", event_source(e))),
                    ])
                };
                let line = |e: &quaero_shared::Event| {
                    let mut l = line(e);
                    l.spans.extend(self.marked(&sanitize_terminal(&e.message), needle.as_deref()));
                    l
                };
                // The newest events that fit, each taking as many rows as it wraps to.
                let mut out: Vec<Line> = Vec::new();
                let mut rows = 0;
                for e in all[..end].iter().copied().rev() {
                    let l = line(e);
                    let r = if self.wrap_events { l.width().div_ceil(width).max(1) } else { 1 };
                    if rows + r > height && !out.is_empty() {
                        break;
                    }
                    rows += r;
                    out.push(l);
                    if rows >= height {
                        break;
                    }
                }
                out.reverse();
                out
            }
            _ => vec![Line::raw("loading…")],
        };
        let mut lines = lines;
        if let Some(err) = pane.and_then(|p| p.error.as_ref()) {
            lines.push(Line::styled(format!("error: {}", sanitize_terminal(err)), self.fg(Color::Red)));
        }
        if lines.is_empty() {
            lines.push(Line::raw("no events yet"));
        }
        let para = Paragraph::new(lines);
        let para = if self.wrap_events { para.wrap(Wrap { trim: false }) } else { para };
        para.render(inner, buf);
    }

    /// A message as spans, each match of `needle` (lowercase ASCII) marked.
    fn marked(&self, text: &str, needle: Option<&str>) -> Vec<Span<'static>> {
        let Some(n) = needle else { return vec![Span::raw(text.to_string())] };
        let lower = text.to_ascii_lowercase();
        let mark = if self.color {
            Style::default().fg(Color::Black).bg(Color::Yellow)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        };
        let (mut out, mut at) = (Vec::new(), 0);
        // ASCII case folding keeps byte offsets, so `lower`'s offsets are `text`'s.
        while let Some(i) = lower[at..].find(n) {
            let (s, e) = (at + i, at + i + n.len());
            if s > at {
                out.push(Span::raw(text[at..s].to_string()));
            }
            out.push(Span::styled(text[s..e].to_string(), mark));
            at = e;
        }
        if at < text.len() {
            out.push(Span::raw(text[at..].to_string()));
        }
        out
    }

    fn render_help(&self, area: Rect, buf: &mut Buffer) {
        let popup = centered(area, 50, HELP.len() as u16 + 2);
        Clear.render(popup, buf);
        let lines: Vec<Line> = HELP
            .iter()
            .map(|(k, v)| {
                Line::from(vec![
                    Span::styled(format!("{k:<15}"), Style::default().add_modifier(Modifier::BOLD)),
                    Span::raw(*v),
                ])
            })
            .collect();
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(" Keys (any key closes) "))
            .render(popup, buf);
    }

    /// `in 4m` / `4m ago` from now on the app's wall clock.
    fn relative(&self, rfc: &str) -> String {
        match parse_rfc3339_ms(rfc) {
            Some(t) if self.wall_ms > 0 && t >= self.wall_ms => {
                format!("in {}", human_duration((t - self.wall_ms) as u64))
            }
            Some(t) if self.wall_ms > 0 => format!("{} ago", human_duration((self.wall_ms - t) as u64)),
            _ => sanitize_terminal(rfc),
        }
    }

    fn render_definitions(&self, selected: usize, area: Rect, buf: &mut Buffer) {
        let narrow = area.width < NARROW;
        // Below 100 columns: no last run, queue and tags (the schedule needs the room).
        let medium = area.width < 100;
        let block = Block::default().borders(Borders::ALL).title(format!(" Definitions ({}) ", self.definitions.len()));
        if self.definitions.is_empty() {
            Paragraph::new("No job definitions loaded.").block(block).render(area, buf);
            return;
        }
        let rows = self.definitions.iter().map(|d| {
            let state = if !d.valid {
                Span::styled("invalid", self.fg(Color::Red))
            } else if d.enabled {
                Span::styled("on", self.fg(Color::Green))
            } else {
                Span::styled("off", self.fg(Color::Yellow))
            };
            let schedule = match (&d.schedule_text, &d.schedule) {
                (Some(t), _) => sanitize_terminal(t),
                (None, Some(s)) => sanitize_terminal(s),
                (None, None) => "-".into(),
            };
            let next = d.next_run_at.as_deref().map_or("-".into(), |n| self.relative(n));
            let last = d.last_run.as_ref().map_or(Span::raw("-"), |l| {
                let when = l.finished_at.as_deref().map(|f| format!(" {}", self.relative(f))).unwrap_or_default();
                Span::styled(format!("{}{when}", l.status.as_str()), self.status_style(l.status))
            });
            let id = sanitize_terminal(&d.id);
            if narrow {
                Row::new(vec![Cell::from(state), Cell::from(id), Cell::from(next)])
            } else if medium {
                Row::new(vec![Cell::from(state), Cell::from(id), Cell::from(schedule), Cell::from(next)])
            } else {
                let tags = d.tags.iter().map(|t| sanitize_terminal(t)).collect::<Vec<_>>().join(",");
                Row::new(vec![
                    Cell::from(state),
                    Cell::from(id),
                    Cell::from(schedule),
                    Cell::from(next),
                    Cell::from(last),
                    Cell::from(sanitize_terminal(&d.queue)),
                    Cell::from(tags),
                ])
            }
        });
        let (header, widths): (Vec<&str>, Vec<Constraint>) = if narrow {
            (vec!["ON", "ID", "NEXT"], vec![Constraint::Length(7), Constraint::Min(10), Constraint::Length(12)])
        } else if medium {
            (
                vec!["ON", "ID", "SCHEDULE", "NEXT RUN"],
                vec![Constraint::Length(7), Constraint::Min(12), Constraint::Fill(1), Constraint::Length(12)],
            )
        } else {
            (
                vec!["ON", "ID", "SCHEDULE", "NEXT RUN", "LAST RUN", "QUEUE", "TAGS"],
                vec![
                    Constraint::Length(7),
                    Constraint::Min(12),
                    Constraint::Fill(2),
                    Constraint::Length(12),
                    Constraint::Length(20),
                    Constraint::Length(10),
                    Constraint::Fill(1),
                ],
            )
        };
        let table = Table::new(rows, widths)
            .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
            .block(block)
            .row_highlight_style(self.selected_style());
        let mut state = TableState::default().with_selected(Some(selected));
        StatefulWidget::render(table, area, buf, &mut state);
    }

    fn render_queues(&self, selected: usize, area: Rect, buf: &mut Buffer) {
        let block = Block::default().borders(Borders::ALL).title(format!(" Queues ({}) ", self.queues.len()));
        if self.queues.is_empty() {
            Paragraph::new("loading…").block(block).render(area, buf);
            return;
        }
        let rows = self.queues.iter().map(|q| {
            let state = if q.paused {
                Span::styled("paused", self.fg(Color::Yellow))
            } else {
                Span::styled("active", self.fg(Color::Green))
            };
            Row::new(vec![
                Cell::from(sanitize_terminal(&q.name)),
                Cell::from(state),
                Cell::from(format!("{}/{}", q.running, q.concurrency)),
                Cell::from(q.pending.to_string()),
                Cell::from(q.completed_last_minute.to_string()),
            ])
        });
        let widths = [
            Constraint::Min(10),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(10),
        ];
        let table = Table::new(rows, widths)
            .header(
                Row::new(vec!["QUEUE", "STATE", "RUNNING", "PENDING", "DONE/MIN"])
                    .style(Style::default().add_modifier(Modifier::BOLD)),
            )
            .block(block)
            .row_highlight_style(self.selected_style());
        let mut state = TableState::default().with_selected(Some(selected));
        StatefulWidget::render(table, area, buf, &mut state);
    }

    fn render_params(&self, form: &ParamsForm, area: Rect, buf: &mut Buffer) {
        let width = 60.min(area.width);
        let rows =
            u16::try_from(form.fields.len()).unwrap_or(u16::MAX).saturating_add(5 + u16::from(form.error.is_some()));
        let popup = centered(area, width, rows.min(area.height));
        Clear.render(popup, buf);
        let title = format!(" Run {} ", sanitize_terminal(&form.definition));
        let block = Block::default().borders(Borders::ALL).title(title);
        let field = |label: String, value: &str, at: bool, hint: &str| {
            let style = if at { self.selected_style() } else { Style::default() };
            let mut spans = vec![Span::raw(format!("{label:<16} ")), Span::styled(format!("{value}▏"), style)];
            if !hint.is_empty() && value.is_empty() {
                spans.push(Span::styled(format!(" {hint}"), self.fg(Color::DarkGray)));
            }
            Line::from(spans)
        };
        let mut lines: Vec<Line> = form
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let label = format!("{}{}", sanitize_terminal(&f.name), if f.required { "*" } else { "" });
                field(label, &sanitize_terminal(&f.value), i == form.at, &sanitize_terminal(&f.description))
            })
            .collect();
        lines.push(field(
            "delay".into(),
            &sanitize_terminal(&form.delay),
            form.at == form.fields.len(),
            "now, or 10m, 2h…",
        ));
        if let Some(e) = &form.error {
            lines.push(Line::styled(sanitize_terminal(e), self.fg(Color::Red)));
        }
        lines.push(Line::styled("Tab next field · Enter run · Esc cancel · * required", self.fg(Color::DarkGray)));
        Paragraph::new(lines).block(block).render(popup, buf);
    }

    fn render_confirm(&self, action: Action, job_id: &str, area: Rect, buf: &mut Buffer) {
        let text = match action {
            Action::Cancel => format!("Cancel {}? (y/n)", sanitize_terminal(job_id)),
            Action::Delete => format!("Delete {}? (y/n)", sanitize_terminal(job_id)),
            Action::DeleteFinished => {
                format!("Delete every finished run ({}) with its events? (y/n)", job_id.replace(',', ", "))
            }
        };
        let popup = centered(area, 44, if action == Action::DeleteFinished { 4 } else { 3 });
        Clear.render(popup, buf);
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(Block::default().borders(Borders::ALL).title(" Confirm "))
            .render(popup, buf);
    }

    fn render_picker(&self, kind: PickerKind, selected: usize, area: Rect, buf: &mut Buffer) {
        let (title, items): (&str, Vec<String>) = match kind {
            PickerKind::Run => (
                " Run a definition ",
                self.definitions
                    .iter()
                    .map(|d| {
                        let mark = if d.valid { "" } else { " (invalid)" };
                        format!("{} — {}{mark}", sanitize_terminal(&d.id), sanitize_terminal(&d.name))
                    })
                    .collect(),
            ),
            PickerKind::Filter => (
                " Filter by status ",
                std::iter::once("all".to_string())
                    .chain(JobStatus::ALL.iter().map(|s| s.as_str().to_string()))
                    .collect(),
            ),
        };
        let popup = centered(area, 50, (items.len() as u16 + 2).clamp(3, 20));
        Clear.render(popup, buf);
        let block = Block::default().borders(Borders::ALL).title(title);
        if items.is_empty() {
            Paragraph::new("no definitions").block(block).render(popup, buf);
            return;
        }
        let rows = items.into_iter().map(|i| Row::new(vec![Cell::from(i)]));
        let table = Table::new(rows, [Constraint::Min(1)]).block(block).row_highlight_style(self.selected_style());
        let mut state = TableState::default().with_selected(Some(selected));
        StatefulWidget::render(table, popup, buf, &mut state);
    }
}

/// How much of a step got done: all of it when it completed; of one that failed or was
/// cancelled (or never ran), only its completed children; of a running one, its children
/// that have ended. So a job that did not complete never shows 100%.
fn step_fraction(s: &StepSummary) -> f64 {
    let c = &s.child_counts;
    let of_total = |n: u64| if c.total > 0 { n as f64 / c.total as f64 } else { 0.0 };
    match s.status {
        JobStatus::Completed => 1.0,
        st if st.is_terminal() => of_total(c.completed),
        _ => of_total(c.terminal()),
    }
}

fn children_text(c: &ChildCounts) -> String {
    if c.total == 0 {
        return String::new();
    }
    let mut s = format!("{}/{}", c.terminal(), c.total);
    if c.failed > 0 {
        s.push_str(&format!(" ({} failed)", c.failed));
    }
    s
}

/// A text gauge, so it fits in a table cell: `████░░░░░░ 40%`.
fn bar(frac: f64, width: usize) -> String {
    let frac = frac.clamp(0.0, 1.0);
    let full = (frac * width as f64).round() as usize;
    format!("{}{} {:>3}%", "█".repeat(full), "░".repeat(width - full), (frac * 100.0).round() as u32)
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use quaero_shared::{JobsList, Stats};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent};
    use tokio::time::Instant;

    use super::*;
    use crate::app::Msg;
    use crate::client::LinkEvent;
    use crate::fixtures::*;

    /// 2026-11-28T13:02:05Z: two minutes and five seconds after the fixtures' managers.
    const WALL: i64 = 1_795_870_925_000;

    fn draw(app: &App, w: u16, h: u16) -> Buffer {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| f.render_widget(app, f.area())).unwrap();
        t.backend().buffer().clone()
    }

    fn dashboard(color: bool) -> (App, Instant) {
        let t0 = Instant::now();
        let mut app = App::new(color, t0);
        app.update(Msg::Tick { wall_ms: WALL }, t0);
        app.update(Msg::Link(LinkEvent::Connected), t0);
        let stats = Stats {
            total_jobs: 14,
            pending_jobs: 1,
            running_jobs: 4,
            completed_jobs: 7,
            failed_jobs: 1,
            cancelled_jobs: 1,
        };
        app.update(Msg::Stats(Ok(stats)), t0);
        let mut done = manager(2, "Docs", JobStatus::Completed);
        done.duration_ms = Some(850);
        let mut failed = manager(3, "Deploy \x1b[31mred\x1b[0m", JobStatus::Failed);
        failed.definition_id = "deploy".into();
        let list = JobsList {
            jobs: vec![manager(1, "Nightly build", JobStatus::Running), done, failed],
            total_count: 3,
            limit: 50,
            offset: 0,
            next_cursor: None,
        };
        app.update(Msg::Managers(Ok(list)), t0);
        app.update(Msg::Manager { id: "m1".into(), result: Ok(Box::new(nightly_detail())) }, t0);
        (app, t0)
    }

    fn open_step(app: &mut App, t0: Instant, events: Vec<quaero_shared::Event>) {
        app.update(Msg::Key(KeyEvent::from(KeyCode::Enter)), t0);
        app.update(Msg::Manager { id: "m1".into(), result: Ok(Box::new(nightly_detail())) }, t0);
        app.update(Msg::Logs { step_id: "m1-s2".into(), result: Ok(logs("m1-s2", events)) }, t0);
    }

    #[test]
    fn managers_table() {
        let (app, _) = dashboard(true);
        let s = screen(&draw(&app, 100, 12));
        assert!(s.contains("● connected"), "{s}");
        assert!(s.contains("running 4"), "{s}");
        assert!(s.contains("m1 Nightly build"), "{s}");
        // Step 2 of 3 running, step 1 done, children 3/8: (1 + 0.375) / 3 ≈ 46%.
        assert!(s.contains("2/3"), "{s}");
        assert!(s.contains("46%"), "{s}");
        assert!(s.contains("2m05s"), "age from created_at: {s}");
        insta::assert_snapshot!(s);
    }

    #[test]
    fn a_job_that_did_not_complete_never_shows_100_percent() {
        let (mut app, t0) = dashboard(true);
        // m3 failed: build completed, test failed with 3 of 8 children completed, deploy
        // never ran: (1 + 3/8 + 0) / 3 ≈ 46%.
        let mut failed = manager(3, "Deploy", JobStatus::Failed);
        failed.steps = Some(vec![
            step(3, 1, "build", JobStatus::Completed, (0, 0)),
            step(3, 2, "test", JobStatus::Failed, (3, 8)),
            step(3, 3, "deploy", JobStatus::Cancelled, (0, 0)),
        ]);
        app.update(Msg::Manager { id: "m3".into(), result: Ok(Box::new(failed)) }, t0);
        let s = screen(&draw(&app, 100, 12));
        let row = s.lines().find(|l| l.contains("m3 Deploy")).unwrap_or_else(|| panic!("{s}"));
        assert!(row.contains("46%"), "{row}");
        // A job that completed shows 100%, also with a step that failed under
        // on_error = "continue".
        let mut done = manager(2, "Docs", JobStatus::Completed);
        done.steps = Some(vec![
            step(2, 1, "lint", JobStatus::Failed, (0, 0)),
            step(2, 2, "publish", JobStatus::Completed, (0, 0)),
        ]);
        app.update(Msg::Manager { id: "m2".into(), result: Ok(Box::new(done)) }, t0);
        let s = screen(&draw(&app, 100, 12));
        let row = s.lines().find(|l| l.contains("m2 Docs")).unwrap_or_else(|| panic!("{s}"));
        assert!(row.contains("2/2") && row.contains("100%"), "{row}");
    }

    #[test]
    fn a_step_waiting_to_retry_shows_its_attempt() {
        let (mut app, t0) = dashboard(true);
        let mut detail = nightly_detail();
        let steps = detail.steps.as_mut().unwrap();
        steps[1].attempt = Some(2);
        steps[1].max_attempts = Some(3);
        steps[1].next_attempt_at = Some("2026-11-28T13:05:00.000Z".into());
        app.update(Msg::Key(KeyEvent::from(KeyCode::Enter)), t0);
        app.update(Msg::Manager { id: "m1".into(), result: Ok(Box::new(detail)) }, t0);
        let s = screen(&draw(&app, 120, 16));
        assert!(s.contains("Step 2/3: test (attempt 2/3, waiting to retry)"), "{s}");
        assert!(!s.contains("Step 1/3: build (attempt"), "a step without retries shows none: {s}");
    }

    #[test]
    fn open_step_with_events() {
        let (mut app, t0) = dashboard(true);
        let events = vec![
            event(1, "m1-s2", Level::Info, "running 8 test shards"),
            event(2, "m1-s2", Level::Warn, "shard 3 is slow"),
            event(3, "m1-s2", Level::Error, "shard 5 failed: exit 1"),
        ];
        open_step(&mut app, t0, events);
        let s = screen(&draw(&app, 100, 16));
        assert!(s.contains("Step 2/3: test"), "{s}");
        assert!(s.contains("3/8"), "child progress: {s}");
        assert!(s.contains("13:04:03.123 ERROR [test/step] shard 5 failed: exit 1"), "{s}");
        insta::assert_snapshot!(s);
    }

    /// In 80 columns a failed fetch's event ends with its reason: wrapped, it shows whole,
    /// and the newest event stays at the bottom; `w` shows one line per event, cut.
    #[test]
    fn long_events_wrap_and_w_cuts_them() {
        let (mut app, t0) = dashboard(true);
        let long = "GET http://127.0.0.1:8080/api/health failed after 3 attempts: connection refused (os error 111)";
        let mut events: Vec<_> = (1..=30).map(|i| event(i, "m1-s2", Level::Info, &format!("line {i}"))).collect();
        events.push(event(31, "m1-s2", Level::Error, long));
        events.push(event(32, "m1-s2", Level::Info, "line 32"));
        open_step(&mut app, t0, events);
        let s = screen(&draw(&app, 80, 24));
        assert!(s.contains("connection refused (os error 111)"), "the reason is shown: {s}");
        let last = s.lines().rev().find(|l| l.contains("line ")).unwrap_or_default();
        assert!(last.contains("line 32"), "the newest event is the last row: {s}");
        assert!(s.contains("line 30"), "{s}");
        app.update(Msg::Key(KeyEvent::from(KeyCode::Char('w'))), t0);
        let s = screen(&draw(&app, 80, 24));
        assert!(!s.contains("os error 111"), "one line per event, cut at the edge: {s}");
        assert!(s.contains("not wrapped: w"), "{s}");
        assert!(s.contains("line 32"), "{s}");
    }

    /// `/` in the events pane keeps the loaded events that contain the text (case aside),
    /// marks each match, and Esc brings every event back.
    #[test]
    fn slash_searches_the_loaded_events_and_marks_matches() {
        let (mut app, t0) = dashboard(true);
        let events = vec![
            event(1, "m1-s2", Level::Info, "running 8 test shards"),
            event(2, "m1-s2", Level::Warn, "disk is slow"),
            event(3, "m1-s2", Level::Error, "Shard 5 failed: exit 1"),
        ];
        open_step(&mut app, t0, events);
        if let View::Manager { focus, .. } = &mut app.view {
            *focus = Focus::Events;
        }
        for c in "/shard".chars() {
            app.update(Msg::Key(KeyEvent::from(KeyCode::Char(c))), t0);
        }
        app.update(Msg::Key(KeyEvent::from(KeyCode::Enter)), t0);
        assert!(!app.should_quit);
        let buf = draw(&app, 100, 16);
        let s = screen(&buf);
        assert!(s.contains("/shard · Esc clears"), "{s}");
        assert!(s.contains("running 8 test shards") && s.contains("Shard 5 failed"), "{s}");
        assert!(!s.contains("disk is slow"), "{s}");
        let (y, row) = s.lines().enumerate().find(|(_, l)| l.contains("Shard 5 failed")).unwrap();
        // Columns are chars here: the row holds no wide character.
        let col = row.chars().position(|c| c == 'S').unwrap() as u16;
        assert_eq!(buf[(col, y as u16)].bg, Color::Yellow, "the match is marked");
        let after = col + "Shard ".len() as u16;
        assert_ne!(buf[(after, y as u16)].bg, Color::Yellow, "only the match");
        app.update(Msg::Key(KeyEvent::from(KeyCode::Esc)), t0);
        assert!(screen(&draw(&app, 100, 16)).contains("disk is slow"));
    }

    #[test]
    fn events_follow_the_tail() {
        let (mut app, t0) = dashboard(true);
        let events = (1..=100).map(|i| event(i, "m1-s2", Level::Info, &format!("line {i}"))).collect();
        open_step(&mut app, t0, events);
        let s = screen(&draw(&app, 80, 20));
        assert!(s.contains("line 100"), "{s}");
        assert!(!s.contains("line 1 "), "{s}");
    }

    #[test]
    fn help_overlay() {
        let (mut app, t0) = dashboard(true);
        app.update(Msg::Key(KeyEvent::from(KeyCode::Char('?'))), t0);
        let s = screen(&draw(&app, 80, 20));
        assert!(s.contains("Keys (any key closes)"), "{s}");
        assert!(s.contains("cancel (confirm)"), "{s}");
        insta::assert_snapshot!(s);
        app.update(Msg::Key(KeyEvent::from(KeyCode::Esc)), t0);
        assert!(!screen(&draw(&app, 80, 20)).contains("Keys (any key closes)"));
    }

    #[test]
    fn reconnecting_state() {
        let (mut app, t0) = dashboard(true);
        let retry_at = t0 + Duration::from_secs(4);
        app.update(Msg::Link(LinkEvent::Disconnected { retry_at, reason: "closed".into() }), t0);
        app.update(Msg::Tick { wall_ms: WALL }, t0 + Duration::from_millis(1500));
        let s = screen(&draw(&app, 80, 8));
        assert!(s.contains("● reconnecting in 3s"), "{s}");
        insta::assert_snapshot!(s);
    }

    #[test]
    fn escape_sequences_in_messages_are_harmless() {
        let (mut app, t0) = dashboard(true);
        open_step(&mut app, t0, vec![event(1, "m1-s2", Level::Info, "before\x1b[2Jafter\x1b]0;pwned\x07!")]);
        let buf = draw(&app, 100, 16);
        let s = screen(&buf);
        assert!(s.contains("[test/step] beforeafter!"), "{s}");
        assert!(!s.contains("pwned"), "{s}");
        assert!(
            buf.content().iter().all(|c| !c.symbol().chars().any(char::is_control)),
            "a control character reached a cell"
        );
        // Names too: m3's name carries colour codes.
        assert!(screen(&draw(&app_with_list(), 100, 12)).contains("Deploy red"));
    }

    fn app_with_list() -> App {
        dashboard(true).0
    }

    #[test]
    fn narrow_terminals_stay_readable() {
        let (app, _) = dashboard(true);
        let s = screen(&draw(&app, 40, 12));
        assert!(s.contains("running"), "{s}");
        assert!(s.contains("m1 Nightly"), "{s}");
        insta::assert_snapshot!(s);
    }

    #[test]
    fn no_color_means_no_colour() {
        let (mut app, t0) = dashboard(false);
        open_step(&mut app, t0, vec![event(1, "m1-s2", Level::Error, "boom")]);
        let buf = draw(&app, 100, 16);
        assert!(buf.content().iter().all(|c| c.fg == Color::Reset && c.bg == Color::Reset));
        let (mut app, t0) = dashboard(true);
        open_step(&mut app, t0, vec![event(1, "m1-s2", Level::Error, "boom")]);
        assert!(draw(&app, 100, 16).content().iter().any(|c| c.fg == Color::Red));
    }

    fn definitions() -> Vec<quaero_shared::DefinitionInfo> {
        let nightly: quaero_shared::DefinitionInfo = serde_json::from_value(serde_json::json!({
            "id": "nightly", "name": "Nightly", "description": "", "steps": [], "valid": true,
            "source": "api", "enabled": true, "queue": "default", "schedule": "30 2 * * *",
            "timezone": "Europe/Berlin", "schedule_text": "At 02:30 \u{1b}[2J",
            // Four minutes after WALL.
            "next_run_at": "2026-11-28T13:06:05Z",
            "last_run": {"job_id": "m1", "status": "failed", "finished_at": "2026-11-28T13:00:05Z"},
            "tags": ["db", "nightly"],
            "params": {"env": "staging", "host": {"description": "where to"}}
        }))
        .unwrap();
        let off: quaero_shared::DefinitionInfo = serde_json::from_value(serde_json::json!({
            "id": "manual", "name": "Manual", "description": "", "steps": [], "valid": true,
            "source": "api", "enabled": false, "queue": "batch"
        }))
        .unwrap();
        vec![nightly, off]
    }

    fn press(app: &mut App, t0: Instant, code: KeyCode) -> Vec<crate::app::Cmd> {
        app.update(Msg::Key(KeyEvent::from(code)), t0)
    }

    #[test]
    fn the_definitions_view_shows_schedules_next_runs_and_switches_them() {
        use crate::app::Cmd;
        let (mut app, t0) = dashboard(true);
        let cmds = press(&mut app, t0, KeyCode::Char('D'));
        assert!(cmds.contains(&Cmd::LoadDefinitions));
        app.update(Msg::Definitions(Ok(definitions())), t0);
        let s = screen(&draw(&app, 120, 10));
        assert!(s.contains("At 02:30"), "{s}");
        assert!(s.contains("in 4m00s"), "next run, relative: {s}");
        assert!(s.contains("failed 2m00s ago"), "last run: {s}");
        assert!(s.contains("db,nightly"), "{s}");
        assert!(s.contains("off") && s.contains("manual"), "{s}");
        assert!(draw(&app, 120, 10).content().iter().all(|c| !c.symbol().contains('\x1b')), "sanitized");

        // e switches the selected one: nightly is on, so it asks to disable it.
        let cmds = press(&mut app, t0, KeyCode::Char('e'));
        assert_eq!(cmds, vec![Cmd::SetEnabled { definition: "nightly".into(), enabled: false }]);
        press(&mut app, t0, KeyCode::Char('j'));
        let cmds = press(&mut app, t0, KeyCode::Char('e'));
        assert_eq!(cmds, vec![Cmd::SetEnabled { definition: "manual".into(), enabled: true }]);
        // A disabled one does not run; it says how to enable it.
        let cmds = press(&mut app, t0, KeyCode::Enter);
        assert!(cmds.is_empty());
        assert!(app.status_line.as_deref().unwrap().contains("disabled"));
        // When the next run's time passes, the view reloads the definitions (throttled).
        let later = WALL + 5 * 60_000;
        let cmds = app.update(Msg::Tick { wall_ms: later }, t0 + Duration::from_secs(1));
        assert!(cmds.contains(&Cmd::LoadDefinitions), "{cmds:?}");
        let cmds = app.update(Msg::Tick { wall_ms: later }, t0 + Duration::from_millis(1100));
        assert!(!cmds.contains(&Cmd::LoadDefinitions), "not on every tick");
        press(&mut app, t0, KeyCode::Esc);
        assert_eq!(app.view, View::Managers);
    }

    #[test]
    fn running_a_definition_with_params_asks_for_each_and_a_delay() {
        use crate::app::Cmd;
        let (mut app, t0) = dashboard(true);
        app.update(Msg::Definitions(Ok(definitions())), t0);
        press(&mut app, t0, KeyCode::Char('r'));
        press(&mut app, t0, KeyCode::Enter);
        let s = screen(&draw(&app, 100, 16));
        assert!(s.contains("Run nightly"), "{s}");
        assert!(s.contains("env") && s.contains("staging"), "the default is filled in: {s}");
        assert!(s.contains("host*") && s.contains("where to"), "required, with its description: {s}");
        // env: replace "staging" with "prod"; host: "db1"; delay: "10m". `q` is text here.
        for _ in 0.."staging".len() {
            press(&mut app, t0, KeyCode::Backspace);
        }
        for c in "prod".chars() {
            press(&mut app, t0, KeyCode::Char(c));
        }
        press(&mut app, t0, KeyCode::Tab);
        for c in "db1q".chars() {
            press(&mut app, t0, KeyCode::Char(c));
        }
        press(&mut app, t0, KeyCode::Tab);
        for c in "10m".chars() {
            press(&mut app, t0, KeyCode::Char(c));
        }
        let cmds = press(&mut app, t0, KeyCode::Enter);
        let [Cmd::Execute { definition, req }] = cmds.as_slice() else { panic!("{cmds:?}") };
        assert_eq!(definition, "nightly");
        assert_eq!(req.params["env"].to_text(), "prod");
        assert_eq!(req.params["host"].to_text(), "db1q");
        assert_eq!(req.delay.as_deref(), Some("10m"));
        assert!(app.overlay.is_none());
        assert!(!app.should_quit, "q typed into a field does not quit");
        // Refused: the dialog opens again with what was typed and the reason.
        app.update(Msg::Executed(Err("params.host: \u{1b}[31mno\u{1b}[0m such host".into())), t0);
        let s = screen(&draw(&app, 100, 16));
        assert!(s.contains("db1q") && s.contains("prod"), "what was typed is kept: {s}");
        assert!(s.contains("params.host: no such host"), "the reason, sanitized: {s}");
        assert!(draw(&app, 100, 16).content().iter().all(|c| !c.symbol().contains('\x1b')));
    }

    #[test]
    fn the_queues_view_follows_the_socket_and_pauses() {
        use crate::app::Cmd;
        let (mut app, t0) = dashboard(true);
        let cmds = press(&mut app, t0, KeyCode::Char('Q'));
        assert!(cmds.contains(&Cmd::LoadQueues));
        let q = |paused: bool, running: u64| quaero_shared::QueueInfo {
            name: "default".into(),
            concurrency: 16,
            paused,
            pending: 3,
            running,
            completed_last_minute: 42,
        };
        app.update(Msg::Queues(Ok(vec![q(false, 2)])), t0);
        let s = screen(&draw(&app, 80, 8));
        assert!(s.contains("default") && s.contains("active") && s.contains("2/16") && s.contains("42"), "{s}");
        let cmds = press(&mut app, t0, KeyCode::Char('p'));
        assert_eq!(cmds, vec![Cmd::SetQueuePaused { queue: "default".into(), paused: true }]);
        let msg = quaero_shared::ServerMessage::Queues(quaero_shared::QueuesList { queues: vec![q(true, 5)] });
        app.update(Msg::Link(LinkEvent::Message(msg)), t0);
        let s = screen(&draw(&app, 80, 8));
        assert!(s.contains("paused") && s.contains("5/16"), "{s}");
    }
}
