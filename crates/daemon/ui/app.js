// shoal web UI: vanilla JS, no build step, no network access beyond the daemon
// that served this page. Talks to the daemon's HTTP API v1 with the bearer token
// handed over in the address fragment (#token=...), which is never sent to the
// server: it is moved to localStorage (kept for new tabs, bookmarks and daemon
// restarts: the daemon keeps its token) and removed from the address bar.
'use strict';

(() => {
  const TOKEN_KEY = 'shoal.token';
  const TAB_KEY = 'shoal.tab';
  const API = '/api/v1';
  // Peers and status have no events; they are polled, only while their tab is shown.
  const POLL_MS = 3000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  // An SSE event bigger than this is a broken stream: drop it and reconnect.
  const MAX_EVENT_CHARS = 4 * 1024 * 1024;
  // The daemon sends a keep-alive every 15 s: a silent stream is a dead one.
  const STREAM_SILENCE_MS = 45000;

  const $ = (sel, root = document) => root.querySelector(sel);
  const tid = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

  // ---------- token handover ----------

  function takeToken() {
    const hash = location.hash.startsWith('#') ? location.hash.slice(1) : '';
    const params = new URLSearchParams(hash);
    const fromHash = params.get('token');
    if (fromHash) {
      // Kept in this browser for this daemon's address: new tabs, bookmarks
      // and reloads work, also across daemon restarts (its token persists).
      try { localStorage.setItem(TOKEN_KEY, fromHash); } catch (_) { /* storage off: keep in memory */ }
      params.delete('token');
      const rest = params.toString();
      history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
      return fromHash;
    }
    try { return localStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
  }

  let token = takeToken();

  function tokenProblem(reason) {
    token = null;
    try { localStorage.removeItem(TOKEN_KEY); } catch (_) { /* ignore */ }
    stopEverything();
    $('#app').hidden = true;
    tid('connection-banner').hidden = true;
    tid('token-missing').hidden = false;
    if (reason) tid('token-missing-reason').textContent = reason;
    setConn('no token');
  }

  // ---------- formatting ----------

  const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

  function fmtBytes(n) {
    if (n === null || n === undefined || !Number.isFinite(Number(n))) return '?';
    let v = Number(n);
    let i = 0;
    while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i += 1; }
    if (i === 0) return `${Math.round(v)} B`;
    return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${UNITS[i]}`;
  }

  function fmtRate(n) {
    if (n === null || n === undefined) return 'unlimited';
    return `${fmtBytes(n)}/s`;
  }

  function fmtDuration(s) {
    if (s === null || s === undefined || !Number.isFinite(s) || s < 0) return '—';
    s = Math.round(s);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h} h ${m % 60} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function fmtPercent(p) {
    const v = Math.max(0, Math.min(1, Number(p) || 0)) * 100;
    // Never round a not-quite-finished transfer up to 100 %.
    if (v >= 100) return '100 %';
    if (v > 99.9) return '99.9 %';
    return `${v.toFixed(1)} %`;
  }

  // Unix seconds → the browser's local date and time.
  function fmtTime(s) {
    if (s === null || s === undefined || !Number.isFinite(Number(s))) return '—';
    return new Date(Number(s) * 1000).toLocaleString();
  }

  function shortId(id) {
    return typeof id === 'string' && id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : String(id);
  }

  // A limit input + unit select → bytes per second, or null for empty.
  // Returns {error} for a value that is not a non-negative number.
  function readRate(input, unitSelect) {
    const raw = input.value.trim();
    if (raw === '') return { value: null };
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0) return { error: 'Enter a number of at least 0, or leave it empty for no limit.' };
    return { value: Math.round(n * Number(unitSelect.value)) };
  }

  // Shows bytes per second in the largest unit that divides it exactly, else in
  // the smallest unit with 3 decimals (which still converts back to the same bytes).
  function writeRate(input, unitSelect, bytes) {
    if (bytes === null || bytes === undefined) { input.value = ''; return; }
    const units = [...unitSelect.options].map((o) => Number(o.value)).sort((a, b) => b - a);
    const unit = units.find((u) => bytes > 0 && bytes % u === 0) || units[units.length - 1];
    unitSelect.value = String(unit);
    input.value = String(Math.round((bytes / unit) * 1000) / 1000);
  }

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, code, field, message) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field;
    }
  }

  class NetworkError extends Error {}

  async function api(method, path, body) {
    if (!token) throw new ApiError(401, 'unauthorized', null, 'No access token.');
    const init = { method, headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(API + path, init);
    } catch (e) {
      connectionLost(`Cannot reach the shoal daemon at ${location.host}: is it still running?`);
      throw new NetworkError(`Cannot reach the shoal daemon at ${location.host}; check that it is running.`);
    }
    if (res.status === 401) {
      tokenProblem('The daemon refused the access token (a new one is written when api.token is deleted): open this page again with `shoal ui`.');
      throw new ApiError(401, 'unauthorized', null, 'The access token was refused.');
    }
    if (res.status === 204) return null;
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!res.ok) {
      const err = data && data.error ? data.error : {};
      throw new ApiError(
        res.status,
        err.code || 'internal',
        err.field || null,
        err.message || `The daemon answered ${res.status} ${res.statusText} to ${method} ${path}.`,
      );
    }
    return data;
  }

  function errorText(e) {
    if (e instanceof ApiError) return e.message;
    if (e instanceof NetworkError) return e.message;
    return `Unexpected error: ${e && e.message ? e.message : e}`;
  }

  function showError(el, e) {
    if (!el) return;
    if (e === null || e === undefined) { el.hidden = true; el.textContent = ''; return; }
    el.textContent = typeof e === 'string' ? e : errorText(e);
    el.hidden = false;
  }

  // ---------- connection state ----------

  function setConn(text, ok) {
    const el = tid('connection-state');
    el.textContent = text;
    el.classList.toggle('ok', !!ok);
  }

  function connectionLost(message) {
    const b = tid('connection-banner');
    if (b.hidden) logEvent(message, 'bad');
    b.textContent = message;
    b.hidden = false;
    setConn('disconnected');
  }

  function connectionBack() {
    if (!tid('connection-banner').hidden) logEvent('Connected to the daemon again');
    tid('connection-banner').hidden = true;
    setConn('live', true);
  }

  // ---------- state ----------

  const state = {
    status: null,
    shares: new Map(),
    transfers: new Map(),
    peers: [],
    settings: null,
  };

  // ---------- tabs ----------

  const TABS = ['status', 'shares', 'transfers', 'peers', 'settings', 'log'];
  let currentTab = 'status';

  function showTab(name) {
    if (!TABS.includes(name)) name = 'status';
    currentTab = name;
    for (const t of TABS) {
      const btn = tid(`tab-${t}`);
      const on = t === name;
      btn.setAttribute('aria-selected', on ? 'true' : 'false');
      btn.tabIndex = on ? 0 : -1;
      tid(`panel-${t}`).hidden = !on;
    }
    try { sessionStorage.setItem(TAB_KEY, name); } catch (_) { /* ignore */ }
    if (name === 'status') drawGraph();
    pollNow();
  }

  function setupTabs() {
    for (const t of TABS) tid(`tab-${t}`).addEventListener('click', () => showTab(t));
    // Arrow keys move between tabs, as the ARIA tabs pattern expects.
    $('.tabs').addEventListener('keydown', (ev) => {
      const i = TABS.indexOf(currentTab);
      let next = null;
      if (ev.key === 'ArrowRight') next = TABS[(i + 1) % TABS.length];
      if (ev.key === 'ArrowLeft') next = TABS[(i + TABS.length - 1) % TABS.length];
      if (next) { ev.preventDefault(); showTab(next); tid(`tab-${next}`).focus(); }
    });
    let saved = null;
    try { saved = sessionStorage.getItem(TAB_KEY); } catch (_) { /* ignore */ }
    showTab(saved || 'status');
  }

  // ---------- status ----------

  function fillList(ul, items) {
    ul.replaceChildren(...items.map((s) => {
      const li = document.createElement('li');
      li.textContent = s;
      return li;
    }));
    if (items.length === 0) {
      const li = document.createElement('li');
      li.textContent = 'none';
      li.className = 'muted';
      ul.append(li);
    }
  }

  function renderStatus() {
    const s = state.status;
    if (!s) return;
    tid('status-peer-id').textContent = s.peer_id;
    tid('status-version').textContent = s.version;
    const reach = {
      public: 'public (reachable directly)',
      private: 'private (behind NAT; peers reach you through relays or hole punching)',
      unknown: 'unknown (not yet measured)',
    };
    tid('status-reachability').textContent = reach[s.reachability] || s.reachability;
    tid('status-connected-peers').textContent = String(s.connected_peers);
    setPeerCount(s.connected_peers);
    setTotals(s.totals);
    tid('status-uptime').textContent = fmtDuration(s.uptime_s);
    tid('status-data-dir').textContent = s.data_dir;
    fillList(tid('status-addresses'), s.addresses || []);
    fillList(tid('status-ticket-addresses'), s.ticket_addresses || []);
    const out = tid('transfer-output-input');
    if (s.data_dir && !out.placeholder) out.placeholder = `${s.data_dir.replace(/\/$/, '')}/downloads`;
  }

  async function loadStatus() {
    try {
      state.status = await api('GET', '/status');
      showError(tid('status-error'), null);
      renderStatus();
    } catch (e) {
      if (!(e instanceof NetworkError)) showError(tid('status-error'), e);
    }
  }

  // ---------- shares ----------

  const shareEls = new Map();

  function renderShares() {
    const list = tid('share-list');
    for (const [id, el] of shareEls) {
      if (!state.shares.has(id)) { el.remove(); shareEls.delete(id); accessPanels.delete(id); }
    }
    const sorted = [...state.shares.values()].sort((a, b) => a.name.localeCompare(b.name));
    for (const s of sorted) {
      let el = shareEls.get(s.id);
      if (!el) {
        el = $('#share-template').content.firstElementChild.cloneNode(true);
        el.dataset.id = s.id;
        tid('share-copy-button', el).addEventListener('click', () => copyTicket(el));
        tid('share-qr-button', el).addEventListener('click', () => toggleQr(el));
        tid('share-remove-button', el).addEventListener('click', () => removeShare(s.id, el));
        setupShareFiles(s, el);
        setupAccess(s.id, el);
        shareEls.set(s.id, el);
      }
      const vis = visibilityOf(s);
      tid('share-name', el).textContent = s.name;
      tid('share-kind', el).textContent = s.kind === 'folder' ? 'folder' : 'file';
      const badge = tid('share-visibility', el);
      badge.textContent = vis;
      badge.dataset.visibility = vis;
      badge.title = VISIBILITY_TEXT[vis] || vis;
      const sel = tid('access-visibility-select', el);
      // Not while a change is on its way, nor under the user's hand.
      if (!sel.disabled && document.activeElement !== sel) sel.value = vis;
      tid('share-size', el).textContent = fmtBytes(s.size);
      tid('share-files', el).textContent = s.kind === 'folder' ? `${s.files} file${s.files === 1 ? '' : 's'}` : '';
      tid('share-files-button', el).hidden = s.kind !== 'folder';
      tid('share-path', el).textContent = s.path;
      const t = tid('share-ticket', el);
      if (t.value !== s.ticket) t.value = s.ticket;
      renderServing(el, s);
      list.append(el); // keeps the sorted order; moving an element keeps its state
    }
    tid('shares-empty').hidden = state.shares.size > 0;
    tid('shares-count').textContent = state.shares.size ? `(${state.shares.size})` : '';
  }

  const PATH_TEXT = { fast: 'fast (direct TCP+TLS)', direct: 'direct', relayed: 'relayed' };

  // What a share sends: its rate, bytes and ratio, and who downloads it now.
  function renderServing(el, s) {
    tid('share-up-rate', el).textContent = `↑ ${fmtRate(s.up_rate || 0)}`;
    tid('share-uploaded', el).textContent = `sent ${fmtBytes(s.uploaded_bytes || 0)} since the daemon started · ratio ${(Number(s.ratio) || 0).toFixed(2)}`;
    const peers = s.peers || [];
    tid('share-serving-block', el).hidden = peers.length === 0;
    tid('share-serving', el).textContent = `Downloading it now: ${peers.length} peer${peers.length === 1 ? '' : 's'}`;
    tid('share-peer-list', el).replaceChildren(...peers.map((p) => {
      const li = document.createElement('li');
      li.dataset.testid = 'share-peer';
      const span = (testid, text, cls) => {
        const e = document.createElement('span');
        e.dataset.testid = testid;
        if (cls) e.className = cls;
        e.textContent = text;
        return e;
      };
      const id = span('share-peer-id', shortId(p.peer_id), 'mono');
      id.title = p.peer_id;
      const path = span('share-peer-path', p.path ? (PATH_TEXT[p.path] || p.path) : 'path unknown', `badge ${p.path || ''}`);
      const progress = p.progress === null || p.progress === undefined ? '' : `has ${fmtPercent(p.progress)}`;
      li.append(
        id, ' ', path, ' ',
        span('share-peer-rate', `↑ ${fmtRate(p.up_rate || 0)}`), ' ',
        span('share-peer-sent', `sent ${fmtBytes(p.uploaded)}`), ' ',
        span('share-peer-progress', progress), ' ',
        span('share-peer-address', p.address || '', 'mono muted'),
      );
      li.dataset.peer = p.peer_id;
      li.dataset.upRate = String(p.up_rate || 0);
      return li;
    }));
  }

  // The ticket as a QR code, to scan with a phone (the image comes from the
  // daemon, fetched with the token).
  function toggleQr(el) {
    return toggleQrOf(tid('share-qr', el), tid('share-qr-button', el), tid('share-ticket', el).value, tid('share-error', el));
  }

  async function toggleQrOf(img, btn, text, errEl) {
    if (!img.hidden) {
      img.hidden = true;
      btn.setAttribute('aria-expanded', 'false');
      return;
    }
    try {
      const res = await fetch(`${API}/qr?text=${encodeURIComponent(text)}`, {
        headers: { Authorization: `Bearer ${token}` }, cache: 'no-store',
      });
      if (!res.ok) throw new ApiError(res.status, 'internal', null, `The daemon could not draw the QR code (${res.status}).`);
      // A data: address (the page's CSP allows images from itself and data:).
      const svg = await res.text();
      img.src = `data:image/svg+xml;base64,${btoa(unescape(encodeURIComponent(svg)))}`;
      img.hidden = false;
      btn.setAttribute('aria-expanded', 'true');
    } catch (e) {
      showError(errEl, e);
    }
  }

  // ---------- the files of a folder (share or transfer) ----------

  const FILES_PAGE = 200;

  // Loads the first `count` files of a folder from `route` (the API's
  // `/shares/{id}/files` or `/transfers/{id}/files`) into `tbody`; `more`
  // is the button that shows the next page. Each row: path, size, and for a
  // transfer how much of the file is here and, when `onPriority` is given,
  // a choice of its priority (skip / normal / high) that calls it.
  async function loadFiles(route, tbody, more, count, withProgress, hasQuery, onPriority) {
    const rows = [];
    let total = 0;
    let known = true;
    // Empty folders come with the first page (at most 1000 of them).
    let folders = [];
    let totalFolders = 0;
    for (let offset = 0; offset < count;) {
      const limit = Math.min(1000, count - offset);
      const l = await api('GET', `${route}${hasQuery ? '&' : '?'}offset=${offset}&limit=${limit}`);
      known = l.known;
      total = l.total_files;
      if (offset === 0) {
        folders = l.empty_folders || [];
        totalFolders = l.total_empty_folders || 0;
      }
      rows.push(...l.files);
      if (!l.files.length) break;
      offset += l.files.length;
      if (offset >= total) break;
    }
    if (!known) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = onPriority ? 4 : 3;
      td.className = 'muted';
      td.textContent = 'The list of files is not here yet: the download fetches it first.';
      tr.append(td);
      tbody.replaceChildren(tr);
      more.hidden = true;
      return;
    }
    tbody.replaceChildren(...rows.map((f) => {
      const tr = document.createElement('tr');
      tr.dataset.testid = 'file-row';
      tr.dataset.path = f.path;
      const path = document.createElement('td');
      path.className = 'mono';
      path.textContent = f.path;
      const size = document.createElement('td');
      size.textContent = fmtBytes(f.size);
      const third = document.createElement('td');
      if (withProgress) {
        const p = f.size ? f.done_bytes / f.size : 1;
        third.textContent = f.chosen === false ? 'skipped' : fmtPercent(p);
        third.dataset.testid = 'file-here';
        tr.dataset.done = String(f.done_bytes);
      } else {
        third.className = 'mono';
        third.textContent = shortId(f.id);
        third.title = f.id;
      }
      tr.append(path, size, third);
      if (onPriority) {
        const cell = document.createElement('td');
        if (f.chosen === false) {
          cell.textContent = '—';
        } else {
          const sel = document.createElement('select');
          sel.dataset.testid = 'file-priority';
          sel.setAttribute('aria-label', `Priority of ${f.path}`);
          for (const [v, label] of [['skip', 'skip'], ['normal', 'normal'], ['high', 'high (first)']]) {
            const o = document.createElement('option');
            o.value = v;
            o.textContent = label;
            sel.append(o);
          }
          sel.value = f.priority || 'normal';
          tr.dataset.priority = sel.value;
          sel.addEventListener('change', () => {
            sel.disabled = true;
            onPriority(f.path, sel.value).finally(() => { sel.disabled = false; });
          });
          cell.append(sel);
        }
        tr.append(cell);
      }
      return tr;
    }), ...folders.map((d) => {
      const tr = document.createElement('tr');
      tr.dataset.testid = 'folder-row';
      tr.dataset.path = d;
      const path = document.createElement('td');
      path.className = 'mono';
      path.textContent = `${d}/`;
      const kind = document.createElement('td');
      kind.textContent = 'folder';
      const third = document.createElement('td');
      third.className = 'muted';
      third.textContent = 'empty';
      tr.append(path, kind, third);
      if (onPriority) tr.append(document.createElement('td'));
      return tr;
    }));
    if (totalFolders > folders.length) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = onPriority ? 4 : 3;
      td.className = 'muted';
      td.textContent = `and ${totalFolders - folders.length} more empty folders`;
      tr.append(td);
      tbody.append(tr);
    }
    more.hidden = rows.length >= total;
    more.textContent = `Show more files (${rows.length} of ${total} shown)`;
  }

  // A folder share's file list, opened by its Files button.
  function setupShareFiles(s, el) {
    const btn = tid('share-files-button', el);
    const block = tid('share-files-block', el);
    let count = FILES_PAGE;
    const load = () => loadFiles(`/shares/${encodeURIComponent(s.id)}/files`, tid('share-file-list', el), tid('share-files-more', el), count, false)
      .catch((e) => showError(tid('share-error', el), e));
    btn.addEventListener('click', () => {
      const open = btn.getAttribute('aria-expanded') !== 'true';
      btn.setAttribute('aria-expanded', open ? 'true' : 'false');
      block.hidden = !open;
      if (open) load();
    });
    tid('share-files-more', el).addEventListener('click', () => { count += FILES_PAGE; load(); });
  }

  // A folder transfer's file list, loaded when its details open and again
  // (at most once a second) while they are open and the transfer changes.
  function setupTransferFiles(id, el) {
    let count = FILES_PAGE;
    let last = 0;
    let pending = null;
    const route = `/transfers/${encodeURIComponent(id)}/files`;
    // A file's new priority goes to the daemon at once (the running
    // download applies it); the list is read again to show it.
    const setPriority = (p, priority) => api('PATCH', route, { paths: [p], priority })
      .then(() => { showError(tid('transfer-error', el), null); return load(); })
      .catch((e) => { showError(tid('transfer-error', el), e); renderStatusRow(el); return load(); });
    const load = () => {
      last = Date.now();
      return loadFiles(route, tid('transfer-file-list', el), tid('transfer-files-more', el), count, true, false, setPriority)
        .catch((e) => { showError(tid('transfer-error', el), e); renderStatusRow(el); });
    };
    tid('transfer-files-more', el).addEventListener('click', () => { count += FILES_PAGE; load(); });
    return () => {
      if (tid('transfer-files-block', el).hidden || tid('transfer-details', el).hidden) return;
      // Not while the user is choosing a file's priority.
      const active = document.activeElement;
      if (active && active.dataset.testid === 'file-priority' && el.contains(active)) return;
      const wait = 1000 - (Date.now() - last);
      if (wait <= 0) { load(); return; }
      if (!pending) pending = setTimeout(() => { pending = null; load(); }, wait);
    };
  }

  // ---------- the folder browser ----------

  let browseAt = null;

  async function browse(path) {
    const err = tid('browse-error');
    showError(err, null);
    try {
      const q = path ? `?path=${encodeURIComponent(path)}` : '';
      const l = await api('GET', `/fs${q}`);
      browseAt = l;
      tid('browse-path').textContent = l.path;
      tid('browse-up').disabled = !l.parent;
      const om = tid('browse-omitted');
      om.hidden = !l.omitted;
      om.textContent = l.omitted ? `${l.omitted} more entries are not listed.` : '';
      tid('browse-list').replaceChildren(...l.entries.map((e) => {
        const li = document.createElement('li');
        const b = document.createElement('button');
        b.type = 'button';
        b.className = `link entry ${e.kind}`;
        b.dataset.testid = 'browse-entry';
        b.dataset.kind = e.kind;
        b.textContent = e.kind === 'dir' ? `📁 ${e.name}/` : `${e.name} (${fmtBytes(e.size)})`;
        b.setAttribute('aria-label', e.kind === 'dir' ? `Open folder ${e.name}` : `Choose file ${e.name}`);
        b.addEventListener('click', () => {
          if (e.kind === 'dir') browse(e.path);
          else chooseShared(e.path);
        });
        li.append(b);
        return li;
      }));
    } catch (e) {
      showError(err, e);
    }
  }

  function chooseShared(path) {
    const input = tid('share-path-input');
    input.value = path;
    input.removeAttribute('aria-invalid');
    tid('browse-dialog').close();
    tid('share-add-button').focus();
  }

  function setupBrowser() {
    const dlg = tid('browse-dialog');
    tid('share-browse-button').addEventListener('click', () => {
      const typed = tid('share-path-input').value.trim();
      if (!dlg.open) dlg.showModal();
      browse(typed.startsWith('/') ? typed : null);
    });
    tid('browse-up').addEventListener('click', () => { if (browseAt && browseAt.parent) browse(browseAt.parent); });
    tid('browse-choose-folder').addEventListener('click', () => { if (browseAt) chooseShared(browseAt.path); });
    tid('browse-close').addEventListener('click', () => dlg.close());
  }

  function copyTicket(el) {
    return copyField(tid('share-ticket', el), tid('share-note', el));
  }

  async function copyField(input, note) {
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
      await navigator.clipboard.writeText(input.value);
      note.textContent = 'Copied.';
    } catch (_) {
      // The clipboard may be denied: the ticket field is right there, selected.
      input.focus();
      input.select();
      note.textContent = 'Copying was not allowed here: the ticket is selected above, copy it with Ctrl+C.';
    }
  }

  async function removeShare(id, el) {
    const btn = tid('share-remove-button', el);
    btn.disabled = true;
    try {
      await api('DELETE', `/shares/${encodeURIComponent(id)}`);
      state.shares.delete(id);
      renderShares();
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) { state.shares.delete(id); renderShares(); return; }
      showError(tid('share-error', el), e);
    } finally {
      btn.disabled = false;
    }
  }

  async function loadShares() {
    try {
      const list = await api('GET', '/shares');
      state.shares = new Map((list || []).map((s) => [s.id, s]));
      renderShares();
    } catch (_) { /* banner or token notice already shown */ }
  }

  function setupShareForm() {
    const form = tid('share-form');
    const input = tid('share-path-input');
    const err = tid('share-form-error');
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const path = input.value.trim();
      if (!path) { showError(err, 'Enter the absolute path of a file or folder to share.'); input.focus(); return; }
      showError(err, null);
      const btn = tid('share-add-button');
      btn.disabled = true;
      tid('share-form-busy').hidden = false;
      try {
        const visibility = tid('share-visibility-select').value;
        const share = await api('POST', '/shares', { path, visibility });
        state.shares.set(share.id, share);
        renderShares();
        input.value = '';
      } catch (e) {
        showError(err, e);
        input.setAttribute('aria-invalid', 'true');
      } finally {
        btn.disabled = false;
        tid('share-form-busy').hidden = true;
      }
    });
    input.addEventListener('input', () => input.removeAttribute('aria-invalid'));
    const vis = tid('share-visibility-select');
    const hint = () => { tid('share-visibility-help').textContent = VISIBILITY_HELP[vis.value] || ''; };
    vis.addEventListener('change', hint);
    hint();
    setupBrowser();
  }

  // ---------- share access: policy, allowlist, invites, access log ----------

  const VISIBILITY_TEXT = {
    public: 'public: announced on the DHT; anyone may fetch it',
    unlisted: 'unlisted: anyone with the ticket may fetch it; not announced',
    private: 'private: only allowed peers and invite holders may fetch it',
  };
  const VISIBILITY_HELP = {
    unlisted: 'Unlisted shares are not announced; anyone holding the ticket may fetch them.',
    public: 'Public shares are announced on the DHT: anyone may find and fetch them.',
    private: 'Private shares admit only the peers you allow and holders of an invite (see Access once shared).',
  };
  const INVITE_STATE_TEXT = { active: 'active', expired: 'expired', revoked: 'revoked', used_up: 'used up' };
  // The access log shows the newest rows only; the API keeps more.
  const LOG_SHOWN = 100;

  function visibilityOf(s) {
    return s.visibility || (s.public ? 'public' : 'unlisted');
  }

  // Share id → {el, loading, again, accessKey, logKey} for each open panel.
  const accessPanels = new Map();

  const sharePath = (id) => `/shares/${encodeURIComponent(id)}`;

  // Puts `items` in `ul` in order, reusing the element of each key (so a
  // refresh keeps focus, errors shown on an item and listeners).
  function syncList(ul, items, keyOf, make, update) {
    const old = new Map([...ul.children].map((li) => [li.dataset.key, li]));
    const keep = new Set();
    items.forEach((it, i) => {
      const k = keyOf(it);
      let li = old.get(k);
      if (!li) { li = make(it); li.dataset.key = k; }
      keep.add(li);
      update(li, it);
      if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
    });
    for (const li of old.values()) if (!keep.has(li)) li.remove();
  }

  function setupAccess(id, el) {
    const panel = tid('share-access-panel', el);
    const btn = tid('share-access-button', el);
    const domId = `access-${id}`;
    panel.id = domId;
    panel.setAttribute('aria-label', 'Access to this share');
    btn.setAttribute('aria-controls', domId);
    btn.addEventListener('click', () => {
      const open = panel.hidden;
      panel.hidden = !open;
      btn.setAttribute('aria-expanded', open ? 'true' : 'false');
      if (open) {
        accessPanels.set(id, { el, loading: false, again: false, accessKey: '', logKey: '' });
        loadAccess(id);
      } else {
        accessPanels.delete(id);
      }
    });
    tid('access-refresh-button', el).addEventListener('click', () => loadAccess(id));

    // The policy applies at once.
    const sel = tid('access-visibility-select', el);
    const visErr = tid('access-visibility-error', el);
    const visNote = tid('access-visibility-note', el);
    sel.addEventListener('change', async () => {
      const want = sel.value;
      showError(visErr, null);
      visNote.textContent = 'Saving…';
      sel.disabled = true;
      try {
        const share = await api('PATCH', sharePath(id), { visibility: want });
        state.shares.set(share.id, share);
        visNote.textContent = `Now ${visibilityOf(share)}.`;
      } catch (e) {
        visNote.textContent = '';
        showError(visErr, e);
      } finally {
        sel.disabled = false;
        const s = state.shares.get(id);
        if (s) sel.value = visibilityOf(s);
        renderShares();
      }
    });

    // Allowlist.
    const allowInput = tid('access-allow-input', el);
    const allowErr = tid('access-allow-error', el);
    allowInput.addEventListener('input', () => allowInput.removeAttribute('aria-invalid'));
    tid('access-allow-form', el).addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const peer = allowInput.value.trim();
      if (!peer) {
        showError(allowErr, 'Enter the peer id to allow (the other side sees it on its Status tab).');
        allowInput.setAttribute('aria-invalid', 'true');
        allowInput.focus();
        return;
      }
      showError(allowErr, null);
      const b = tid('access-allow-button', el);
      b.disabled = true;
      try {
        renderAccess(id, await api('POST', `${sharePath(id)}/allow`, { peer_id: peer }));
        allowInput.value = '';
      } catch (e) {
        showError(allowErr, e);
        allowInput.setAttribute('aria-invalid', 'true');
      } finally {
        b.disabled = false;
      }
    });

    // Invites.
    const invErr = tid('access-invite-error', el);
    const fields = ['access-invite-to', 'access-invite-expires', 'access-invite-uses'].map((t) => tid(t, el));
    for (const f of fields) f.addEventListener('input', () => f.removeAttribute('aria-invalid'));
    tid('access-invite-form', el).addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const [to, expires, uses] = fields;
      const body = {};
      if (to.value.trim()) body.to = to.value.trim();
      if (expires.value.trim()) body.expires_in = expires.value.trim();
      const rawUses = uses.value.trim();
      if (rawUses) {
        const n = Number(rawUses);
        if (!Number.isInteger(n) || n < 1) {
          showError(invErr, 'Uses: enter a whole number of at least 1, or leave it empty for no limit.');
          uses.setAttribute('aria-invalid', 'true');
          uses.focus();
          return;
        }
        body.uses = n;
      }
      showError(invErr, null);
      const b = tid('access-invite-create', el);
      b.disabled = true;
      try {
        const inv = await api('POST', `${sharePath(id)}/invites`, body);
        const box = tid('access-invite-new', el);
        tid('access-invite-ticket', el).value = inv.ticket || '';
        tid('access-invite-note', el).textContent = inv.ticket
          ? `Invite ${inv.id.slice(0, 8)} created.`
          : 'The invite was created but has no ticket (the share is gone).';
        box.hidden = false;
        for (const f of fields) f.value = '';
        loadAccess(id);
      } catch (e) {
        showError(invErr, e);
        const bad = { to: fields[0], expires_in: fields[1], uses: fields[2] }[e && e.field];
        if (bad) bad.setAttribute('aria-invalid', 'true');
      } finally {
        b.disabled = false;
      }
    });
    tid('access-invite-copy', el).addEventListener('click', () => copyField(tid('access-invite-ticket', el), tid('access-invite-note', el)));
  }

  async function loadAccess(id) {
    const p = accessPanels.get(id);
    if (!p) return;
    // One load at a time per panel; a request meanwhile runs once more after.
    if (p.loading) { p.again = true; return; }
    p.loading = true;
    const err = tid('access-error', p.el);
    try {
      const [view, log] = await Promise.all([
        api('GET', `${sharePath(id)}/access`),
        api('GET', `${sharePath(id)}/access-log`),
      ]);
      showError(err, null);
      renderAccess(id, view);
      renderLog(id, log || []);
      tid('access-updated', p.el).textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) { state.shares.delete(id); renderShares(); return; }
      if (!(e instanceof NetworkError)) showError(err, e);
    } finally {
      p.loading = false;
      if (p.again && accessPanels.get(id) === p) { p.again = false; loadAccess(id); }
    }
  }

  function renderAccess(id, view) {
    const p = accessPanels.get(id);
    if (!p || !view) return;
    const el = p.el;
    if (view.share) {
      const old = state.shares.get(id);
      if (!old || JSON.stringify(old) !== JSON.stringify(view.share)) {
        state.shares.set(id, view.share);
        renderShares();
      }
    }
    const key = JSON.stringify([view.allow, view.invites]);
    if (key === p.accessKey) return;
    p.accessKey = key;

    const allow = view.allow || [];
    tid('access-allow-empty', el).hidden = allow.length > 0;
    syncList(tid('access-allow-list', el), allow, (peer) => peer, (peer) => {
      const li = $('#allow-template').content.firstElementChild.cloneNode(true);
      const b = tid('access-allow-remove', li);
      b.setAttribute('aria-label', `Remove ${peer} from the allowed peers`);
      b.addEventListener('click', async () => {
        const errEl = tid('access-allow-error', el);
        b.disabled = true;
        showError(errEl, null);
        try {
          renderAccess(id, await api('DELETE', `${sharePath(id)}/allow/${encodeURIComponent(peer)}`));
        } catch (e) {
          showError(errEl, e);
        } finally {
          b.disabled = false;
        }
      });
      return li;
    }, (li, peer) => {
      tid('access-allow-peer', li).textContent = peer;
    });

    const invites = [...(view.invites || [])].sort((a, b) => (b.created_at - a.created_at) || a.id.localeCompare(b.id));
    tid('access-invites-empty', el).hidden = invites.length > 0;
    syncList(tid('access-invite-list', el), invites, (inv) => inv.id, (inv) => {
      const li = $('#invite-template').content.firstElementChild.cloneNode(true);
      const b = tid('access-invite-revoke', li);
      b.setAttribute('aria-label', `Revoke invite ${inv.id.slice(0, 8)}`);
      b.addEventListener('click', async () => {
        const errEl = tid('access-invite-item-error', li);
        b.disabled = true;
        showError(errEl, null);
        try {
          const updated = await api('POST', `/invites/${encodeURIComponent(inv.id)}/revoke`);
          renderInvite(li, updated);
          loadAccess(id);
        } catch (e) {
          showError(errEl, e);
        } finally {
          b.disabled = false;
        }
      });
      return li;
    }, renderInvite);
  }

  function renderInvite(li, inv) {
    li.dataset.id = inv.id;
    li.dataset.state = inv.state;
    const idEl = tid('access-invite-id', li);
    idEl.textContent = inv.id.slice(0, 8);
    idEl.title = `invite ${inv.id}, created ${fmtTime(inv.created_at)}`;
    const st = tid('access-invite-state', li);
    st.textContent = INVITE_STATE_TEXT[inv.state] || inv.state;
    st.dataset.state = inv.state;
    const max = inv.max_uses === null || inv.max_uses === undefined ? 'unlimited' : String(inv.max_uses);
    tid('access-invite-uses', li).textContent = `uses ${inv.uses}/${max}`;
    const exp = tid('access-invite-expiry', li);
    if (inv.expires_at === null || inv.expires_at === undefined) exp.textContent = 'no expiry';
    else exp.textContent = `${inv.state === 'expired' ? 'expired' : 'expires'} ${fmtTime(inv.expires_at)}`;
    const rec = tid('access-invite-recipient', li);
    rec.textContent = inv.recipient ? `for ${shortId(inv.recipient)}` : 'for anyone holding it';
    rec.title = inv.recipient || '';
    if (inv.revoked_at !== null && inv.revoked_at !== undefined) rec.title = `revoked ${fmtTime(inv.revoked_at)}`;
    // A used-up invite still admits the peers that used it: it can be revoked too.
    tid('access-invite-revoke', li).hidden = !(inv.state === 'active' || inv.state === 'used_up');
  }

  function renderLog(id, rows) {
    const p = accessPanels.get(id);
    if (!p) return;
    const key = JSON.stringify(rows.slice(0, LOG_SHOWN));
    if (key === p.logKey) return;
    p.logKey = key;
    const el = p.el;
    tid('access-log-empty', el).hidden = rows.length > 0;
    tid('access-log-table', el).hidden = rows.length === 0;
    // data-label names the column where narrow screens show rows as blocks.
    const cell = (testid, label, text, cls) => {
      const td = document.createElement('td');
      td.dataset.testid = testid;
      td.dataset.label = label;
      td.textContent = text;
      if (cls) td.className = cls;
      return td;
    };
    tid('access-log-list', el).replaceChildren(...rows.slice(0, LOG_SHOWN).map((r) => {
      const tr = document.createElement('tr');
      tr.dataset.testid = 'access-log-row';
      tr.dataset.allowed = r.allowed ? 'true' : 'false';
      tr.append(
        cell('access-log-time', 'Time', fmtTime(r.at)),
        cell('access-log-peer', 'Peer', r.peer_id, 'mono'),
        cell('access-log-addr', 'Address', r.addr || '—', 'mono'),
        cell('access-log-result', 'Result', r.allowed ? 'allowed' : 'denied', r.allowed ? 'ok' : 'bad'),
        cell('access-log-reason', 'Reason', r.reason),
        cell('access-log-bytes', 'Bytes', fmtBytes(r.bytes)),
      );
      return tr;
    }));
  }

  function reloadAccessPanels() {
    return Promise.allSettled([...accessPanels.keys()].map(loadAccess));
  }

  // ---------- transfers: a sortable, filterable table ----------

  const transferEls = new Map();
  const STATE_TEXT = {
    queued: 'queued',
    downloading: 'downloading',
    paused: 'paused',
    seeding: 'done, seeding',
    completed: 'completed',
    failed: 'failed',
  };
  // Sort order of states: what needs attention first.
  const STATE_ORDER = { downloading: 0, queued: 1, failed: 2, paused: 3, seeding: 4, completed: 5 };
  const view = { sort: 'added', dir: 'desc', filter: 'all', search: '' };
  const selected = new Set();
  const SORT_KEYS = {
    name: (t) => (t.name || t.id).toLowerCase(),
    size: (t) => (t.total_bytes === null || t.total_bytes === undefined ? -1 : t.total_bytes),
    progress: (t) => (isFinished(t) ? 1 : Number(t.progress) || 0),
    state: (t) => STATE_ORDER[t.state] ?? 9,
    down: (t) => t.down_rate || 0,
    up: (t) => t.up_rate || 0,
    eta: (t) => (t.eta_s === null || t.eta_s === undefined ? Infinity : t.eta_s),
    peers: (t) => connectedPeers(t).length,
    ratio: (t) => (t.ratio === null || t.ratio === undefined ? -1 : t.ratio),
    added: (t) => t.added_at || 0,
  };

  const isFinished = (t) => t.state === 'seeding' || t.state === 'completed';
  const connectedPeers = (t) => (t.peers || []).filter((p) => p.connected);

  function transferElement(id) {
    let el = transferEls.get(id);
    if (el) return el;
    el = $('#transfer-template').content.firstElementChild.cloneNode(true);
    el.dataset.id = id;
    const errEl = tid('transfer-error', el);
    const act = (action) => async () => {
      const btn = tid(`transfer-${action}`, el);
      showError(errEl, null);
      if (action === 'cancel') {
        const t = state.transfers.get(id);
        if (t) confirmCancel([t]);
        return;
      }
      btn.disabled = true;
      try {
        // A completed download seeds again through the resume route.
        const route = action === 'seed' ? 'resume' : action;
        upsertTransfer(await api('POST', `/transfers/${encodeURIComponent(id)}/${route}`));
      } catch (e) {
        showError(errEl, e);
        renderStatusRow(el);
      } finally {
        btn.disabled = false;
      }
    };
    for (const a of ['pause', 'resume', 'seed', 'cancel']) tid(`transfer-${a}`, el).addEventListener('click', act(a));
    const refreshFiles = setupTransferFiles(id, el);
    el.refreshFiles = refreshFiles;
    const toggle = tid('transfer-details-button', el);
    toggle.addEventListener('click', () => {
      const open = toggle.getAttribute('aria-expanded') !== 'true';
      toggle.setAttribute('aria-expanded', open ? 'true' : 'false');
      tid('transfer-details', el).hidden = !open;
      refreshFiles();
    });
    tid('transfer-copy-button', el).addEventListener('click', () => copyField(tid('transfer-ticket', el), tid('transfer-ticket-note', el)));
    tid('transfer-qr-button', el).addEventListener('click', () => toggleQrOf(tid('transfer-qr', el), tid('transfer-qr-button', el), tid('transfer-ticket', el).value, errEl));
    const box = tid('transfer-select', el);
    box.addEventListener('change', () => {
      if (box.checked) selected.add(id); else selected.delete(id);
      renderSelection();
    });
    const limitInput = tid('transfer-item-limit-input', el);
    limitInput.addEventListener('input', () => { limitInput.dataset.dirty = '1'; });
    tid('transfer-limit-form', el).addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const r = readRate(tid('transfer-item-limit-input', el), tid('transfer-item-limit-unit', el));
      if (r.error) { showError(errEl, r.error); renderStatusRow(el); return; }
      showError(errEl, null);
      try {
        limitInput.dataset.dirty = '';
        upsertTransfer(await api('PATCH', `/transfers/${encodeURIComponent(id)}`, { download_limit: r.value }));
      } catch (e) {
        showError(errEl, e);
        renderStatusRow(el);
      }
    });
    transferEls.set(id, el);
    tid('transfer-table').append(el);
    return el;
  }

  // The row under a transfer shows its trouble and errors, when it has any.
  function renderStatusRow(el) {
    tid('transfer-status-row', el).hidden = tid('transfer-trouble', el).hidden && tid('transfer-error', el).hidden
      && tid('transfer-note', el).hidden && tid('transfer-searching', el).hidden;
  }

  function renderTransfer(t) {
    const el = transferElement(t.id);
    el.dataset.state = t.state;
    const name = t.name || shortId(t.id);
    tid('transfer-name', el).textContent = name;
    tid('transfer-details-button', el).title = `${t.id}: show details`;
    tid('transfer-select', el).setAttribute('aria-label', `Select ${name}`);
    tid('transfer-state', el).textContent = STATE_TEXT[t.state] || t.state;
    tid('transfer-state', el).dataset.state = t.state;
    const finished = isFinished(t);
    const p = finished ? 1 : Math.max(0, Math.min(1, Number(t.progress) || 0));
    const bar = $('.bar', el);
    bar.style.width = `${(p * 100).toFixed(2)}%`;
    const pb = tid('transfer-progress', el);
    pb.setAttribute('aria-valuenow', (p * 100).toFixed(1));
    pb.setAttribute('aria-label', `${name}: ${fmtPercent(p)}`);
    tid('transfer-percent', el).textContent = fmtPercent(p);
    const known = t.total_bytes !== null && t.total_bytes !== undefined;
    tid('transfer-bytes', el).textContent = known
      ? `${fmtBytes(t.done_bytes)} of ${fmtBytes(t.total_bytes)}`
      : `${fmtBytes(t.done_bytes)} of ?`;
    tid('transfer-size', el).textContent = known ? fmtBytes(t.total_bytes) : '?';
    tid('transfer-down', el).textContent = fmtRate(t.down_rate || 0);
    tid('transfer-up', el).textContent = fmtRate(t.up_rate || 0);
    tid('transfer-eta', el).textContent = t.state === 'downloading' && t.eta_s !== null && t.eta_s !== undefined
      ? fmtDuration(t.eta_s) : '—';
    tid('transfer-ratio', el).textContent = t.ratio === null || t.ratio === undefined ? '—' : Number(t.ratio).toFixed(2);
    tid('transfer-added', el).textContent = fmtTime(t.added_at);
    tid('transfer-id', el).textContent = t.id;
    tid('transfer-output', el).textContent = t.output;
    tid('transfer-rates', el).textContent = `↓ ${fmtRate(t.down_rate || 0)} ↑ ${fmtRate(t.up_rate || 0)}`;
    tid('transfer-sent', el).textContent = `${fmtBytes(t.uploaded_bytes || 0)} to other peers`;
    tid('transfer-seeded', el).textContent = t.seeded_s ? fmtDuration(t.seeded_s) : '—';
    const choice = [];
    if (t.only && t.only.length) choice.push(`only ${t.only.join(', ')}`);
    if (t.exclude && t.exclude.length) choice.push(`not ${t.exclude.join(', ')}`);
    tid('transfer-choice', el).textContent = choice.length ? choice.join('; ') : (t.kind === 'folder' ? 'all' : '—');
    const ticket = tid('transfer-ticket', el);
    if (t.ticket && ticket.value !== t.ticket) ticket.value = t.ticket;
    tid('transfer-files-block', el).hidden = t.kind !== 'folder';
    if (el.refreshFiles) el.refreshFiles();
    const note = tid('transfer-note', el);
    note.textContent = t.note || '';
    note.hidden = !t.note;
    const searching = tid('transfer-searching', el);
    searching.textContent = t.searching || '';
    searching.hidden = !t.searching;
    const peers = t.peers || [];
    const connected = connectedPeers(t);
    tid('transfer-peer-count', el).textContent = String(connected.length);
    const direct = connected.filter((p2) => p2.path !== 'relayed').length;
    const relayed = connected.length - direct;
    const knownPeers = peers.length > connected.length ? ` of ${peers.length} known` : '';
    tid('transfer-peers', el).textContent = `${connected.length} peer${connected.length === 1 ? '' : 's'} connected${knownPeers}`
      + (connected.length ? ` (${direct} direct, ${relayed} relayed)` : '')
      + (t.download_limit !== null && t.download_limit !== undefined ? ` · limit ${fmtRate(t.download_limit)}` : '');
    tid('transfer-peer-list', el).replaceChildren(...peers.map((p2) => {
      const li = document.createElement('li');
      li.dataset.testid = 'transfer-peer';
      const id = document.createElement('span');
      id.className = 'mono';
      id.textContent = shortId(p2.peer_id);
      id.title = p2.peer_id;
      const badge = document.createElement('span');
      badge.className = `badge ${p2.path}`;
      badge.textContent = p2.connected ? p2.path : `${p2.path}, disconnected`;
      const meta = document.createElement('span');
      meta.textContent = `↓ ${fmtBytes(p2.downloaded)} (${fmtRate(p2.down_rate || 0)}) ↑ ${fmtBytes(p2.uploaded)} (${fmtRate(p2.up_rate || 0)})`
        + (p2.progress === null || p2.progress === undefined ? '' : ` · has ${fmtPercent(p2.progress)}`);
      li.append(id, ' ', badge, ' ', meta);
      if (p2.address) {
        const addr = document.createElement('span');
        addr.className = 'mono muted';
        addr.textContent = p2.address;
        li.append(' ', addr);
      }
      if (p2.banned) {
        const banned = document.createElement('span');
        banned.className = 'badge banned';
        banned.dataset.testid = 'transfer-peer-banned';
        banned.textContent = 'banned: sent corrupt data';
        li.append(' ', banned);
      }
      return li;
    }));
    // Corrupt data is discarded and fetched again; the user is told, with
    // the peers banned for it.
    const trouble = tid('transfer-trouble', el);
    const bannedPeers = peers.filter((p2) => p2.banned).map((p2) => shortId(p2.peer_id));
    const failed = t.pieces_failed || 0;
    const parts = [];
    if (failed > 0) parts.push(`${failed} piece${failed === 1 ? '' : 's'} failed verification (discarded, fetched again)`);
    if (bannedPeers.length) parts.push(`banned for sending corrupt data: ${bannedPeers.join(', ')}`);
    trouble.textContent = parts.join('; ');
    trouble.hidden = parts.length === 0;
    const limitInput = tid('transfer-item-limit-input', el);
    if (!limitInput.dataset.dirty && document.activeElement !== limitInput) {
      writeRate(limitInput, tid('transfer-item-limit-unit', el), t.download_limit);
    }
    // Only offer what makes sense in this state.
    const pause = tid('transfer-pause', el);
    pause.hidden = !(t.state === 'queued' || t.state === 'downloading' || t.state === 'seeding');
    pause.textContent = t.state === 'seeding' ? 'Stop seeding' : 'Pause';
    tid('transfer-resume', el).hidden = t.state !== 'paused' && t.state !== 'failed';
    tid('transfer-seed', el).hidden = t.state !== 'completed' || t.kind !== 'file';
    tid('transfer-cancel', el).textContent = finished ? 'Remove' : 'Cancel';
    const err = tid('transfer-error', el);
    if (t.error) showError(err, t.error);
    else if (err.dataset.fromServer) showError(err, null);
    err.dataset.fromServer = t.error ? '1' : '';
    renderStatusRow(el);
  }

  // Transfers seen finished on this page (finishing again is not announced).
  const announced = new Set();

  // Notices when a transfer this page watched finishes or fails.
  function noticeChange(before, t) {
    const was = announced.has(t.id);
    if (isFinished(t)) announced.add(t.id);
    noticeTransition(before, t, was);
  }

  function noticeTransition(before, t, wasAnnounced) {
    if (!before) {
      logEvent(`Added ${t.name || shortId(t.id)} (${STATE_TEXT[t.state] || t.state})`);
      return;
    }
    if (before.state === t.state) return;
    const name = t.name || shortId(t.id);
    logEvent(`${name}: ${STATE_TEXT[before.state] || before.state} → ${STATE_TEXT[t.state] || t.state}`, t.state === 'failed' ? 'bad' : '');
    // Each download is announced once: seeding again after a stop is no news.
    if (isFinished(t) && !wasAnnounced) notify(`Downloaded ${name}`, `${fmtBytes(t.total_bytes)} saved in ${t.output}`);
    if (t.state === 'failed') notify(`${name} failed`, t.error || 'The download stopped.');
  }

  // `force`: a full list after (re)connecting replaces what is shown. Else a
  // view older than the one shown (an action's response that arrives after a
  // later event) is dropped.
  function upsertTransfer(t, force = false) {
    if (!t || !t.id) return;
    const shown = state.transfers.get(t.id);
    if (!force && shown && Number(shown.revision) > Number(t.revision)) return;
    noticeChange(shown, t);
    state.transfers.set(t.id, t);
    renderTransfer(t);
    scheduleTableView();
  }

  function removeTransfer(id) {
    const t = state.transfers.get(id);
    if (t) logEvent(`Removed ${t.name || shortId(t.id)}`);
    state.transfers.delete(id);
    selected.delete(id);
    announced.delete(id);
    const el = transferEls.get(id);
    if (el) { el.remove(); transferEls.delete(id); }
    scheduleTableView();
  }

  // Sorting, filtering and counts, once per frame however many events came.
  let viewPending = false;
  function scheduleTableView() {
    if (viewPending) return;
    viewPending = true;
    requestAnimationFrame(() => { viewPending = false; applyTableView(); });
  }

  function matchesFilter(t) {
    const f = view.filter;
    if (f === 'active' && !(t.state === 'queued' || t.state === 'downloading')) return false;
    if (f !== 'all' && f !== 'active' && t.state !== f) return false;
    const q = view.search.trim().toLowerCase();
    return !q || (t.name || '').toLowerCase().includes(q) || t.id.includes(q);
  }

  function applyTableView() {
    const key = SORT_KEYS[view.sort] || SORT_KEYS.added;
    const sign = view.dir === 'asc' ? 1 : -1;
    const all = [...state.transfers.values()].sort((a, b) => {
      const ka = key(a);
      const kb = key(b);
      const c = typeof ka === 'string' ? ka.localeCompare(kb) : (ka > kb) - (ka < kb);
      return c * sign || a.id.localeCompare(b.id);
    });
    const table = tid('transfer-table');
    let shown = 0;
    for (const t of all) {
      const el = transferEls.get(t.id);
      if (!el) continue;
      const visible = matchesFilter(t);
      el.hidden = !visible;
      if (visible) shown += 1;
      table.append(el); // moving a node keeps its state (open details, focus)
    }
    for (const th of table.querySelectorAll('th[data-sort]')) {
      th.setAttribute('aria-sort', th.dataset.sort === view.sort ? (view.dir === 'asc' ? 'ascending' : 'descending') : 'none');
    }
    tid('transfers-empty').hidden = state.transfers.size > 0;
    tid('transfers-none-shown').hidden = state.transfers.size === 0 || shown > 0;
    table.hidden = state.transfers.size === 0;
    const active = all.filter((t) => t.state === 'downloading' || t.state === 'queued').length;
    tid('transfers-count').textContent = state.transfers.size ? `(${active ? `${active}/` : ''}${state.transfers.size})` : '';
    renderSelection();
  }

  // The selected transfers that are shown (a filter hides the others from bulk actions).
  function shownSelection() {
    return [...selected].map((id) => state.transfers.get(id)).filter((t) => t && matchesFilter(t));
  }

  function renderSelection() {
    for (const [id, el] of transferEls) tid('transfer-select', el).checked = selected.has(id);
    const sel = shownSelection();
    tid('transfers-selected').textContent = sel.length ? `${sel.length} selected` : '';
    tid('transfers-bulk-pause').disabled = !sel.some((t) => ['queued', 'downloading', 'seeding'].includes(t.state));
    tid('transfers-bulk-resume').disabled = !sel.some((t) => t.state === 'paused' || t.state === 'failed');
    tid('transfers-bulk-remove').disabled = sel.length === 0;
    const shownIds = [...state.transfers.values()].filter(matchesFilter).map((t) => t.id);
    const all = tid('transfers-select-all');
    all.checked = shownIds.length > 0 && shownIds.every((id) => selected.has(id));
    all.indeterminate = !all.checked && shownIds.some((id) => selected.has(id));
  }

  function setupTransferTable() {
    for (const th of tid('transfer-table').querySelectorAll('th[data-sort]')) {
      $('button', th).addEventListener('click', () => {
        const k = th.dataset.sort;
        if (view.sort === k) view.dir = view.dir === 'asc' ? 'desc' : 'asc';
        else { view.sort = k; view.dir = k === 'name' || k === 'state' || k === 'eta' ? 'asc' : 'desc'; }
        applyTableView();
      });
    }
    tid('transfers-filter').addEventListener('change', (ev) => { view.filter = ev.target.value; applyTableView(); });
    tid('transfers-search').addEventListener('input', (ev) => { view.search = ev.target.value; applyTableView(); });
    tid('transfers-select-all').addEventListener('change', (ev) => {
      for (const t of state.transfers.values()) {
        if (!matchesFilter(t)) continue;
        if (ev.target.checked) selected.add(t.id); else selected.delete(t.id);
      }
      renderSelection();
    });
    const bulk = (action, pred) => async () => {
      const targets = shownSelection().filter(pred);
      await Promise.allSettled(targets.map(async (t) => {
        try {
          upsertTransfer(await api('POST', `/transfers/${encodeURIComponent(t.id)}/${action}`));
        } catch (e) {
          const el = transferEls.get(t.id);
          if (el) { showError(tid('transfer-error', el), e); renderStatusRow(el); }
        }
      }));
    };
    tid('transfers-bulk-pause').addEventListener('click', bulk('pause', (t) => ['queued', 'downloading', 'seeding'].includes(t.state)));
    tid('transfers-bulk-resume').addEventListener('click', bulk('resume', (t) => t.state === 'paused' || t.state === 'failed'));
    tid('transfers-bulk-remove').addEventListener('click', () => {
      const targets = shownSelection();
      if (targets.length) confirmCancel(targets);
    });
    setupCancelDialog();
  }

  // ---------- the cancel dialog: nothing is deleted without asking ----------

  let cancelTargets = [];

  function confirmCancel(targets) {
    cancelTargets = targets;
    const dlg = tid('cancel-dialog');
    const unfinished = targets.filter((t) => !isFinished(t));
    const names = targets.map((t) => t.name || shortId(t.id));
    const what = names.length === 1 ? `“${names[0]}”` : `${names.length} transfers`;
    tid('cancel-title').textContent = unfinished.length ? `Cancel ${what}?` : `Remove ${what} from the list?`;
    tid('cancel-text').textContent = unfinished.length
      ? `${unfinished.length === 1 ? 'Its download stops' : 'Their downloads stop'} and ${names.length === 1 ? 'it is' : 'they are'} removed from the list. Unless you keep it, the partly downloaded data is deleted. Completed files are never deleted.`
      : 'It stops seeding and leaves the list. The downloaded files stay where they are.';
    tid('cancel-keep-label').hidden = unfinished.length === 0;
    tid('cancel-keep-data').checked = false;
    tid('cancel-confirm').textContent = unfinished.length ? 'Cancel download' : 'Remove';
    if (!dlg.open) dlg.showModal();
    tid('cancel-back').focus();
  }

  function setupCancelDialog() {
    const dlg = tid('cancel-dialog');
    tid('cancel-back').addEventListener('click', () => dlg.close());
    tid('cancel-confirm').addEventListener('click', async () => {
      const keep = tid('cancel-keep-data').checked;
      const targets = cancelTargets;
      cancelTargets = [];
      dlg.close();
      await Promise.allSettled(targets.map(async (t) => {
        try {
          await api('POST', `/transfers/${encodeURIComponent(t.id)}/cancel?keep_data=${keep ? 'true' : 'false'}`);
          if (keep) logEvent(`${t.name || shortId(t.id)}: cancelled, its data kept`);
          removeTransfer(t.id);
        } catch (e) {
          if (e instanceof ApiError && e.status === 404) { removeTransfer(t.id); return; }
          const el = transferEls.get(t.id);
          if (el) { showError(tid('transfer-error', el), e); renderStatusRow(el); }
        }
      }));
    });
  }

  async function reconcileTransfers(known) {
    try {
      const list = (await api('GET', '/transfers')) || [];
      const now = new Set(list.map((t) => t.id));
      for (const id of known) if (!now.has(id)) removeTransfer(id);
      for (const t of list) upsertTransfer(t, true);
    } catch (_) { /* banner or token notice already shown */ }
  }

  function setupTransferForm() {
    const form = tid('transfer-form');
    const err = tid('transfer-form-error');
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const ticket = tid('transfer-ticket-input').value.trim();
      const output = tid('transfer-output-input').value.trim();
      if (!ticket) { showError(err, 'Paste a ticket (shoal1…) or a content id.'); return; }
      const lim = readRate(tid('transfer-limit-input'), tid('transfer-limit-unit'));
      if (lim.error) { showError(err, lim.error); return; }
      showError(err, null);
      const body = { ticket, download_limit: lim.value };
      if (output) body.output = output;
      const name = tid('transfer-name-input').value.trim();
      if (name) body.name = name;
      const globs = (id) => tid(id).value.split('\n').map((g) => g.trim()).filter((g) => g);
      const only = globs('transfer-only-input');
      const exclude = globs('transfer-exclude-input');
      if (only.length) body.only = only;
      if (exclude.length) body.exclude = exclude;
      const btn = tid('transfer-add-button');
      btn.disabled = true;
      try {
        upsertTransfer(await api('POST', '/transfers', body));
        tid('transfer-ticket-input').value = '';
        tid('transfer-name-input').value = '';
        tid('transfer-limit-input').value = '';
        tid('transfer-only-input').value = '';
        tid('transfer-exclude-input').value = '';
        tid('transfer-list-block').hidden = true;
      } catch (e) {
        showError(err, e);
      } finally {
        btn.disabled = false;
      }
    });
    // A folder's files before it is downloaded: only its list is fetched.
    let listCount = FILES_PAGE;
    const listFiles = async () => {
      const ticket = tid('transfer-ticket-input').value.trim();
      if (!ticket) { showError(err, 'Paste a folder\'s ticket (shoal1…) or content id first.'); return; }
      showError(err, null);
      const btn = tid('transfer-list-button');
      const note = tid('transfer-list-note');
      btn.disabled = true;
      note.textContent = 'Asking the sharer for the list of files…';
      try {
        const route = `/ls?ticket=${encodeURIComponent(ticket)}&timeout_s=20`;
        await loadFiles(route, tid('transfer-list-files'), tid('transfer-list-more'), listCount, false, true);
        tid('transfer-list-block').hidden = false;
        note.textContent = '';
      } catch (e) {
        note.textContent = '';
        tid('transfer-list-block').hidden = true;
        showError(err, e);
      } finally {
        btn.disabled = false;
      }
    };
    tid('transfer-list-button').addEventListener('click', () => { listCount = FILES_PAGE; listFiles(); });
    tid('transfer-list-more').addEventListener('click', () => { listCount += FILES_PAGE; listFiles(); });
    setupTransferTable();
  }

  // ---------- a ticket pasted or dropped anywhere ----------

  const TICKET_RE = /^(shoal1[0-9a-z]+|[0-9a-f]{64})$/i;

  function takeTicket(text, how) {
    const t = (text || '').trim();
    if (!TICKET_RE.test(t)) return false;
    showTab('transfers');
    const input = tid('transfer-ticket-input');
    input.value = t;
    tid('transfer-form-error').hidden = true;
    toast(`Ticket ${how}: choose where to save it, then Download.`);
    tid('transfer-add-button').focus();
    return true;
  }

  function setupTicketDrop() {
    document.addEventListener('paste', (ev) => {
      const target = ev.target;
      // Pasting into a field is the field's business.
      if (target && (target.closest('input, textarea, select, [contenteditable]'))) return;
      const text = ev.clipboardData ? ev.clipboardData.getData('text/plain') : '';
      if (takeTicket(text, 'pasted')) ev.preventDefault();
    });
    document.addEventListener('dragover', (ev) => {
      if (ev.dataTransfer && [...ev.dataTransfer.types].includes('text/plain')) ev.preventDefault();
    });
    document.addEventListener('drop', (ev) => {
      const text = ev.dataTransfer ? ev.dataTransfer.getData('text/plain') : '';
      if (takeTicket(text, 'dropped')) ev.preventDefault();
    });
  }

  // ---------- peers ----------

  function renderPeers() {
    const list = tid('peer-list');
    list.replaceChildren(...state.peers.map((p) => {
      const el = $('#peer-template').content.firstElementChild.cloneNode(true);
      el.dataset.id = p.peer_id;
      tid('peer-id', el).textContent = p.peer_id;
      tid('peer-path', el).textContent = p.path;
      tid('peer-path', el).classList.add(p.path);
      tid('peer-rates', el).textContent = `↓ ${fmtRate(p.down_rate || 0)} ↑ ${fmtRate(p.up_rate || 0)}`;
      const n = (p.transfers || []).length;
      const m = (p.shares || []).length;
      tid('peer-transfers', el).textContent = `${n} transfer${n === 1 ? '' : 's'}`
        + (m ? ` · downloading ${m} of our share${m === 1 ? '' : 's'}` : '');
      fillList(tid('peer-addresses', el), p.addresses || []);
      return el;
    }));
    tid('peers-empty').hidden = state.peers.length > 0;
    tid('peers-count').textContent = state.peers.length ? `(${state.peers.length})` : '';
  }

  async function loadPeers() {
    try {
      state.peers = (await api('GET', '/peers')) || [];
      showError(tid('peers-error'), null);
      renderPeers();
    } catch (e) {
      if (!(e instanceof NetworkError)) showError(tid('peers-error'), e);
    }
  }

  // ---------- the status bar, the tab title and the speed graph ----------

  // One sample a second of the totals' rates: 5 minutes.
  const GRAPH_SAMPLES = 300;
  const samples = [];
  let totals = null;

  function setTotals(t) {
    if (!t) return;
    totals = t;
    tid('bar-down').textContent = `↓ ${fmtRate(t.down_rate || 0)}`;
    tid('bar-up').textContent = `↑ ${fmtRate(t.up_rate || 0)}`;
    tid('bar-session').textContent = `session ↓ ${fmtBytes(t.downloaded_session)} ↑ ${fmtBytes(t.uploaded_session)}`;
    tid('bar-all-time').textContent = `all time ↓ ${fmtBytes(t.downloaded_all_time)} ↑ ${fmtBytes(t.uploaded_all_time)}`;
    const busy = (t.down_rate || 0) > 0 || (t.up_rate || 0) > 0;
    document.title = busy ? `↓ ${fmtRate(t.down_rate || 0)} ↑ ${fmtRate(t.up_rate || 0)} · shoal` : 'shoal';
  }

  function setPeerCount(n) {
    tid('bar-peers').textContent = `${n} peer${n === 1 ? '' : 's'}`;
  }

  // Totals events come only when a figure changes: between them the rates
  // stay what the last one said.
  function sampleRates() {
    samples.push({ down: totals ? totals.down_rate || 0 : 0, up: totals ? totals.up_rate || 0 : 0 });
    while (samples.length > GRAPH_SAMPLES) samples.shift();
    if (currentTab === 'status' && !document.hidden) drawGraph();
  }

  function drawGraph() {
    const canvas = tid('speed-graph');
    const ctx = canvas.getContext && canvas.getContext('2d');
    if (!ctx) return;
    const css = getComputedStyle(document.documentElement);
    const w = canvas.width;
    const h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = css.getPropertyValue('--line').trim() || '#ccc';
    ctx.lineWidth = 1;
    for (let i = 1; i < 4; i += 1) {
      const y = Math.round((h * i) / 4) + 0.5;
      ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
    }
    const max = Math.max(1, ...samples.map((s) => Math.max(s.down, s.up)));
    tid('speed-graph-max').textContent = `top line: ${fmtRate(max)}`;
    const line = (key, color) => {
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      samples.forEach((s, i) => {
        const x = w - ((samples.length - 1 - i) * w) / (GRAPH_SAMPLES - 1);
        const y = h - 2 - (s[key] / max) * (h - 4);
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    };
    line('down', css.getPropertyValue('--bar').trim() || '#2f81f7');
    line('up', css.getPropertyValue('--ok').trim() || '#1a7f37');
  }

  // ---------- log, toasts and notifications ----------

  const LOG_MAX = 500;

  function logEvent(text, kind = '') {
    const list = tid('log-list');
    const li = document.createElement('li');
    li.dataset.testid = 'log-entry';
    if (kind) li.className = kind;
    const time = document.createElement('time');
    const now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString();
    const msg = document.createElement('span');
    msg.dataset.testid = 'log-text';
    msg.textContent = text;
    li.append(time, ' ', msg);
    list.prepend(li);
    while (list.children.length > LOG_MAX) list.lastElementChild.remove();
    tid('log-empty').hidden = true;
    tid('log-count').textContent = `(${list.children.length})`;
  }

  function toast(text) {
    const box = tid('toasts');
    const p = document.createElement('p');
    p.className = 'toast';
    p.dataset.testid = 'toast';
    p.textContent = text;
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'small';
    close.textContent = 'Dismiss';
    close.addEventListener('click', () => p.remove());
    p.append(' ', close);
    box.append(p);
    while (box.children.length > 4) box.firstElementChild.remove();
    setTimeout(() => p.remove(), 10000);
  }

  function notify(title, body) {
    toast(`${title}: ${body}`);
    try {
      if ('Notification' in window && Notification.permission === 'granted' && document.hidden) {
        new Notification(title, { body }); // eslint-disable-line no-new
      }
    } catch (_) { /* notifications unavailable here */ }
  }

  function setupNotifications() {
    const btn = tid('notify-button');
    const note = tid('notify-note');
    const show = () => {
      if (!('Notification' in window)) { btn.hidden = true; note.textContent = 'This browser has no notifications; finished downloads are shown on the page.'; return; }
      const p = Notification.permission;
      btn.hidden = p === 'granted' || p === 'denied';
      note.textContent = p === 'granted' ? 'The browser notifies you when a download finishes while this tab is in the background.'
        : p === 'denied' ? 'Notifications are blocked for this page in the browser settings; finished downloads are shown on the page.' : '';
    };
    btn.addEventListener('click', async () => {
      try { await Notification.requestPermission(); } catch (_) { /* ignore */ }
      show();
    });
    show();
    tid('log-clear').addEventListener('click', () => {
      tid('log-list').replaceChildren();
      tid('log-empty').hidden = false;
      tid('log-count').textContent = '';
    });
  }

  // ---------- light and dark ----------

  const THEME_KEY = 'shoal.theme';
  const THEMES = ['auto', 'light', 'dark'];

  function applyTheme(t) {
    if (t === 'light' || t === 'dark') document.documentElement.dataset.theme = t;
    else delete document.documentElement.dataset.theme;
    tid('theme-toggle').textContent = `Theme: ${t}`;
    if (currentTab === 'status') drawGraph();
  }

  function setupTheme() {
    let t = 'auto';
    try { t = localStorage.getItem(THEME_KEY) || 'auto'; } catch (_) { /* ignore */ }
    applyTheme(THEMES.includes(t) ? t : 'auto');
    tid('theme-toggle').addEventListener('click', () => {
      const cur = document.documentElement.dataset.theme || 'auto';
      const next = THEMES[(THEMES.indexOf(cur) + 1) % THEMES.length];
      try { localStorage.setItem(THEME_KEY, next); } catch (_) { /* ignore */ }
      applyTheme(next);
    });
  }

  // ---------- settings ----------

  let settingsDirty = false;

  function renderSettings(fillForm) {
    const s = state.settings;
    if (!s) return;
    tid('settings-saved-upload').textContent = fmtRate(s.upload_limit);
    tid('settings-saved-download').textContent = fmtRate(s.download_limit);
    tid('settings-saved-max-connections').textContent = String(s.max_connections);
    tid('settings-saved-max-peers').textContent = String(s.max_peers_per_transfer);
    tid('settings-saved-seed-ratio').textContent = s.seed_ratio_limit === null || s.seed_ratio_limit === undefined ? 'never' : String(s.seed_ratio_limit);
    tid('settings-saved-seed-time').textContent = s.seed_time_limit === null || s.seed_time_limit === undefined ? 'never' : fmtDuration(s.seed_time_limit);
    // Never overwrite what the user is typing.
    if (fillForm || !settingsDirty) {
      writeRate(tid('settings-upload-input'), tid('settings-upload-unit'), s.upload_limit);
      writeRate(tid('settings-download-input'), tid('settings-download-unit'), s.download_limit);
      tid('settings-max-connections-input').value = String(s.max_connections);
      tid('settings-max-peers-input').value = String(s.max_peers_per_transfer);
      tid('settings-seed-ratio-input').value = s.seed_ratio_limit === null || s.seed_ratio_limit === undefined ? '' : String(s.seed_ratio_limit);
      tid('settings-seed-time-input').value = s.seed_time_limit === null || s.seed_time_limit === undefined ? ''
        : String(Math.round((s.seed_time_limit / 3600) * 1000) / 1000);
      settingsDirty = false;
    }
  }

  async function loadSettings() {
    try {
      state.settings = await api('GET', '/settings');
      renderSettings(false);
    } catch (_) { /* banner or token notice already shown */ }
  }

  function setupSettingsForm() {
    const form = tid('settings-form');
    const err = tid('settings-form-error');
    const note = tid('settings-saved-note');
    form.addEventListener('input', () => { settingsDirty = true; note.hidden = true; });
    tid('settings-reset-button').addEventListener('click', () => {
      showError(err, null);
      renderSettings(true);
    });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      note.hidden = true;
      const up = readRate(tid('settings-upload-input'), tid('settings-upload-unit'));
      const down = readRate(tid('settings-download-input'), tid('settings-download-unit'));
      if (up.error) { showError(err, `Upload limit: ${up.error}`); return; }
      if (down.error) { showError(err, `Download limit: ${down.error}`); return; }
      const count = (id, label) => {
        const raw = tid(id).value.trim();
        const n = Number(raw);
        if (raw === '' || !Number.isInteger(n) || n < 1) return { error: `${label}: enter a whole number of at least 1.` };
        return { value: n };
      };
      const mc = count('settings-max-connections-input', 'Max connections');
      const mp = count('settings-max-peers-input', 'Max peers per transfer');
      if (mc.error) { showError(err, mc.error); return; }
      if (mp.error) { showError(err, mp.error); return; }
      // Empty: no limit; else a positive number.
      const positive = (id, label) => {
        const raw = tid(id).value.trim();
        if (raw === '') return { value: null };
        const n = Number(raw);
        if (!Number.isFinite(n) || n <= 0) return { error: `${label}: enter a number above 0, or leave it empty for no limit.` };
        return { value: n };
      };
      const sr = positive('settings-seed-ratio-input', 'Stop seeding at ratio');
      const st = positive('settings-seed-time-input', 'Stop seeding after');
      if (sr.error) { showError(err, sr.error); return; }
      if (st.error) { showError(err, st.error); return; }
      showError(err, null);
      const btn = tid('settings-save-button');
      btn.disabled = true;
      try {
        state.settings = await api('PATCH', '/settings', {
          upload_limit: up.value,
          download_limit: down.value,
          max_connections: mc.value,
          max_peers_per_transfer: mp.value,
          seed_ratio_limit: sr.value,
          seed_time_limit: st.value === null ? null : Math.max(1, Math.round(st.value * 3600)),
        });
        renderSettings(true);
        note.hidden = false;
      } catch (e) {
        showError(err, e);
      } finally {
        btn.disabled = false;
      }
    });
  }

  // ---------- event stream ----------

  let streamAbort = null;
  let streamTimer = null;
  let backoff = BACKOFF_MIN_MS;
  let stopped = false;

  function handleEvent(name, data) {
    let v;
    try { v = JSON.parse(data); } catch (_) { return; }
    switch (name) {
      case 'transfer': upsertTransfer(v); break;
      case 'transfer_removed': removeTransfer(v.id); break;
      case 'share':
        if (!state.shares.has(v.id)) logEvent(`Sharing ${v.name}`);
        state.shares.set(v.id, v); renderShares(); break;
      case 'share_removed': {
        const old = state.shares.get(v.id);
        if (old) logEvent(`Stopped sharing ${old.name}`);
        state.shares.delete(v.id); renderShares(); break;
      }
      case 'totals': setTotals(v); break;
      case 'access': if (v && accessPanels.has(v.id)) loadAccess(v.id); break;
      case 'settings': state.settings = v; renderSettings(false); break;
      case 'error': eventError(v); break;
      default: break; // newer daemons may send more kinds: ignore them
    }
  }

  function eventError(v) {
    const msg = v && v.message ? String(v.message) : 'The daemon reported an error.';
    logEvent(msg, 'bad');
    const el = v && v.transfer ? transferEls.get(v.transfer) : null;
    if (el) { showError(tid('transfer-error', el), msg); renderStatusRow(el); return; }
    // Without a transfer it may say that events were dropped (a slow reader):
    // reload what events would have told us.
    if (!v || !v.transfer) {
      reconcileTransfers(new Set(state.transfers.keys()));
      loadShares();
      loadSettings();
    }
    const box = tid('event-errors');
    const p = document.createElement('p');
    p.className = 'form-error';
    p.dataset.testid = 'event-error';
    p.textContent = msg;
    const close = document.createElement('button');
    close.type = 'button';
    close.textContent = 'Dismiss';
    close.addEventListener('click', () => p.remove());
    p.append(' ', close);
    box.append(p);
    while (box.children.length > 5) box.firstElementChild.remove();
  }

  // Parses text/event-stream: lines ending in \n, \r\n or \r; "event:" and
  // "data:" fields; a blank line dispatches; lines starting with ":" are comments.
  function sseParser(onEvent) {
    let buf = '';
    let name = '';
    let data = [];
    let size = 0;
    return (chunk) => {
      buf += chunk;
      let start = 0;
      for (;;) {
        let i = start;
        while (i < buf.length && buf[i] !== '\n' && buf[i] !== '\r') i += 1;
        if (i >= buf.length) break;
        // A \r at the very end may be the first half of \r\n: wait for more.
        if (buf[i] === '\r' && i + 1 >= buf.length) break;
        const line = buf.slice(start, i);
        start = i + (buf[i] === '\r' && buf[i + 1] === '\n' ? 2 : 1);
        if (line === '') {
          if (data.length) onEvent(name || 'message', data.join('\n'));
          name = ''; data = []; size = 0;
          continue;
        }
        if (line[0] === ':') continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        let value = c < 0 ? '' : line.slice(c + 1);
        if (value[0] === ' ') value = value.slice(1);
        if (field === 'event') name = value;
        else if (field === 'data') { data.push(value); size += value.length; }
        if (size > MAX_EVENT_CHARS) throw new Error('event too large');
      }
      buf = buf.slice(start);
      if (buf.length > MAX_EVENT_CHARS) throw new Error('line too long');
    };
  }

  async function streamEvents() {
    if (stopped || !token) return;
    const ctrl = new AbortController();
    streamAbort = ctrl;
    let res;
    try {
      res = await fetch(`${API}/events`, {
        headers: { Authorization: `Bearer ${token}`, Accept: 'text/event-stream' },
        cache: 'no-store',
        signal: ctrl.signal,
      });
    } catch (_) {
      return retryStream(`Lost the connection to the shoal daemon at ${location.host}`);
    }
    if (res.status === 401) { tokenProblem('The daemon refused the access token (a new one is written when api.token is deleted): open this page again with `shoal ui`.'); return; }
    if (!res.ok || !res.body) return retryStream(`The daemon's event stream answered ${res.status}`);
    connectionBack();
    backoff = BACKOFF_MIN_MS;
    // Transfers removed while we were away must disappear; ones added since
    // arrive as events and are kept.
    reconcileTransfers(new Set(state.transfers.keys()));
    loadShares();
    loadSettings();
    loadStatus();
    reloadAccessPanels();
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const feed = sseParser(handleEvent);
    let heard = Date.now();
    const silence = setInterval(() => {
      if (Date.now() - heard > STREAM_SILENCE_MS) ctrl.abort();
    }, 5000);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        heard = Date.now();
        feed(decoder.decode(value, { stream: true }));
      }
    } catch (_) {
      // aborted, reset, or a malformed stream: all mean reconnect
    } finally {
      clearInterval(silence);
    }
    if (!stopped) retryStream(`Lost the connection to the shoal daemon at ${location.host}`);
  }

  function retryStream(why) {
    if (stopped) return;
    const wait = Math.round(backoff * (0.75 + Math.random() * 0.5));
    backoff = Math.min(BACKOFF_MAX_MS, backoff * 2);
    connectionLost(`${why}; retrying in ${Math.max(1, Math.round(wait / 1000))} s. Is \`shoal daemon\` still running?`);
    clearTimeout(streamTimer);
    streamTimer = setTimeout(streamEvents, wait);
  }

  // ---------- polling ----------

  let pollTimer = null;

  function pollNow() {
    clearTimeout(pollTimer);
    if (stopped || !token) return;
    const work = [];
    if (currentTab === 'status') work.push(loadStatus());
    if (currentTab === 'peers') work.push(loadPeers(), loadStatus());
    // The peer count in the status bar; totals come as events.
    if (currentTab !== 'status' && currentTab !== 'peers') work.push(loadStatus());
    // Invite uses and the access log change without an event.
    if (currentTab === 'shares') work.push(reloadAccessPanels());
    Promise.allSettled(work).then(() => {
      if (!stopped) pollTimer = setTimeout(pollNow, document.hidden ? POLL_MS * 5 : POLL_MS);
    });
  }

  function stopEverything() {
    stopped = true;
    clearTimeout(pollTimer);
    clearTimeout(streamTimer);
    if (streamAbort) streamAbort.abort();
  }

  // ---------- start ----------

  function start() {
    if (!token) { tokenProblem(null); return; }
    $('#app').hidden = false;
    setupTheme();
    setupShareForm();
    setupTransferForm();
    setupSettingsForm();
    setupNotifications();
    setupTicketDrop();
    setupTabs();
    setInterval(sampleRates, 1000);
    loadStatus();
    loadShares();
    loadSettings();
    streamEvents();
  }

  // Exposed for the end-to-end test and for debugging in the console.
  window.shoalUi = { fmtBytes, fmtRate, fmtDuration, fmtPercent, fmtTime, sseParser };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
