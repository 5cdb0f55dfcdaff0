// A stand-in for `shoal daemon`'s HTTP API v1, for working on the web UI without
// building Rust: in-memory shares and transfers, transfers that progress on a
// timer, the SSE stream, bearer auth and the contract's JSON errors. It serves
// the real UI files from crates/daemon/ui. Binds 127.0.0.1 only.
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
    const s = { id, kind: st.isDirectory() ? 'collection' : 'file', name: path.basename(body.path), path: body.path, size: st.size, files: 1, public: body.public !== false, ticket: `shoal1mock${id}${Buffer.from(path.basename(body.path)).toString('hex')}` };
    shares.set(id, s);
    emit('share', s);
    return send(res, 201, s);
  }
  if ((m = route.match(/^DELETE \/shares\/([0-9a-f]+)$/))) {
    if (!shares.delete(m[1])) return fail(res, 404, 'not_found', null, 'no such share');
    emit('share_removed', { id: m[1] });
    res.writeHead(204); return res.end();
  }
  if (route === 'GET /transfers') return send(res, 200, [...transfers.values()]);
  if (route === 'POST /transfers') {
    if (typeof body.ticket !== 'string' || !/^shoal1mock[0-9a-f]{64}([0-9a-f]{2})*$/.test(body.ticket)) return fail(res, 422, 'unprocessable', 'ticket', 'not a shoal ticket: copy the whole shoal1… text');
    const id = body.ticket.slice(10, 74);
    const name = body.name || Buffer.from(body.ticket.slice(74), 'hex').toString() || null;
    const t = { id, name, kind: 'file', output: body.output || '/tmp/shoal-mock/downloads', state: 'downloading', total_bytes: 6 * 1024 * 1024, done_bytes: 0, progress: 0, down_rate: 0, up_rate: 0, eta_s: null, peers: [], download_limit: body.download_limit ?? null, error: null, added_at: Math.floor(Date.now() / 1000) };
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
