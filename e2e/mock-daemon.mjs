// A stand-in for `shoal daemon`'s HTTP API v1, for working on the web UI without
// building Rust: in-memory shares and transfers, transfers that progress on a
// timer, share access (visibility, allowlist, invites, an access log), the SSE
// stream, bearer auth and the contract's JSON errors. It serves the real UI
// files from crates/daemon/ui. Binds 127.0.0.1 only.
//
// Downloading one of its own shares stands for another peer fetching it: a
// private share fails without an invite ticket (the share's ticket followed by
// `i` and the invite id, as the mock's invites carry), and every attempt is
// written to the access log as the peer 12D3KooWMockSeeder.
//
//   node e2e/mock-daemon.mjs [PORT]    # prints http://127.0.0.1:PORT/#token=...
//
// It is a development aid, not a model of the daemon: the tests that matter run
// the real daemon (crates/shoal/tests/web_ui.rs).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const uiDir = path.join(here, '..', 'crates', 'daemon', 'ui');
const token = crypto.randomBytes(32).toString('hex');
const started = Date.now();

const shares = new Map();
const transfers = new Map();
// Share id → {allow: [peer id], invites: [invite], log: [row]}.
const access = new Map();
const invites = new Map();
const MOCK_PEER = '12D3KooWMockSeeder';
let settings = { upload_limit: null, download_limit: null, max_connections: 256, max_peers_per_transfer: 50 };
const streams = new Set();

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(text);
}

function fail(res, status, code, field, message) {
  send(res, status, { error: { code, field, message } }, status === 401 ? { 'WWW-Authenticate': 'Bearer' } : {});
}

function emit(name, data) {
  for (const s of streams) s.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
}

function readBody(req) {
  return new Promise((resolve) => {
    let text = '';
    req.on('data', (c) => { text += c; if (text.length > 65536) req.destroy(); });
    req.on('end', () => resolve(text));
  });
}

const VISIBILITIES = ['public', 'unlisted', 'private'];
const isPeerId = (s) => typeof s === 'string' && /^(12D3KooW|Qm)[1-9A-HJ-NP-Za-km-z]{6,}$/.test(s.trim());
const nowS = () => Math.floor(Date.now() / 1000);

function accessOf(id) {
  if (!access.has(id)) access.set(id, { allow: [], invites: [], log: [] });
  return access.get(id);
}

function inviteView(inv) {
  const now = nowS();
  let st = 'active';
  if (inv.revoked_at !== null) st = 'revoked';
  else if (inv.expires_at !== null && now >= inv.expires_at) st = 'expired';
  else if (inv.max_uses !== null && inv.uses >= inv.max_uses) st = 'used_up';
  const s = shares.get(inv.share);
  return { ...inv, users: undefined, state: st, ticket: s ? `${s.ticket}i${inv.id}` : null };
}

function accessView(id) {
  const a = accessOf(id);
  return { share: shares.get(id), allow: [...a.allow], invites: a.invites.map((i) => inviteView(invites.get(i))) };
}

function changed(id) { emit('access', { id }); }

// "30m", "1h", "7d" → seconds, or null.
function parseDuration(d) {
  const m = /^\s*(\d+)\s*(s|m|h|d|w)\s*$/.exec(d);
  if (!m) return null;
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2]];
}

function tick() {
  for (const t of transfers.values()) {
    if (t.state !== 'downloading') continue;
    const step = Math.min(t.total_bytes - t.done_bytes, t.download_limit ?? 2 * 1024 * 1024);
    t.done_bytes += step;
    t.progress = t.done_bytes / t.total_bytes;
    t.down_rate = step * 2;
    t.eta_s = t.down_rate ? (t.total_bytes - t.done_bytes) / t.down_rate : null;
    t.peers = [{ peer_id: '12D3KooWMockSeeder', path: 'direct', connected: true, downloaded: t.done_bytes, uploaded: 0, down_rate: t.down_rate, up_rate: 0 }];
    if (t.done_bytes >= t.total_bytes) { t.state = 'seeding'; t.down_rate = 0; t.eta_s = null; }
    emit('transfer', t);
  }
}
setInterval(tick, 500).unref();

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  if (p === '/' || p === '/index.html') {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    return res.end(fs.readFileSync(path.join(uiDir, 'index.html')));
  }
  if (p === '/assets/app.js' || p === '/assets/app.css') {
    res.writeHead(200, { 'Content-Type': p.endsWith('.js') ? 'text/javascript' : 'text/css' });
    return res.end(fs.readFileSync(path.join(uiDir, path.basename(p))));
  }
  if (!p.startsWith('/api/v1/')) return fail(res, 404, 'not_found', null, `no route ${p}`);
  if (req.headers.authorization !== `Bearer ${token}`) return fail(res, 401, 'unauthorized', null, 'missing or wrong token; run shoal ui');
  const route = `${req.method} ${p.slice(7)}`;
  let body = {};
  if (req.method === 'POST' || req.method === 'PATCH') {
    const text = await readBody(req);
    if (text) {
      try { body = JSON.parse(text); } catch (_) { return fail(res, 400, 'bad_request', null, 'body is not JSON'); }
    }
  }
  let m;
  if (route === 'GET /status') {
    return send(res, 200, {
      peer_id: '12D3KooWMockDaemonPeerIdForTheWebUiDevelopment', version: '0.1.0-mock',
      addresses: ['/ip4/127.0.0.1/tcp/40001'], ticket_addresses: ['/ip4/127.0.0.1/tcp/40001'],
      reachability: 'unknown', uptime_s: Math.round((Date.now() - started) / 1000), data_dir: '/tmp/shoal-mock', connected_peers: 1,
    });
  }
  if (route === 'GET /shares') return send(res, 200, [...shares.values()]);
  if (route === 'POST /shares') {
    if (typeof body.path !== 'string' || !body.path.startsWith('/')) return fail(res, 422, 'unprocessable', 'path', 'path must be an absolute path to a file or folder');
    let st;
    try { st = fs.statSync(body.path); } catch (_) { return fail(res, 422, 'unprocessable', 'path', `${body.path} does not exist; check the path`); }
    const id = crypto.createHash('sha256').update(body.path).digest('hex');
    if (body.visibility !== undefined && !VISIBILITIES.includes(body.visibility)) return fail(res, 422, 'unprocessable', 'visibility', 'visibility must be "public", "unlisted" or "private"');
    const visibility = body.visibility || (body.public === true ? 'public' : 'unlisted');
    const allow = body.allow || [];
    const bad = allow.findIndex((a) => !isPeerId(a));
    if (bad >= 0) return fail(res, 422, 'unprocessable', `allow[${bad}]`, `${JSON.stringify(allow[bad])} is not a peer id (like 12D3KooW…, as \`shoal status\` prints it)`);
    if (allow.length && visibility !== 'private') return fail(res, 422, 'unprocessable', 'allow', 'an allowlist only applies to a private share: add "visibility": "private"');
    const s = { id, kind: st.isDirectory() ? 'folder' : 'file', name: path.basename(body.path), path: body.path, size: st.size, files: 1, public: visibility === 'public', visibility, ticket: `shoal1mock${id}${Buffer.from(path.basename(body.path)).toString('hex')}` };
    shares.set(id, s);
    accessOf(id).allow = allow.map((a) => a.trim());
    emit('share', s);
    return send(res, 201, s);
  }
  if ((m = route.match(/^PATCH \/shares\/([0-9a-f]+)$/))) {
    const s = shares.get(m[1]);
    if (!s) return fail(res, 404, 'not_found', null, `no share with id ${m[1]}; GET /api/v1/shares lists them`);
    if (!VISIBILITIES.includes(body.visibility)) return fail(res, 422, 'unprocessable', 'visibility', 'visibility must be "public", "unlisted" or "private"');
    s.visibility = body.visibility;
    s.public = body.visibility === 'public';
    emit('share', s);
    changed(s.id);
    return send(res, 200, s);
  }
  if ((m = route.match(/^(GET|POST|DELETE) \/shares\/([0-9a-f]+)\/(access|access-log|allow|invites)(?:\/([^/]+))?$/))) {
    const [, method, id, what, arg] = m;
    if (!shares.has(id)) return fail(res, 404, 'not_found', null, `no share with id ${id}; GET /api/v1/shares lists them`);
    const a = accessOf(id);
    if (method === 'GET' && what === 'access' && !arg) return send(res, 200, accessView(id));
    if (method === 'GET' && what === 'access-log' && !arg) return send(res, 200, a.log);
    if (method === 'GET' && what === 'invites' && !arg) return send(res, 200, accessView(id).invites);
    if (method === 'POST' && what === 'allow' && !arg) {
      if (!isPeerId(body.peer_id)) return fail(res, 422, 'unprocessable', 'peer_id', `${JSON.stringify(body.peer_id)} is not a peer id (like 12D3KooW…, as \`shoal status\` prints it)`);
      if (!a.allow.includes(body.peer_id.trim())) a.allow.push(body.peer_id.trim());
      changed(id);
      return send(res, 200, accessView(id));
    }
    if (method === 'DELETE' && what === 'allow' && arg) {
      const peer = decodeURIComponent(arg);
      if (!isPeerId(peer)) return fail(res, 422, 'unprocessable', 'peer_id', `${JSON.stringify(peer)} is not a peer id`);
      a.allow = a.allow.filter((p2) => p2 !== peer);
      changed(id);
      return send(res, 200, accessView(id));
    }
    if (method === 'POST' && what === 'invites' && !arg) {
      if (body.to !== undefined && body.to !== null && !isPeerId(body.to)) return fail(res, 422, 'unprocessable', 'to', `${JSON.stringify(body.to)} is not a peer id`);
      let expiresAt = null;
      if (body.expires_in !== undefined && body.expires_in !== null) {
        const d = parseDuration(String(body.expires_in));
        if (d === null) return fail(res, 422, 'unprocessable', 'expires_in', `${JSON.stringify(body.expires_in)}: not a duration like 30m, 1h or 7d`);
        expiresAt = nowS() + d;
      }
      if (body.uses !== undefined && body.uses !== null && !(Number.isInteger(body.uses) && body.uses >= 1)) return fail(res, 422, 'unprocessable', 'uses', 'the use count must be at least 1');
      const inv = { id: crypto.randomBytes(16).toString('hex'), share: id, recipient: body.to || null, expires_at: expiresAt, max_uses: body.uses ?? null, uses: 0, users: [], created_at: nowS(), revoked_at: null };
      invites.set(inv.id, inv);
      a.invites.push(inv.id);
      changed(id);
      return send(res, 201, inviteView(inv));
    }
    return fail(res, 405, 'method_not_allowed', null, `${method} is not allowed here`);
  }
  if (route === 'GET /invites') return send(res, 200, [...invites.values()].map(inviteView));
  if ((m = route.match(/^POST \/invites\/([0-9a-f]+)\/revoke$/))) {
    const inv = invites.get(m[1]);
    if (!inv) return fail(res, 404, 'not_found', null, `no invite with id ${m[1]}; GET /api/v1/invites lists them`);
    if (inv.revoked_at === null) inv.revoked_at = nowS();
    changed(inv.share);
    return send(res, 200, inviteView(inv));
  }
  if (route === 'GET /access-log') return send(res, 200, [...access.values()].flatMap((a) => a.log).sort((x, y) => y.at - x.at));
  if ((m = route.match(/^DELETE \/shares\/([0-9a-f]+)$/))) {
    if (!shares.delete(m[1])) return fail(res, 404, 'not_found', null, 'no such share');
    emit('share_removed', { id: m[1] });
    res.writeHead(204); return res.end();
  }
  if (route === 'GET /transfers') return send(res, 200, [...transfers.values()]);
  if (route === 'POST /transfers') {
    const tm = typeof body.ticket === 'string' && /^shoal1mock([0-9a-f]{64})((?:[0-9a-f]{2})*)(?:i([0-9a-f]{32}))?$/.exec(body.ticket);
    if (!tm) return fail(res, 422, 'unprocessable', 'ticket', 'not a shoal ticket: copy the whole shoal1… text');
    const id = tm[1];
    if (transfers.has(id)) return send(res, 200, transfers.get(id));
    const name = body.name || Buffer.from(tm[2], 'hex').toString() || null;
    const t = { id, name, kind: 'file', output: body.output || '/tmp/shoal-mock/downloads', state: 'downloading', total_bytes: 6 * 1024 * 1024, done_bytes: 0, progress: 0, down_rate: 0, up_rate: 0, eta_s: null, peers: [], download_limit: body.download_limit ?? null, error: null, pieces_failed: 0, added_at: Math.floor(Date.now() / 1000) };
    const s = shares.get(id);
    if (s) {
      // One of our own shares: decide as the sharer would for MOCK_PEER.
      const a = accessOf(id);
      const inv = tm[3] ? invites.get(tm[3]) : null;
      let allowed = true;
      let reason = s.visibility;
      if (s.visibility === 'private') {
        const v = inv && inv.share === id ? inviteView(inv) : null;
        if (a.allow.includes(MOCK_PEER)) reason = 'allowlist';
        else if (!tm[3]) { allowed = false; reason = 'no invite'; t.error = 'this share is private: ask the sharer to allow your peer id or send an invite'; }
        else if (!v || v.state === 'revoked') { allowed = false; reason = 'invite revoked'; t.error = 'this invite was revoked by the sharer; ask the sharer for a new one'; }
        else if (v.state === 'expired') { allowed = false; reason = 'invite expired'; t.error = 'this invite expired; ask the sharer for a new one'; }
        else if (v.state === 'used_up' && !inv.users.includes(MOCK_PEER)) { allowed = false; reason = 'invite used up'; t.error = 'this invite has been used by as many peers as it allows; ask the sharer for a new one'; }
        else {
          reason = `invite ${inv.id}`;
          if (!inv.users.includes(MOCK_PEER)) { inv.users.push(MOCK_PEER); inv.uses += 1; }
        }
      }
      a.log.unshift({ at: nowS(), content: id, share: id, peer_id: MOCK_PEER, addr: '/ip4/127.0.0.1/tcp/40002 (direct)', allowed, reason, bytes: allowed ? s.size : 0 });
      if (!allowed) t.state = 'failed';
    }
    transfers.set(id, t);
    emit('transfer', t);
    return send(res, 201, t);
  }
  if ((m = route.match(/^(GET|PATCH|POST) \/transfers\/([0-9a-f]+)(\/pause|\/resume|\/cancel)?$/))) {
    const t = transfers.get(m[2]);
    if (!t) return fail(res, 404, 'not_found', null, 'no such transfer');
    if (m[3] === '/cancel') { transfers.delete(t.id); emit('transfer_removed', { id: t.id }); res.writeHead(204); return res.end(); }
    if (m[3] === '/pause') t.state = 'paused';
    if (m[3] === '/resume' && t.state === 'paused') t.state = 'downloading';
    if (m[1] === 'PATCH') t.download_limit = body.download_limit ?? null;
    emit('transfer', t);
    return send(res, 200, t);
  }
  if (route === 'GET /peers') return send(res, 200, [{ peer_id: '12D3KooWMockSeeder', addresses: ['/ip4/127.0.0.1/tcp/40002'], path: 'direct', down_rate: 0, up_rate: 0, transfers: [...transfers.keys()] }]);
  if (route === 'GET /settings') return send(res, 200, settings);
  if (route === 'PATCH /settings') {
    if (body.max_connections !== undefined && !(Number.isInteger(body.max_connections) && body.max_connections >= 1)) return fail(res, 422, 'unprocessable', 'max_connections', 'max_connections must be at least 1');
    settings = { ...settings, ...body };
    emit('settings', settings);
    return send(res, 200, settings);
  }
  if (route === 'GET /events') {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store' });
    res.flushHeaders();
    for (const t of transfers.values()) res.write(`event: transfer\ndata: ${JSON.stringify(t)}\n\n`);
    streams.add(res);
    const ka = setInterval(() => res.write(': keep-alive\n\n'), 15000);
    req.on('close', () => { clearInterval(ka); streams.delete(res); });
    return undefined;
  }
  return fail(res, 404, 'not_found', null, `no route ${route}`);
});

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(`http://127.0.0.1:${server.address().port}/#token=${token}`);
});
