// Quaero dashboard: plain JavaScript, no library, no inline script and no eval, so the page
// also works under a strict Content-Security-Policy (`script-src 'self'`).
//
// How it is built:
// - `S` holds all state. Network code changes it and calls `render()`, which redraws on the
//   next animation frame. Rendering updates existing elements in place (keyed by job id), so
//   checkboxes, scroll positions and open panels survive live updates.
// - Everything that comes from the server goes into the DOM as text (`h()` turns strings into
//   text nodes, `setText()` sets textContent); nothing here ever assigns innerHTML.
// - Step events are never pushed: a `refresh_step_events` trigger makes the page refetch the
//   last 100 events of the open steps it names, through `StepFetcher` (at most one fetch per
//   step per 500 ms, `finished` at once, never two in flight for one step). While the operator
//   reads further up (follow off) it fetches what follows the newest event shown instead, so
//   nothing goes missing in between. Scrolling a panel to the top loads the page before the
//   oldest event shown (`before=`, one at a time, beside the refetches), until an empty page.
//
// Choices the design leaves open: times are shown in the browser's local time zone (the full
// UTC timestamp is in each tooltip); a running manager's card expands by itself, as does one
// that fails while shown, unless the operator collapsed it; a panel the operator closed stays
// closed. Run on a definition with params opens a dialog for them (and a delay); one without
// params runs at once, and its Later… button asks for a delay. The tag filter is kept in
// localStorage beside the status filter.
(() => {
  'use strict';

  const STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'];
  const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
  const LEVELS = new Set(['debug', 'info', 'warn', 'error']);
  const PAGE_SIZE = 50;
  const EVENTS_LIMIT = 100;
  const REFETCH_GAP_MS = 500;
  const DEFS_RELOAD_MS = 2000;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const FILTER_KEY = 'quaero.statusFilter';
  const TAG_KEY = 'quaero.tagFilter';
  const TOKEN_KEY = 'quaero.token';
  // Child progress bar, left to right: what is done, then what is running.
  const BAR_SEGMENTS = ['completed', 'failed', 'cancelled', 'running'];
  const STATUS_ICON = { pending: '○', running: '◐', completed: '✓', failed: '✗', cancelled: '⊘' };

  // ---------------------------------------------------------------- state

  const S = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    needToken: false,
    stats: null,
    hello: null,
    conn: 'connecting', // connecting | live | down
    retryAt: 0,
    definitions: [],
    defsError: null,
    managers: [], // the current page, newest first
    total: 0,
    offset: 0,
    listLoaded: false,
    listError: null,
    filter: new Set(loadFilter()),
    tag: localStorage.getItem(TAG_KEY) || '', // '' = all tags
    queues: null, // GET /api/queues, then the `queues` WebSocket message
    defToggling: new Map(), // definition id -> the `enabled` asked for, while the request runs
    queueBusy: new Set(), // queues with a pause or resume in flight
    selected: new Set(),
    expanded: new Set(),
    userCollapsed: new Set(), // managers the operator collapsed: never auto-expand again
    seenLive: new Set(), // managers that changed status while this page watched
    details: new Map(), // manager id -> GET /api/jobs/{id} (with `steps`)
    panels: new Map(), // step id -> {open, loaded, events, lastSeq, error, version, ...}: see panel()
    userClosed: new Set(), // step panels the operator closed: never auto-open again
    fullError: new Set(), // manager ids whose failure reason is shown in full
    notices: [],
  };

  function loadFilter() {
    try {
      const v = JSON.parse(localStorage.getItem(FILTER_KEY) || '[]');
      return Array.isArray(v) ? v.filter((s) => STATUSES.includes(s)) : [];
    } catch {
      return [];
    }
  }

  function panel(stepId) {
    let p = S.panels.get(stepId);
    if (!p) {
      p = { open: false, loaded: false, events: [], lastSeq: -1, error: null, version: 0,
        history: false, // older pages were loaded: refetches keep them
        older: false, // an older page is being loaded
        olderError: null,
        beginning: false, // the first event of the step is loaded
        filter: '', // only events whose message contains this (ignoring case)
        wrap: true };
      S.panels.set(stepId, p);
    }
    return p;
  }

  const managerOf = (id) => String(id).split('-')[0];
  const idNum = (id) => {
    const m = /^m(\d+)/.exec(id);
    return m ? Number(m[1]) : -1;
  };
  const newestFirst = (a, b) => idNum(b.id) - idNum(a.id) || String(b.created_at).localeCompare(String(a.created_at));

  // ---------------------------------------------------------------- formatting

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  // `HH:MM:SS.mmm` in local time; falls back to the server's string if the date won't parse.
  function eventTime(e) {
    const d = new Date(e.full_timestamp);
    if (Number.isNaN(d.getTime())) return e.timestamp || '';
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function shortTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const t = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const today = new Date();
    return d.toDateString() === today.toDateString() ? t : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}`;
  }

  function duration(ms) {
    if (ms == null || Number.isNaN(ms)) return '—';
    if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${pad(Math.floor(s % 60))}s`;
    return `${Math.floor(m / 60)}h ${pad(m % 60)}m`;
  }

  // `in 12 s`, `in 4 min`, `in 3 h 5 min`, `in 2 d 4 h` until `iso`; `now` once it has passed.
  function untilText(iso) {
    const ms = Date.parse(iso) - Date.now();
    if (Number.isNaN(ms)) return String(iso);
    const s = Math.ceil(ms / 1000);
    if (s <= 0) return 'now';
    if (s < 60) return `in ${s} s`;
    const m = Math.round(s / 60);
    if (m < 60) return `in ${m} min`;
    const hours = Math.floor(m / 60);
    if (hours < 24) return `in ${hours} h${m % 60 ? ` ${m % 60} min` : ''}`;
    return `in ${Math.floor(hours / 24)} d${hours % 24 ? ` ${hours % 24} h` : ''}`;
  }

  // A scheduled time in local time: `02:30` (seconds only when set), with the date when not today.
  function clockTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const t = `${pad(d.getHours())}:${pad(d.getMinutes())}${d.getSeconds() ? `:${pad(d.getSeconds())}` : ''}`;
    return d.toDateString() === new Date().toDateString() ? t : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}`;
  }

  // A definition's params: `name = default` or `name = {default?, description?}`; no default
  // makes it required. `value` is the default as text ('' when there is none).
  function paramList(def) {
    return Object.entries(def.params || {}).map(([name, spec]) => {
      const declared = spec !== null && typeof spec === 'object';
      const dflt = declared ? spec.default : spec;
      return { name, value: dflt == null ? '' : String(dflt), required: dflt == null, description: (declared && spec.description) || '' };
    });
  }

  // Running jobs count up from their start; finished ones show what the server measured.
  function jobDuration(j) {
    if (j.status === 'running' && j.started_at) return Date.now() - Date.parse(j.started_at);
    if (j.duration_ms != null) return j.duration_ms;
    if (j.started_at && j.finished_at) return Date.parse(j.finished_at) - Date.parse(j.started_at);
    return null;
  }

  // ---------------------------------------------------------------- DOM helpers

  // h('div', {class: 'x', onclick: f, 'data-id': id}, 'text', child...): strings become text nodes.
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k in el && !k.includes('-')) el[k] = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat()) {
      if (kid == null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  function setText(el, s) {
    s = s == null ? '' : String(s);
    if (el.textContent !== s) el.textContent = s;
  }

  function setAttr(el, name, value) {
    if (value == null) {
      if (el.hasAttribute(name)) el.removeAttribute(name);
    } else if (el.getAttribute(name) !== String(value)) el.setAttribute(name, value);
  }

  // Keeps `container`'s children in the order of `items`, reusing one view per key.
  function syncList(container, items, keyOf, create, update) {
    const views = container._views || (container._views = new Map());
    const seen = new Set();
    let prev = null;
    for (const item of items) {
      const key = keyOf(item);
      seen.add(key);
      let view = views.get(key);
      if (!view) {
        view = create(item);
        views.set(key, view);
      }
      update(view, item);
      const want = prev ? prev.nextSibling : container.firstChild;
      if (want !== view.el) container.insertBefore(view.el, want);
      prev = view.el;
    }
    for (const [key, view] of views) {
      if (!seen.has(key)) {
        view.el.remove();
        views.delete(key);
      }
    }
  }

  function badge(el, status) {
    setText(el, status);
    setAttr(el, 'data-status', status);
    el.className = `badge st-${STATUSES.includes(status) ? status : 'unknown'}`;
  }

  // ---------------------------------------------------------------- notices and dialogs

  let noticeSeq = 0;
  function notify(kind, text) {
    const n = { id: ++noticeSeq, kind, text };
    S.notices.push(n);
    if (S.notices.length > 6) S.notices.shift();
    setTimeout(() => dismiss(n.id), kind === 'error' ? 15000 : 5000);
    render();
  }
  function dismiss(id) {
    S.notices = S.notices.filter((n) => n.id !== id);
    render();
  }
  function reportError(what, e) {
    if (e && e.status === 401) return; // the token prompt says it
    notify('error', `${what}: ${e && e.message ? e.message : e}`);
  }

  const modal = () => document.getElementById('modal');
  let modalClose = null;

  function showModal(box, onClose) {
    if (modalClose) modalClose(false);
    const back = modal();
    back.replaceChildren(box);
    back.hidden = false;
    modalClose = onClose;
    const focus = box.querySelector('[autofocus]') || box.querySelector('button.primary, button.danger');
    if (focus) focus.focus();
  }

  function closeModal(result) {
    const back = modal();
    back.hidden = true;
    back.replaceChildren();
    const f = modalClose;
    modalClose = null;
    if (f) f(result);
  }

  // Resolves true when the operator confirms.
  function confirmDialog(title, paragraphs, okLabel) {
    return new Promise((resolve) => {
      const box = h('div', { class: 'modal', role: 'dialog', 'aria-modal': 'true' },
        h('h3', {}, title),
        paragraphs.map((p) => h('p', {}, p)),
        h('div', { class: 'modal-actions' },
          h('button', { class: 'btn', type: 'button', onclick: () => closeModal(false) }, 'Keep'),
          h('button', { class: 'btn danger', type: 'button', onclick: () => closeModal(true) }, okLabel)));
      showModal(box, resolve);
    });
  }

  function askToken() {
    if (S.needToken) return;
    S.needToken = true;
    const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', autofocus: true, placeholder: 'auth token' });
    const form = h('form', { class: 'modal', role: 'dialog', 'aria-modal': 'true', 'data-testid': 'token-form',
      onsubmit: (ev) => {
        ev.preventDefault();
        const t = input.value.trim();
        if (!t) return;
        S.token = t;
        sessionStorage.setItem(TOKEN_KEY, t);
        S.needToken = false;
        closeModal(true);
        refreshShown();
        reconnectNow();
      } },
      h('h3', {}, 'Authentication required'),
      h('p', {}, S.token
        ? 'The server rejected the saved token. Enter the auth token of this quaerod.'
        : 'This quaerod requires an auth token. It is kept in this tab only (sessionStorage).'),
      input,
      h('div', { class: 'modal-actions' }, h('button', { class: 'btn primary', type: 'submit' }, 'Sign in')));
    showModal(form, () => { S.needToken = false; });
  }

  // ---------------------------------------------------------------- REST

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (S.token) headers.Authorization = `Bearer ${S.token}`;
    const init = { method, headers, cache: 'no-store' };
    if (method !== 'GET') {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body ?? {});
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, `server unreachable (${e.message})`);
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (res.status === 401) {
      askToken();
      throw new ApiError(401, (data && data.error) || 'unauthorized');
    }
    if (!res.ok) throw new ApiError(res.status, (data && data.error) || `HTTP ${res.status}`);
    return data;
  }

  const enc = encodeURIComponent;

  async function loadStats() {
    try {
      S.stats = await api('GET', '/api/jobs/stats');
    } catch (e) {
      reportError('stats', e);
    }
    render();
  }

  let defsGeneration = 0;
  async function loadDefinitions() {
    const mine = ++defsGeneration;
    try {
      const r = await api('GET', '/api/job-definitions');
      if (mine !== defsGeneration) return; // a newer load, or an enable/disable, won
      S.definitions = r.job_definitions || [];
      S.defsError = null;
    } catch (e) {
      if (mine !== defsGeneration) return;
      S.defsError = e.message;
    }
    render();
  }

  // Next run times and last runs move when a run starts or ends, or a schedule fires: one
  // reload for all that happens within DEFS_RELOAD_MS.
  let defsTimer = null;
  function loadDefinitionsSoon() {
    if (defsTimer) return;
    defsTimer = setTimeout(() => {
      defsTimer = null;
      loadDefinitions();
    }, DEFS_RELOAD_MS);
  }

  async function loadQueues() {
    try {
      const r = await api('GET', '/api/queues');
      S.queues = r.queues || [];
    } catch (e) {
      reportError('queues', e);
    }
    render();
  }

  let listGeneration = 0;
  async function loadList() {
    const mine = ++listGeneration;
    const q = new URLSearchParams({ parent_id: 'root', limit: String(PAGE_SIZE), offset: String(S.offset) });
    if (S.filter.size) q.set('status', STATUSES.filter((s) => S.filter.has(s)).join(','));
    if (S.tag) q.set('tag', S.tag);
    try {
      const r = await api('GET', `/api/jobs?${q}`);
      if (mine !== listGeneration) return; // a newer load won
      S.total = r.total_count;
      if (S.offset > 0 && S.offset >= S.total) {
        S.offset = Math.max(0, Math.floor((S.total - 1) / PAGE_SIZE) * PAGE_SIZE);
        return loadList();
      }
      S.managers = (r.jobs || []).slice().sort(newestFirst);
      S.listLoaded = true;
      S.listError = null;
      const shown = new Set(S.managers.map((m) => m.id));
      for (const id of S.selected) if (!shown.has(id)) S.selected.delete(id);
      // A tab left open for days must not keep every run it ever showed.
      for (const id of S.details.keys()) if (!shown.has(id)) S.details.delete(id);
      for (const [id, p] of S.panels) if (!shown.has(managerOf(id)) && !p.open) S.panels.delete(id);
      for (const m of S.managers) {
        // A run that fails while the operator watches opens up too, even when it failed
        // before its card was listed.
        const live = S.seenLive.delete(m.id);
        if ((m.status === 'running' || (live && m.status === 'failed')) && !S.userCollapsed.has(m.id)) S.expanded.add(m.id);
        if (S.expanded.has(m.id)) refreshManager(m.id);
      }
    } catch (e) {
      if (mine !== listGeneration) return;
      S.listError = e.message;
      reportError('managers', e);
    }
    render();
  }

  let reloadTimer = null;
  function reloadListSoon() {
    if (reloadTimer) return;
    reloadTimer = setTimeout(() => {
      reloadTimer = null;
      loadList();
    }, 250);
  }

  // GET /api/jobs/{id} for one manager: times, error and steps. Coalesced per manager: one
  // request in flight, and one more after it if something changed meanwhile.
  const managerLoads = new Map();
  async function refreshManager(id) {
    const st = managerLoads.get(id);
    if (st) {
      st.again = true;
      return;
    }
    const mine = { again: false };
    managerLoads.set(id, mine);
    try {
      const job = await api('GET', `/api/jobs/${enc(id)}`);
      S.details.set(id, job);
      const i = S.managers.findIndex((m) => m.id === id);
      if (i >= 0) {
        const { steps, ...fields } = job;
        S.managers[i] = { ...S.managers[i], ...fields };
      }
      if (S.expanded.has(id)) for (const s of job.steps || []) autoOpen(s);
    } catch (e) {
      if (e.status === 404) {
        S.details.delete(id);
        S.managers = S.managers.filter((m) => m.id !== id);
        reloadListSoon();
      } else reportError(`job ${id}`, e);
    } finally {
      managerLoads.delete(id);
      if (mine.again) refreshManager(id);
    }
    render();
  }

  // ---------------------------------------------------------------- step events

  class StepFetcher {
    constructor(load, gapMs) {
      this.load = load;
      this.gapMs = gapMs;
      this.steps = new Map();
    }

    // `now`: a finished trigger or a panel being opened; otherwise at most one per gap.
    request(id, now = false) {
      let s = this.steps.get(id);
      if (!s) {
        s = { busy: false, again: false, againNow: false, last: -Infinity, timer: null };
        this.steps.set(id, s);
      }
      if (s.busy) {
        s.again = true;
        s.againNow = s.againNow || now;
        return;
      }
      const wait = now ? 0 : s.last + this.gapMs - performance.now();
      if (wait <= 0) this.run(id, s);
      else if (!s.timer) s.timer = setTimeout(() => this.run(id, s), wait);
    }

    async run(id, s) {
      clearTimeout(s.timer);
      s.timer = null;
      s.busy = true;
      s.last = performance.now();
      try {
        await this.load(id);
      } finally {
        s.busy = false;
        if (s.again) {
          const now = s.againNow;
          s.again = s.againNow = false;
          this.request(id, now);
        }
      }
    }
  }

  const fetcher = new StepFetcher(loadEvents, REFETCH_GAP_MS);
  const stick = new Map(); // step id -> follow the tail (false once the operator scrolls up)

  const lastOf = (events) => (events.length ? events[events.length - 1].seq : null);
  // Two runs of one log, each without gaps, hold the same events when their ends match.
  const sameEvents = (a, b) => a.length === b.length && (!a.length || (a[0].seq === b[0].seq && lastOf(a) === lastOf(b)));

  // Following: the newest EVENTS_LIMIT events, with the older pages the operator loaded when
  // they join up (more than a page since the last read: the newest page alone). Reading up
  // (follow off): the events after the newest one shown, appended, page after page.
  async function loadEvents(stepId) {
    const p = panel(stepId);
    const last = lastOf(p.events);
    const tail = last === null || stick.get(stepId) !== false;
    const query = tail ? `limit=${EVENTS_LIMIT}&order=asc` : `after=${last}&limit=${EVENTS_LIMIT}`;
    try {
      const r = await api('GET', `/api/jobs/${enc(stepId)}/logs?${query}`);
      const logs = r.logs || [];
      let events;
      if (!tail) {
        const newest = lastOf(p.events);
        events = p.events.concat(logs.filter((e) => e.seq > newest));
        if (logs.length >= EVENTS_LIMIT) fetcher.request(stepId); // more follow
      } else if (p.history && logs.length && (logs.length < EVENTS_LIMIT || logs[0].seq <= last)) {
        events = p.events.filter((e) => e.seq < logs[0].seq).concat(logs);
      } else {
        events = logs;
        if (p.history || p.beginning || p.olderError) p.version++;
        p.history = p.beginning = false;
        p.olderError = null;
      }
      if (!p.loaded || r.last_seq !== p.lastSeq || !sameEvents(events, p.events)) {
        p.events = events;
        p.lastSeq = r.last_seq;
        p.version++;
      }
      if (p.error) p.version++;
      p.loaded = true;
      p.error = null;
    } catch (e) {
      p.error = e.message;
      p.version++;
    }
    render();
  }

  // Scrolled to the top: the page before the oldest event shown, prepended; an empty one
  // means the log begins there.
  async function loadOlder(stepId) {
    const p = panel(stepId);
    if (!p.loaded || !p.events.length || p.older || p.beginning) return;
    const before = p.events[0].seq;
    p.older = true;
    p.olderError = null;
    p.version++;
    render();
    try {
      const r = await api('GET', `/api/jobs/${enc(stepId)}/logs?before=${before}&limit=${EVENTS_LIMIT}&order=asc`);
      const logs = (r.logs || []).filter((e) => e.seq < before);
      // Unless a refetch started the events afresh meanwhile: then this page does not join up.
      if (p.events.length && p.events[0].seq === before) {
        p.events = logs.concat(p.events);
        p.history = true;
        p.beginning = !logs.length;
      }
    } catch (e) {
      p.olderError = e.message;
    } finally {
      p.older = false;
      p.version++;
    }
    render();
  }

  function openPanel(stepId) {
    const p = panel(stepId);
    if (p.open) return;
    p.open = true;
    p.version++;
    stick.set(stepId, true);
    fetcher.request(stepId, true);
    render();
  }

  function togglePanel(stepId) {
    const p = panel(stepId);
    if (p.open) {
      p.open = false;
      p.version++;
      S.userClosed.add(stepId);
      render();
    } else {
      S.userClosed.delete(stepId);
      openPanel(stepId);
    }
  }

  function autoOpen(step) {
    if ((step.status === 'running' || step.status === 'failed') && !S.userClosed.has(step.id)) openPanel(step.id);
  }

  function panelVisible(stepId) {
    const p = S.panels.get(stepId);
    return !!(p && p.open && S.expanded.has(managerOf(stepId)));
  }

  function toggleExpand(id) {
    if (S.expanded.has(id)) {
      S.expanded.delete(id);
      S.userCollapsed.add(id);
    } else {
      S.expanded.add(id);
      S.userCollapsed.delete(id);
      refreshManager(id);
      const d = S.details.get(id);
      for (const s of (d && d.steps) || []) if (panelVisible(s.id)) fetcher.request(s.id, true);
    }
    render();
  }

  // ---------------------------------------------------------------- WebSocket

  let ws = null;
  let backoff = BACKOFF_MIN_MS;
  let retryTimer = null;

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${proto}//${location.host}/ws${S.token ? `?token=${enc(S.token)}` : ''}`;
    S.conn = 'connecting';
    render();
    let sock;
    try {
      sock = new WebSocket(url);
    } catch {
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onopen = () => {
      if (ws !== sock) return;
      backoff = BACKOFF_MIN_MS;
      S.conn = 'live';
      render();
      refreshShown(); // whatever happened while we were not listening
    };
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      onMessage(msg.type, msg.payload || {});
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const delay = backoff;
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    S.conn = 'down';
    S.retryAt = Date.now() + delay;
    retryTimer = setTimeout(connect, delay);
    render();
  }

  function reconnectNow() {
    const old = ws;
    ws = null;
    if (old) old.close();
    backoff = BACKOFF_MIN_MS;
    connect();
  }

  function onMessage(type, p) {
    switch (type) {
      case 'hello':
        S.hello = p;
        break;
      case 'queue_stats':
        // Fewer jobs than before: runs were deleted (a bulk delete lands batch by batch, the
        // retention sweep, another client), maybe some on this page.
        if (S.stats && p.total_jobs < S.stats.total_jobs) reloadListSoon();
        S.stats = p;
        break;
      case 'queues':
        S.queues = p.queues || [];
        break;
      case 'refresh_step_events': {
        const retrying = new Set();
        for (const id of p.step_ids || []) {
          if (panelVisible(id)) fetcher.request(id, !!p.finished);
          // A step with a retry policy writes an event when an attempt fails or starts:
          // reload its shown manager for the attempt number and the time of the next one
          // (also when its details are still loading, or older than the step's start).
          const mid = managerOf(id);
          if (!S.expanded.has(mid)) continue;
          const d = S.details.get(mid);
          const step = d && d.steps && d.steps.find((s) => s.id === id);
          if (!d || (step && step.max_attempts && (step.attempt || step.status === 'pending'))) retrying.add(mid);
        }
        for (const id of retrying) refreshManager(id);
        return;
      }
      case 'job_log': // push mode: treat each event as a trigger for its step
        if (p.event && p.event.step_id && panelVisible(p.event.step_id)) fetcher.request(p.event.step_id);
        return;
      case 'job_status_change':
        onStatusChange(p);
        break;
      case 'step_progress': {
        const d = S.details.get(p.manager_id);
        const step = d && d.steps && d.steps.find((s) => s.id === p.step_id);
        if (step) step.child_counts = p.child_counts;
        break;
      }
      case 'error':
        notify('error', `server: ${p.message}`);
        return;
      default:
        return;
    }
    render();
  }

  function onStatusChange(p) {
    if (p.kind === 'manager') {
      loadDefinitionsSoon(); // its definition's last run
      const m = S.managers.find((x) => x.id === p.job_id);
      if (!m) {
        S.seenLive.add(p.job_id);
        // Not on this page. Reload when it belongs here: a new run on the first page, or a
        // status the filter asks for.
        const newer = S.offset === 0 && idNum(p.job_id) > Math.max(-1, ...S.managers.map((x) => idNum(x.id)));
        if (S.filter.size ? S.filter.has(p.status) : newer) reloadListSoon();
        return;
      }
      m.status = p.status;
      if (p.error) m.error = p.error;
      if ((p.status === 'running' || p.status === 'failed') && !S.userCollapsed.has(m.id)) S.expanded.add(m.id);
      refreshManager(m.id);
    } else if (p.kind === 'step') {
      const d = S.details.get(p.manager_id);
      const step = d && d.steps && d.steps.find((s) => s.id === p.job_id);
      if (step) {
        step.status = p.status;
        if (p.error) step.error = p.error;
        if (S.expanded.has(p.manager_id)) autoOpen(step);
      }
      if (d || S.managers.some((m) => m.id === p.manager_id)) refreshManager(p.manager_id);
    }
  }

  // After (re)connecting or signing in: refetch everything on screen.
  function refreshShown() {
    loadStats();
    loadDefinitions();
    loadQueues();
    loadList();
    for (const [id, p] of S.panels) if (p.open && panelVisible(id)) fetcher.request(id, true);
  }

  // ---------------------------------------------------------------- actions

  // Runs at once, or asks for the parameters first when the definition takes some.
  async function runDefinition(def) {
    if (paramList(def).length) {
      openRunDialog(def);
      return;
    }
    try {
      const r = await api('POST', `/api/job-definitions/${enc(def.id)}/execute`, {});
      notify('info', `Started ${r.job_id} (${def.name || def.id})`);
      showNewManager(r.job_id, def.tags);
    } catch (e) {
      reportError(`run ${def.id}`, e);
    }
  }

  // One input per parameter, prefilled with its default, and an optional delay. A refused
  // request (a required parameter left empty, a bad delay) shows the server's message here
  // and keeps the dialog open.
  function openRunDialog(def) {
    const label = def.name || def.id;
    const inputs = new Map(); // param name -> input
    const fields = paramList(def).map((p, i) => {
      const id = `run-param-${i}`;
      const input = h('input', { id, name: p.name, value: p.value, autocomplete: 'off', 'data-param': p.name,
        placeholder: p.required ? 'required' : '', 'aria-required': p.required ? 'true' : null,
        'aria-describedby': p.description ? `${id}-desc` : null });
      inputs.set(p.name, input);
      return h('div', { class: 'field' },
        h('label', { for: id }, h('code', {}, p.name), p.required ? h('span', { class: 'req' }, 'required') : null),
        input,
        p.description ? h('div', { class: 'field-desc', id: `${id}-desc` }, p.description) : null);
    });
    const delay = h('input', { id: 'run-delay', name: 'delay', autocomplete: 'off', placeholder: 'now, or e.g. 90s, 10m, 1h 30m' });
    const error = h('p', { class: 'modal-error', role: 'alert', hidden: true });
    const submit = h('button', { class: 'btn primary', type: 'submit' }, 'Run');
    const form = h('form', { class: 'modal', role: 'dialog', 'aria-modal': 'true', 'aria-label': `Run ${label}`,
      'data-testid': 'run-form', novalidate: true, onsubmit: async (ev) => {
        ev.preventDefault();
        if (submit.disabled) return;
        const body = {};
        const params = {};
        for (const [name, input] of inputs) if (input.value !== '') params[name] = input.value; // empty: its default
        if (Object.keys(params).length) body.params = params;
        const wait = delay.value.trim();
        if (wait) body.delay = wait;
        for (const input of [...inputs.values(), delay]) input.removeAttribute('aria-invalid');
        submit.disabled = true;
        try {
          const r = await api('POST', `/api/job-definitions/${enc(def.id)}/execute`, body);
          if (form.isConnected) closeModal(true);
          notify('info', wait ? `Started ${r.job_id} (${label}), waiting ${wait}` : `Started ${r.job_id} (${label})`);
          showNewManager(r.job_id, def.tags);
        } catch (e) {
          if (!form.isConnected) {
            reportError(`run ${def.id}`, e); // closed meanwhile, or replaced by the token prompt
            return;
          }
          setText(error, e.message);
          error.hidden = false;
          const m = /^(?:params\.(\w+)|delay|run_at):/.exec(e.message);
          const bad = m && (m[1] ? inputs.get(m[1]) : delay);
          if (bad) {
            bad.setAttribute('aria-invalid', 'true');
            bad.focus();
          }
        } finally {
          submit.disabled = false;
        }
      } },
      h('h3', {}, `Run ${label}`),
      fields,
      h('div', { class: 'field' }, h('label', { for: 'run-delay' }, 'Start after'), delay),
      error,
      h('div', { class: 'modal-actions' },
        h('button', { class: 'btn', type: 'button', onclick: () => closeModal(false) }, 'Cancel'),
        submit));
    const first = [...inputs.values()].find((i) => i.getAttribute('aria-required') && !i.value) || inputs.values().next().value || delay;
    first.setAttribute('autofocus', '');
    showModal(form, () => {});
  }

  async function setEnabled(def, on) {
    S.defToggling.set(def.id, on);
    render();
    try {
      const d = await api('POST', `/api/job-definitions/${enc(def.id)}/${on ? 'enable' : 'disable'}`, {});
      defsGeneration++; // a listing read before this answer is older than it
      S.definitions = S.definitions.map((x) => (x.id === d.id ? d : x));
      notify('info', `${on ? 'Enabled' : 'Disabled'} ${d.name || d.id}`);
    } catch (e) {
      reportError(`${on ? 'enable' : 'disable'} ${def.id}`, e);
    } finally {
      S.defToggling.delete(def.id);
      render();
    }
  }

  async function setQueuePaused(q, paused) {
    S.queueBusy.add(q.name);
    render();
    try {
      const r = await api('POST', `/api/queues/${enc(q.name)}/${paused ? 'pause' : 'resume'}`, {});
      if (S.queues) S.queues = S.queues.map((x) => (x.name === r.name ? r : x));
    } catch (e) {
      reportError(`${paused ? 'pause' : 'resume'} queue ${q.name}`, e);
    } finally {
      S.queueBusy.delete(q.name);
      render();
    }
  }

  async function rerun(m) {
    try {
      const r = await api('POST', `/api/jobs/${enc(m.id)}/rerun`, {});
      notify('info', `Rerun of ${m.id} started as ${r.new_job_id}`);
      showNewManager(r.new_job_id, m.tags);
    } catch (e) {
      reportError(`rerun ${m.id}`, e);
    }
  }

  function showNewManager(id, tags) {
    S.expanded.add(id);
    S.userCollapsed.delete(id);
    if (S.filter.size && !S.filter.has('pending') && !S.filter.has('running')) {
      notify('info', `${id} is hidden by the status filter`);
    } else if (S.tag && !(tags || []).includes(S.tag)) {
      notify('info', `${id} is hidden by the tag filter`);
    }
    S.offset = 0;
    loadList();
  }

  async function cancelManager(m) {
    const ok = await confirmDialog(`Cancel ${m.id}?`, [
      `“${m.name}” will be cancelled: its running step and every pending or running child job stop.`,
      'Running processes get SIGTERM, then SIGKILL after a grace period.',
    ], 'Cancel job');
    if (!ok) return;
    try {
      const r = await api('POST', `/api/jobs/${enc(m.id)}/cancel`, {});
      notify('info', r.message || `Cancelled ${m.id}`);
      refreshManager(m.id);
    } catch (e) {
      reportError(`cancel ${m.id}`, e);
    }
  }

  const CASCADE = 'This deletes each manager with all of its steps, their child jobs and every event they logged. It cannot be undone.';

  async function deleteManager(m) {
    const ok = await confirmDialog(`Delete ${m.id}?`, [
      `“${m.name}” (${m.id}) will be deleted with all of its steps, their child jobs and every event they logged.`,
      'It cannot be undone.',
    ], 'Delete');
    if (!ok) return;
    await deleteIds([m.id]);
  }

  async function deleteSelected() {
    const ids = S.managers.map((m) => m.id).filter((id) => S.selected.has(id));
    if (!ids.length) return;
    const running = S.managers.filter((m) => S.selected.has(m.id) && !TERMINAL.has(m.status)).map((m) => m.id);
    const ok = await confirmDialog(`Delete ${ids.length} manager${ids.length > 1 ? 's' : ''}?`, [
      ids.join(', '),
      CASCADE,
      running.length ? `Not finished, so they will be refused until cancelled: ${running.join(', ')}.` : null,
    ].filter(Boolean), `Delete ${ids.length}`);
    if (!ok) return;
    await deleteIds(ids);
  }

  async function deleteIds(ids) {
    let jobs = 0;
    let events = 0;
    let done = 0;
    for (const id of ids) {
      try {
        const r = await api('DELETE', `/api/jobs/${enc(id)}`, {});
        jobs += r.deleted_jobs || 0;
        events += r.deleted_events || 0;
        done++;
        S.selected.delete(id);
        S.details.delete(id);
        S.expanded.delete(id);
      } catch (e) {
        reportError(`delete ${id}`, e);
      }
    }
    if (done) notify('info', `Deleted ${done} manager${done > 1 ? 's' : ''}: ${jobs} jobs, ${events} events`);
    loadList();
  }

  // Bulk delete by status and finish time: the server answers at once with how many runs
  // match and deletes them in the background; the list follows the stats (see onMessage).
  function openDeleteFinishedDialog() {
    const status = h('select', { id: 'bulk-status', name: 'status', autofocus: true },
      h('option', { value: 'failed' }, 'failed'),
      h('option', { value: 'cancelled' }, 'cancelled'),
      h('option', { value: 'completed' }, 'completed'),
      h('option', { value: '' }, 'all finished'));
    const before = h('input', { id: 'bulk-before', name: 'finished_before', type: 'datetime-local', autocomplete: 'off',
      'aria-describedby': 'bulk-before-desc' });
    const error = h('p', { class: 'modal-error', role: 'alert', hidden: true });
    const form = h('form', { class: 'modal', role: 'dialog', 'aria-modal': 'true', 'aria-label': 'Delete finished runs',
      'data-testid': 'delete-finished-form', novalidate: true, onsubmit: (ev) => {
        ev.preventDefault();
        // Local time. A date typed in part reads as '' (no limit at all): refused here.
        const when = before.value ? new Date(before.value) : null;
        if (before.validity.badInput || (when && Number.isNaN(when.getTime()))) {
          setText(error, 'finished before: give a whole date and time, or none');
          error.hidden = false;
          before.setAttribute('aria-invalid', 'true');
          before.focus();
          return;
        }
        deleteFinished(status.value, when);
      } },
      h('h3', {}, 'Delete finished runs'),
      h('div', { class: 'field' }, h('label', { for: 'bulk-status' }, 'Status'), status),
      h('div', { class: 'field' }, h('label', { for: 'bulk-before' }, 'Finished before'), before,
        h('div', { class: 'field-desc', id: 'bulk-before-desc' }, 'Optional, in local time; empty: whenever they finished.')),
      error,
      h('div', { class: 'modal-actions' },
        h('button', { class: 'btn', type: 'button', onclick: () => closeModal(false) }, 'Cancel'),
        h('button', { class: 'btn danger', type: 'submit' }, 'Delete…')));
    showModal(form, () => {});
  }

  async function deleteFinished(status, when) {
    const iso = when && when.toISOString();
    const ok = await confirmDialog(`Delete every ${status || 'finished'} run${when ? ` that finished before ${shortTime(iso)}` : ''}?`, [
      `Whatever their definition or tag${when ? `, finished before ${iso}` : ''}; runs not finished yet are left out.`,
      CASCADE,
    ], 'Delete');
    if (!ok) return;
    const q = new URLSearchParams({ status: status || [...TERMINAL].join(',') });
    if (when) q.set('finished_before', iso);
    try {
      const r = await api('DELETE', `/api/jobs?${q}`, {});
      notify('info', r.message || `Deleting ${r.count} runs`);
      // As in deleteIds: the listed runs going are no longer selected, expanded or refetched.
      for (const m of S.managers) {
        if (!(status ? m.status === status : TERMINAL.has(m.status)) || (when && !(Date.parse(m.finished_at) < when.getTime()))) continue;
        S.selected.delete(m.id);
        S.details.delete(m.id);
        S.expanded.delete(m.id);
      }
    } catch (e) {
      reportError('delete finished runs', e);
    }
    loadList();
  }

  function setFilter(status) {
    if (status === null) S.filter.clear();
    else if (S.filter.has(status)) S.filter.delete(status);
    else S.filter.add(status);
    localStorage.setItem(FILTER_KEY, JSON.stringify([...S.filter]));
    S.offset = 0;
    S.selected.clear();
    loadList();
    render();
  }

  function setTag(tag) {
    S.tag = tag;
    if (tag) localStorage.setItem(TAG_KEY, tag);
    else localStorage.removeItem(TAG_KEY);
    S.offset = 0;
    S.selected.clear();
    loadList();
    render();
  }

  function goPage(delta) {
    const next = S.offset + delta * PAGE_SIZE;
    if (next < 0 || next >= Math.max(S.total, 1)) return;
    S.offset = next;
    S.selected.clear();
    loadList();
  }

  // ---------------------------------------------------------------- rendering

  let renderQueued = false;
  function render() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      renderNow();
    });
  }

  const ui = {};

  function renderNow() {
    renderStats();
    renderConn();
    renderDefinitions();
    renderQueues();
    renderToolbar();
    renderManagers();
    syncList(ui.notices, S.notices, (n) => n.id, createNotice, () => {});
  }

  const STAT_KEYS = [['total', 'total_jobs'], ...STATUSES.map((s) => [s, `${s}_jobs`])];

  function renderStats() {
    if (!ui.stats.firstChild) {
      for (const [label, key] of STAT_KEYS) {
        ui.stats.append(h('span', { class: `stat stat-${label}`, 'data-stat': label },
          h('span', { class: 'stat-value' }), h('span', { class: 'stat-label' }, label)));
      }
    }
    for (const el of ui.stats.children) {
      const key = STAT_KEYS.find(([l]) => l === el.dataset.stat)[1];
      setText(el.firstChild, S.stats ? S.stats[key] ?? 0 : '–');
    }
  }

  function renderConn() {
    const el = ui.conn;
    el.className = `conn conn-${S.conn}`;
    if (S.conn === 'live') setText(el, 'live');
    else if (S.conn === 'connecting') setText(el, 'connecting…');
    else {
      const secs = Math.max(0, Math.ceil((S.retryAt - Date.now()) / 1000));
      if (!el.querySelector('button')) el.replaceChildren(h('span'), h('button', { class: 'link', type: 'button', onclick: reconnectNow }, 'retry now'));
      setText(el.firstChild, `disconnected · retry in ${secs} s `);
    }
    const hello = S.hello;
    setText(ui.server, hello ? `quaerod ${hello.version} · ${hello.mode} · ${hello.time_threshold_ms} ms` : '');
  }

  function renderDefinitions() {
    const defs = S.definitions.slice().sort((a, b) => String(a.name || a.id).localeCompare(String(b.name || b.id)));
    if (S.defsError) setText(ui.defsNote, `Could not load definitions: ${S.defsError}`);
    else setText(ui.defsNote, defs.length ? '' : 'No job definitions loaded.');
    ui.defsNote.hidden = !ui.defsNote.textContent;
    syncList(ui.defsList, defs, (d) => d.id, createDefinition, updateDefinition);
  }

  function createDefinition(d) {
    const v = { item: d };
    v.name = h('span', { class: 'def-name' });
    v.id = h('code', { class: 'def-id' });
    v.steps = h('span', { class: 'def-steps' });
    v.desc = h('div', { class: 'def-desc' });
    v.err = h('div', { class: 'def-error' });
    v.enabled = h('input', { type: 'checkbox', role: 'switch', onchange: () => setEnabled(v.item, v.enabled.checked) });
    v.switch = h('label', { class: 'switch' }, v.enabled);
    v.later = h('button', { class: 'btn later', type: 'button', title: 'run after a delay', onclick: () => openRunDialog(v.item) }, 'Later…');
    v.run = h('button', { class: 'btn primary run', type: 'button', onclick: () => runDefinition(v.item) }, 'Run');
    v.schedText = h('span', { class: 'def-sched-text' });
    v.next = h('span', { class: 'def-next' });
    v.last = h('span', { class: 'def-last' });
    v.sched = h('div', { class: 'def-sched' }, v.schedText, v.next, v.last);
    v.tags = h('div', { class: 'def-tags', role: 'group', 'aria-label': 'tags' });
    v.el = h('div', { class: 'def', 'data-definition': d.id },
      h('div', { class: 'def-head' }, h('div', { class: 'def-title' }, v.name, v.id), v.switch, v.later, v.run),
      h('div', { class: 'def-meta' }, v.steps), v.sched, v.tags, v.desc, v.err);
    return v;
  }

  function updateDefinition(v, d) {
    v.item = d;
    const label = d.name || d.id;
    setText(v.name, label);
    v.name.title = label;
    setText(v.id, d.id);
    const n = (d.steps || []).length;
    const where = `${d.queue && d.queue !== 'default' ? `queue ${d.queue} · ` : ''}${d.priority ? `priority ${d.priority} · ` : ''}`;
    setText(v.steps, `${where}${n} step${n === 1 ? '' : 's'}${d.timeout ? ` · timeout ${d.timeout}` : ''}${n ? ': ' + d.steps.map((s) => s.name).join(' → ') : ''}`);
    setText(v.desc, d.description || '');
    v.desc.hidden = !d.description;
    setText(v.err, d.valid ? '' : `invalid: ${d.error || 'unknown error'}`);
    v.err.hidden = d.valid;

    // The switch shows what was asked for while the request runs.
    const busy = S.defToggling.has(d.id);
    const enabled = busy ? S.defToggling.get(d.id) : d.enabled !== false;
    v.enabled.checked = enabled;
    v.enabled.disabled = busy;
    setAttr(v.enabled, 'aria-label', `${label} enabled`);
    v.switch.title = enabled ? 'enabled: click to disable (no runs, its schedule stops)' : 'disabled: click to enable';
    const withParams = paramList(d).length > 0;
    setText(v.run, withParams ? 'Run…' : 'Run');
    v.run.disabled = !d.valid || !enabled;
    v.run.title = d.valid && !enabled ? 'disabled: enable it first' : '';
    v.later.hidden = withParams; // Run asks for the delay with the params
    v.later.disabled = v.run.disabled;

    // `At 02:30 (Europe/Berlin) · next in 4 h 12 min · last m12 completed`
    setText(v.schedText, d.schedule ? `${d.schedule_text || d.schedule}${d.timezone ? ` (${d.timezone})` : ''}` : '');
    v.schedText.title = d.schedule ? `schedule: ${d.schedule}` : '';
    v.schedText.hidden = !d.schedule;
    let next = '';
    if (d.schedule && d.next_run_at) {
      const rel = untilText(d.next_run_at);
      next = rel === 'now' ? 'due now' : `next ${rel}`;
    } else if (d.schedule && !enabled) next = 'off while disabled';
    setText(v.next, next);
    v.next.title = d.next_run_at ? `next run ${shortTime(d.next_run_at)} (${d.next_run_at})` : '';
    v.next.hidden = !next;
    const last = d.last_run;
    setText(v.last, last ? `last ${last.job_id} ${last.status}` : '');
    v.last.title = last && last.finished_at ? `finished ${shortTime(last.finished_at)} (${last.finished_at})` : '';
    v.last.hidden = !last;
    v.sched.hidden = !d.schedule && !last;

    const tags = d.tags || [];
    v.tags.hidden = !tags.length;
    syncList(v.tags, tags, (t) => t,
      (t) => ({ el: h('button', { class: 'tag tag-btn', type: 'button', title: `show only runs tagged ${t}`, onclick: () => setTag(S.tag === t ? '' : t) }, t) }),
      (tv, t) => {
        tv.el.classList.toggle('on', S.tag === t);
        setAttr(tv.el, 'aria-pressed', String(S.tag === t));
      });

    v.el.title = d.source ? `source: ${d.source}` : '';
    v.el.classList.toggle('invalid', !d.valid);
    v.el.classList.toggle('disabled', !enabled);
  }

  function renderQueues() {
    const queues = S.queues || [];
    ui.queues.hidden = !queues.length;
    syncList(ui.queueList, queues, (q) => q.name, createQueue, updateQueue);
  }

  function createQueue(q) {
    const v = { item: q };
    v.name = h('span', { class: 'q-name' });
    v.counts = h('span', { class: 'q-counts' });
    v.state = h('span', { class: 'q-state' }, 'paused');
    v.toggle = h('button', { class: 'btn', type: 'button', onclick: () => setQueuePaused(v.item, !v.item.paused) });
    v.el = h('div', { class: 'queue', role: 'group', 'data-queue': q.name }, v.name, v.counts, v.state, v.toggle);
    return v;
  }

  function updateQueue(v, q) {
    v.item = q;
    setText(v.name, q.name);
    setAttr(v.el, 'aria-label', `queue ${q.name}`);
    setText(v.counts, `${q.running}/${q.concurrency} running · ${q.pending} pending`);
    v.counts.title = `${q.running} of ${q.concurrency} slots busy, ${q.pending} waiting, ${q.completed_last_minute} finished in the last minute`;
    v.state.hidden = !q.paused;
    v.el.classList.toggle('paused', q.paused);
    setText(v.toggle, q.paused ? 'Resume' : 'Pause');
    setAttr(v.toggle, 'data-action', q.paused ? 'resume-queue' : 'pause-queue');
    setAttr(v.toggle, 'aria-label', `${q.paused ? 'resume' : 'pause'} queue ${q.name}`);
    v.toggle.title = q.paused ? 'start runs on it again' : 'start nothing new on it; what runs goes on';
    v.toggle.disabled = S.queueBusy.has(q.name);
  }

  // Every tag of a definition, and the one filtered on even when no definition has it now.
  function allTags() {
    const tags = new Set(S.definitions.flatMap((d) => d.tags || []));
    if (S.tag) tags.add(S.tag);
    return [...tags].sort();
  }

  function buildToolbar() {
    const chips = h('div', { class: 'chips', role: 'group', 'aria-label': 'status filter' },
      h('button', { class: 'chip', type: 'button', 'data-filter': '', onclick: () => setFilter(null) }, 'all'),
      STATUSES.map((s) => h('button', { class: `chip chip-${s}`, type: 'button', 'data-filter': s, onclick: () => setFilter(s) }, s)));
    ui.selectAll = h('input', { type: 'checkbox', title: 'select all on this page', onchange: () => {
      if (ui.selectAll.checked) for (const m of S.managers) S.selected.add(m.id);
      else S.selected.clear();
      render();
    } });
    ui.tagFilter = h('select', { class: 'tag-filter', 'aria-label': 'tag filter', title: 'only runs of definitions with this tag',
      onchange: () => setTag(ui.tagFilter.value) });
    ui.bulkDelete = h('button', { class: 'btn danger', type: 'button', 'data-action': 'bulk-delete', onclick: deleteSelected });
    const deleteFinishedBtn = h('button', { class: 'btn danger', type: 'button', 'data-action': 'delete-finished',
      'aria-haspopup': 'dialog', title: 'delete finished runs by status and finish time, on every page', onclick: openDeleteFinishedDialog }, 'Delete finished…');
    ui.pageInfo = h('span', { class: 'page-info' });
    ui.prev = h('button', { class: 'btn', type: 'button', title: 'newer', onclick: () => goPage(-1) }, '‹');
    ui.next = h('button', { class: 'btn', type: 'button', title: 'older', onclick: () => goPage(1) }, '›');
    ui.toolbar.append(
      h('label', { class: 'select-all' }, ui.selectAll),
      h('h2', {}, 'Managers'),
      chips,
      ui.tagFilter,
      ui.bulkDelete,
      deleteFinishedBtn,
      h('span', { class: 'spacer' }),
      h('button', { class: 'btn', type: 'button', title: 'reload the list', onclick: refreshShown }, '↻'),
      ui.pageInfo, ui.prev, ui.next);
    ui.chips = chips;
  }

  function renderToolbar() {
    for (const chip of ui.chips.children) {
      const f = chip.dataset.filter;
      const on = f ? S.filter.has(f) : S.filter.size === 0;
      chip.classList.toggle('on', on);
      setAttr(chip, 'aria-pressed', String(on));
    }
    const tags = allTags();
    syncList(ui.tagFilter, ['', ...tags], (t) => t, (t) => ({ el: h('option', { value: t }, t || 'all tags') }), () => {});
    if (ui.tagFilter.value !== S.tag) ui.tagFilter.value = S.tag;
    ui.tagFilter.classList.toggle('on', !!S.tag);
    ui.tagFilter.hidden = !tags.length;
    const n = S.selected.size;
    setText(ui.bulkDelete, n ? `Delete selected (${n})` : 'Delete selected');
    ui.bulkDelete.disabled = n === 0;
    ui.selectAll.checked = n > 0 && n === S.managers.length;
    ui.selectAll.indeterminate = n > 0 && n < S.managers.length;
    const first = S.total ? S.offset + 1 : 0;
    setText(ui.pageInfo, `${first}–${S.offset + S.managers.length} of ${S.total}`);
    ui.prev.disabled = S.offset === 0;
    ui.next.disabled = S.offset + PAGE_SIZE >= S.total;
  }

  function renderManagers() {
    let note = '';
    if (S.listError) note = `Could not load managers: ${S.listError}`;
    else if (!S.listLoaded) note = 'Loading…';
    else if (!S.managers.length && S.tag) note = `No managers${S.filter.size ? ' with these statuses' : ''} tagged “${S.tag}”.`;
    else if (!S.managers.length) note = S.filter.size ? 'No managers with these statuses.' : 'No jobs yet. Run a definition to start one.';
    setText(ui.listNote, note);
    ui.listNote.hidden = !note;
    syncList(ui.managers, S.managers, (m) => m.id, createCard, updateCard);
  }

  function metaItem(label) {
    const value = h('span', { class: 'meta-value' });
    return { value, el: h('span', { class: 'meta' }, h('span', { class: 'meta-label' }, label), value) };
  }

  function createCard(m) {
    const v = { item: m };
    const toggle = () => toggleExpand(v.item.id);
    v.check = h('input', { type: 'checkbox', title: 'select', onchange: () => {
      if (v.check.checked) S.selected.add(v.item.id);
      else S.selected.delete(v.item.id);
      render();
    } });
    v.caret = h('button', { class: 'caret', type: 'button', title: 'show steps', 'aria-expanded': 'false', onclick: toggle });
    v.name = h('span', { class: 'm-name', onclick: toggle });
    v.id = h('code', { class: 'm-id' });
    v.def = h('span', { class: 'm-def' });
    v.origin = h('span', { class: 'm-origin' });
    v.badge = h('span', { class: 'badge' });
    v.rerun = h('button', { class: 'btn', type: 'button', 'data-action': 'rerun', onclick: () => rerun(v.item) }, 'Rerun');
    v.cancel = h('button', { class: 'btn warn', type: 'button', 'data-action': 'cancel', onclick: () => cancelManager(v.item) }, 'Cancel');
    v.del = h('button', { class: 'btn danger', type: 'button', 'data-action': 'delete', onclick: () => deleteManager(v.item) }, 'Delete');
    v.created = metaItem('created');
    v.started = metaItem('started');
    v.finished = metaItem('finished');
    v.duration = metaItem('duration');
    v.progress = metaItem('steps');
    v.children = metaItem('children');
    v.queue = metaItem('queue');
    v.params = metaItem('params');
    v.params.el.classList.add('meta-params');
    v.tags = metaItem('tags');
    v.errText = h('span', { class: 'm-error-text' });
    v.err = h('div', { class: 'm-error', title: 'click to show the full text', onclick: () => {
      const id = v.item.id;
      if (S.fullError.has(id)) S.fullError.delete(id);
      else S.fullError.add(id);
      render();
    } }, h('span', { class: 'm-error-label' }, 'failure'), v.errText);
    v.stepsNote = h('div', { class: 'note' });
    v.stepsList = h('div', { class: 'step-list' });
    v.steps = h('div', { class: 'steps' }, v.stepsNote, v.stepsList);
    v.el = h('article', { class: 'card', 'data-manager': m.id },
      h('div', { class: 'm-head' }, v.check, v.caret, v.name, v.id, v.def, v.origin, v.badge,
        h('span', { class: 'spacer' }), v.rerun, v.cancel, v.del),
      h('div', { class: 'm-meta' }, v.created.el, v.started.el, v.finished.el, v.duration.el, v.progress.el, v.children.el,
        v.queue.el, v.params.el, v.tags.el),
      v.err, v.steps);
    return v;
  }

  function updateCard(v, m) {
    v.item = m;
    const expanded = S.expanded.has(m.id);
    v.check.checked = S.selected.has(m.id);
    setText(v.caret, expanded ? '▾' : '▸');
    setAttr(v.caret, 'aria-expanded', String(expanded));
    setText(v.name, m.name || m.definition_id);
    setText(v.id, m.id);
    setText(v.def, m.definition_id);
    const origin = originText(m);
    setText(v.origin, origin);
    v.origin.hidden = !origin;
    v.origin.title = [m.trigger && `started by: ${m.trigger}`, m.schedule_time && `scheduled time ${m.schedule_time}`,
      m.scheduled_at && `starts at ${m.scheduled_at}`].filter(Boolean).join(' · ');
    badge(v.badge, m.status);
    v.el.className = `card st-${m.status}${expanded ? ' expanded' : ''}`;
    const terminal = TERMINAL.has(m.status);
    v.cancel.hidden = terminal;
    v.del.disabled = !terminal;
    v.del.title = terminal ? '' : 'cancel it first, or wait until it finishes';
    setText(v.created.value, shortTime(m.created_at));
    setText(v.started.value, shortTime(m.started_at));
    setText(v.finished.value, shortTime(m.finished_at));
    v.created.value.title = m.created_at || '';
    v.started.value.title = m.started_at || '';
    v.finished.value.title = m.finished_at || '';
    setText(v.duration.value, duration(jobDuration(m)));
    // Steps done out of all steps (from the loaded details, else from the listing, which also
    // carries them), and the child jobs of all steps together: a manager's `child_counts` is
    // the sum over its steps, not a count of its steps.
    const d = S.details.get(m.id);
    const steps = (d && d.steps && d.steps.length ? d.steps : m.steps) || [];
    const stepsDone = steps.filter((s) => TERMINAL.has(s.status)).length;
    const stepsFailed = steps.filter((s) => s.status === 'failed').length;
    v.progress.el.hidden = !steps.length;
    setText(v.progress.value, `${stepsDone}/${steps.length}${stepsFailed ? ` (${stepsFailed} failed)` : ''}`);
    let cc = m.child_counts;
    if (steps.length) {
      cc = { total: 0, running: 0, completed: 0, failed: 0, cancelled: 0 };
      for (const s of steps) for (const k of Object.keys(cc)) cc[k] += (s.child_counts && s.child_counts[k]) || 0;
    }
    v.children.el.hidden = !(cc && cc.total);
    if (cc && cc.total) {
      const done = cc.completed + cc.failed + cc.cancelled;
      const parts = [cc.running ? `${cc.running} running` : '', cc.failed ? `${cc.failed} failed` : '', cc.cancelled ? `${cc.cancelled} cancelled` : ''].filter(Boolean);
      setText(v.children.value, `${done}/${cc.total}${parts.length ? ` (${parts.join(', ')})` : ''}`);
    }
    v.queue.el.hidden = !m.queue || m.queue === 'default';
    setText(v.queue.value, m.queue || '');
    const params = Object.entries(m.params || {}).map(([k, val]) => `${k}=${val}`).join(' ');
    v.params.el.hidden = !params;
    setText(v.params.value, params);
    v.params.value.title = params;
    v.tags.el.hidden = !(m.tags && m.tags.length);
    setText(v.tags.value, (m.tags || []).join(', '));
    v.err.hidden = !m.error;
    setText(v.errText, m.error || '');
    v.err.classList.toggle('full', S.fullError.has(m.id));
    v.steps.hidden = !expanded;
    if (expanded) renderSteps(v, m);
  }

  // How the run started, beside its id: `scheduled 02:30`, `starts in 3 min`, `queue batch paused`.
  function originText(m) {
    const parts = [];
    const at = m.schedule_time ? ` ${clockTime(m.schedule_time)}` : '';
    if (m.trigger === 'schedule') parts.push(`scheduled${at}`);
    else if (m.trigger === 'catch_up') parts.push(`catch-up${at}`);
    else if (m.trigger === 'auto_start') parts.push('auto start');
    else if (m.trigger === 'rerun') parts.push('rerun');
    if (m.status === 'pending') {
      const q = S.queues && S.queues.find((x) => x.name === (m.queue || 'default'));
      if (m.scheduled_at && Date.parse(m.scheduled_at) > Date.now()) parts.push(`starts ${untilText(m.scheduled_at)}`);
      else if (q && q.paused) parts.push(`queue ${q.name} paused`);
    }
    return parts.join(' · ');
  }

  function renderSteps(v, m) {
    const d = S.details.get(m.id);
    const steps = (d && d.steps) || [];
    let note = '';
    if (!d) note = 'Loading steps…';
    else if (!steps.length) note = m.status === 'pending' ? 'Steps appear when the job starts.' : 'No steps.';
    setText(v.stepsNote, note);
    v.stepsNote.hidden = !note;
    syncList(v.stepsList, steps, (s) => s.id, createStep, (sv, s) => updateStep(sv, s, steps.length));
  }

  function createStep(s) {
    const v = { item: s, shown: -1 };
    v.icon = h('span', { class: 'st-icon' });
    v.title = h('span', { class: 's-title' });
    v.type = h('span', { class: 'tag' });
    v.segs = BAR_SEGMENTS.map((st) => h('span', { class: `seg seg-${st}` }));
    v.bar = h('span', { class: 'bar' }, v.segs);
    v.barText = h('span', { class: 'bar-text' });
    v.progress = h('span', { class: 'progress' }, v.bar, v.barText);
    v.dur = h('span', { class: 's-dur' });
    v.toggle = h('button', { class: 'btn ev-toggle', type: 'button', onclick: () => togglePanel(v.item.id) });
    v.desc = h('div', { class: 's-desc' });
    v.err = h('div', { class: 's-error' });
    v.info = h('span', { class: 'ev-info' });
    v.log = h('div', { class: 'ev-log', 'data-log': s.id, tabindex: '0' });
    v.log.addEventListener('scroll', () => {
      const el = v.log;
      stick.set(v.item.id, el.scrollHeight - el.scrollTop - el.clientHeight < 8);
      setAttr(v.follow, 'aria-pressed', String(stick.get(v.item.id)));
      if (el.scrollTop < 8 && el.scrollHeight > el.clientHeight) loadOlder(v.item.id);
    }, { passive: true });
    v.filter = h('input', { class: 'ev-filter', type: 'search', value: panel(s.id).filter, placeholder: 'filter',
      autocomplete: 'off', 'aria-label': 'filter the loaded events', oninput: () => {
        const p = panel(v.item.id);
        p.filter = v.filter.value;
        p.version++;
        render();
      } });
    v.follow = h('button', { class: 'ev-opt', type: 'button', 'aria-pressed': 'true', title: 'keep the newest event in view',
      onclick: () => {
        const on = stick.get(v.item.id) === false;
        stick.set(v.item.id, on);
        setAttr(v.follow, 'aria-pressed', String(on));
        if (on) v.log.scrollTop = v.log.scrollHeight;
      } }, 'follow');
    v.wrap = h('button', { class: 'ev-opt', type: 'button', 'aria-pressed': 'true', title: 'wrap long lines',
      onclick: () => {
        const p = panel(v.item.id);
        p.wrap = !p.wrap;
        p.version++;
        render();
      } }, 'wrap');
    v.panel = h('div', { class: 'ev-panel' },
      h('div', { class: 'ev-bar' }, h('span', {}, 'Events'), v.info, h('span', { class: 'spacer' }), v.filter, v.follow, v.wrap),
      v.log);
    v.el = h('div', { class: 'step', 'data-step': s.id },
      h('div', { class: 's-head' }, v.icon, v.title, v.type, v.progress, v.dur, h('span', { class: 'spacer' }), v.toggle),
      v.desc, v.err, v.panel);
    return v;
  }

  /**
   * ` (attempt 2/3, next in 12 s)` for a step with a retry policy (the countdown while it
   * waits to retry); ` (up to 3 attempts per child)` for a fan-out step, whose children carry
   * the attempts; '' otherwise.
   */
  function attemptText(s) {
    if (!s.max_attempts) return '';
    if (!s.attempt) return ` (up to ${s.max_attempts} attempts per child)`;
    let wait = '';
    if (s.next_attempt_at) {
      const rel = untilText(s.next_attempt_at);
      wait = rel === 'now' ? ', retrying now' : `, next ${rel}`;
    }
    return ` (attempt ${s.attempt}/${s.max_attempts}${wait})`;
  }

  function updateStep(v, s, n) {
    v.item = s;
    const p = panel(s.id);
    setText(v.icon, STATUS_ICON[s.status] || '?');
    v.icon.title = s.status;
    setAttr(v.el, 'data-status', s.status);
    v.el.className = `step st-${s.status}${p.open ? ' open' : ''}`;
    setText(v.title, `Step ${s.index}/${n}: ${s.name}${attemptText(s)}`);
    setText(v.type, s.type);
    const cc = s.child_counts || { total: 0 };
    v.progress.hidden = !cc.total;
    if (cc.total) {
      BAR_SEGMENTS.forEach((st, i) => {
        v.segs[i].style.width = `${(100 * (cc[st] || 0)) / cc.total}%`;
      });
      const done = cc.completed + cc.failed + cc.cancelled;
      setText(v.barText, `${done}/${cc.total}${cc.running ? ` · ${cc.running} running` : ''}${cc.failed ? ` · ${cc.failed} failed` : ''}`);
    }
    setText(v.dur, s.started_at ? duration(jobDuration(s)) : '');
    setText(v.desc, s.description || '');
    v.desc.hidden = !s.description;
    setText(v.err, s.error || '');
    v.err.hidden = !s.error;
    setText(v.toggle, p.open ? 'Hide events' : 'Events');
    setAttr(v.toggle, 'aria-expanded', String(p.open));
    v.panel.hidden = !p.open;
    if (p.open && v.shown !== p.version) {
      v.shown = p.version;
      renderEvents(v, p);
    }
  }

  function renderEvents(v, p) {
    const log = v.log;
    const id = v.item.id;
    const n = p.events.length;
    // The filter as a pattern, ignoring case; capturing, so that split() keeps the matches.
    const literal = p.filter.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const re = p.filter ? new RegExp(`(${literal})`, 'iu') : null;
    const shown = re ? p.events.filter((e) => re.test(e.message)) : p.events;
    let info = 'loading…';
    if (p.error) info = `error: ${p.error}`;
    else if (p.loaded) {
      info = `${n >= EVENTS_LIMIT && !p.beginning ? `last ${n}` : `${n}`} event${n === 1 ? '' : 's'} · seq ${p.lastSeq}`;
      if (re) info += ` · ${shown.length} matching`;
    }
    setText(v.info, info);
    v.info.classList.toggle('bad', !!p.error);
    const follow = stick.get(id) !== false;
    setAttr(v.follow, 'aria-pressed', String(follow));
    setAttr(v.wrap, 'aria-pressed', String(p.wrap));
    log.classList.toggle('nowrap', !p.wrap);

    // Keep what the operator is reading in place when they have scrolled up (or paged back).
    let anchor = null;
    if (!follow) {
      for (const row of log.querySelectorAll('.ev')) {
        if (row.offsetTop + row.offsetHeight > log.scrollTop) {
          anchor = { seq: row.dataset.seq, delta: row.offsetTop - log.scrollTop };
          break;
        }
      }
    }
    let items = [];
    if (!p.loaded) items.push({ note: p.error ? 'Could not load events.' : 'Loading events…' });
    else if (!n) items.push({ note: 'No events yet for this step.' });
    else {
      if (p.older) items.push({ edge: 'loading older events…' });
      else if (p.olderError) items.push({ edge: `could not load older events: ${p.olderError}`, bad: true });
      else if (p.beginning) items.push({ edge: 'beginning of the log' });
      items = items.concat(shown);
      if (!shown.length) items.push({ note: `No loaded event contains “${p.filter}”.` });
    }
    syncList(log, items, (it) => (it.note ? 'note' : it.edge ? 'edge' : it.seq),
      (it) => (it.note || it.edge ? { el: h('div', { class: it.note ? 'ev-empty' : 'ev-edge' }) } : eventRow(it, id)),
      (row, it) => {
        if (it.note || it.edge) {
          setText(row.el, it.note || it.edge);
          row.el.classList.toggle('bad', !!it.bad);
        } else if (row.marked !== p.filter) {
          row.msg.replaceChildren(...marked(it.message, re));
          row.marked = p.filter;
        }
      });
    if (follow) log.scrollTop = log.scrollHeight;
    else if (anchor) {
      const row = log.querySelector(`.ev[data-seq="${anchor.seq}"]`);
      if (row) log.scrollTop = row.offsetTop - anchor.delta;
    }
  }

  // A message as text, each match of `re` (a capturing pattern, or none) in a <mark>.
  function marked(text, re) {
    const parts = re ? String(text).split(re) : [String(text)];
    return parts.map((part, i) => (i % 2 ? h('mark', {}, part) : part)).filter((part) => part !== '');
  }

  // `[step/originator]`, or `[originator]` for a manager's own events: as the TUI and the tail print it.
  function eventSource(e) {
    return e.step_name ? `[${e.step_name}/${e.originator}]` : `[${e.originator}]`;
  }

  function eventRow(e, stepId) {
    const level = LEVELS.has(e.level) ? e.level : 'info';
    const child = e.job_id && e.job_id !== stepId && e.job_id.startsWith(`${stepId}-`) ? e.job_id.slice(stepId.length + 1) : null;
    const msg = h('span', { class: 'ev-msg' }); // filled by renderEvents, with the matches marked
    const el = h('div', { class: `ev lvl-${level}`, 'data-seq': String(e.seq) },
      h('span', { class: 'ev-time', title: `${e.full_timestamp} · seq ${e.seq}` }, eventTime(e)),
      h('span', { class: 'ev-lvl' }, level.toUpperCase()),
      h('span', { class: 'ev-orig' }, eventSource(e)),
      child ? h('span', { class: 'ev-child', title: e.job_id }, child) : null,
      msg);
    return { el, msg, marked: null };
  }

  function createNotice(n) {
    const el = h('div', { class: `notice notice-${n.kind}`, role: n.kind === 'error' ? 'alert' : 'status' },
      h('span', {}, n.text), h('button', { class: 'link', type: 'button', title: 'dismiss', onclick: () => dismiss(n.id) }, '×'));
    return { el };
  }

  // ---------------------------------------------------------------- boot

  function boot() {
    ui.stats = document.getElementById('stats');
    ui.conn = document.getElementById('conn');
    ui.server = document.getElementById('server');
    ui.toolbar = document.getElementById('toolbar');
    ui.listNote = document.getElementById('list-note');
    ui.managers = document.getElementById('managers');
    ui.notices = document.getElementById('notices');
    // The queues strip above the list (made here too when an older queue.html lacks it).
    ui.queues = document.getElementById('queues');
    if (!ui.queues) {
      ui.queues = h('section', { id: 'queues', class: 'queues', 'aria-label': 'queues' });
      ui.toolbar.before(ui.queues);
    }
    ui.queueList = h('div', { class: 'queue-list' });
    ui.queues.append(h('h2', {}, 'Queues'), ui.queueList);
    const defs = document.getElementById('defs');
    ui.defsNote = h('div', { class: 'note' });
    ui.defsList = h('div', { class: 'def-list' });
    defs.append(ui.defsNote, ui.defsList);
    buildToolbar();

    modal().addEventListener('click', (ev) => {
      if (ev.target === modal() && !S.needToken) closeModal(false);
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && modalClose && !S.needToken) closeModal(false);
    });
    // Durations of running jobs, countdowns and the next runs move on their own.
    setInterval(tick, 1000);

    render();
    refreshShown();
    connect();
  }

  function tick() {
    // A schedule that came due has fired by now: its next time and last run are new.
    const due = Date.now() - 1000;
    if (S.definitions.some((d) => d.next_run_at && Date.parse(d.next_run_at) <= due)) loadDefinitionsSoon();
    render();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
