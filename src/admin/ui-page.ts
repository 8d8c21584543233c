/**
 * The status page's HTML: one self-contained document (inline style and script, no external asset, no
 * build step), so it works offline and under a strict Content-Security-Policy (`nonce` on the inline
 * style and script, `connect-src 'self'`). The script renders from `GET ui/state` (refreshed every few
 * seconds, at once after a config, source health or upstream health event) and streams `GET events` with `fetch` — not
 * `EventSource`, which cannot send an `Authorization` header. A `?token=` the page was opened with is read
 * once, removed from the address bar and kept in memory for those requests.
 * Everything from the stores is rendered with `textContent`, never as HTML.
 */
export const UI_REFRESH_MS = 5000;

export function uiPage(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>dynamic-lb status</title>
<link rel="icon" href="data:,">
<style nonce="${nonce}">${STYLE}</style>
</head>
<body>
<header>
  <h1>dynamic-lb</h1>
  <span id="overall" class="pill">loading…</span>
  <span id="updated" class="muted"></span>
  <span id="conn" class="muted"></span>
  <span id="listeners" class="muted"></span>
</header>
<main>
  <section>
    <h2>Policies</h2>
    <table id="policies"><thead><tr><th>Policy</th><th>Source</th><th>Fallback</th><th>Hits/s</th><th>Misses/s</th><th>Hit ratio</th><th>Hits</th><th>Fallbacks</th><th>503s</th><th>Miss reasons</th></tr></thead><tbody></tbody></table>
  </section>
  <section>
    <h2>Data sources</h2>
    <table id="sources"><thead><tr><th>Source</th><th>Type</th><th>Health</th><th>Routes</th><th>Last sync</th><th>Last error</th></tr></thead><tbody></tbody></table>
    <p id="cache" class="muted"></p>
    <p id="parse-errors" class="warn"></p>
  </section>
  <section>
    <h2>Upstream health <span id="upstream-count" class="muted"></span></h2>
    <table id="upstreams"><thead><tr><th>Upstream</th><th>Health</th><th>Checked</th><th>Last check</th><th>Failures</th><th>Last error</th><th>Policies</th></tr></thead><tbody></tbody></table>
  </section>
  <section>
    <h2>Routes <span id="route-count" class="muted"></span></h2>
    <input id="search" type="search" placeholder="Search key, source or upstream" autocomplete="off" aria-label="Search routes">
    <table id="routes"><thead><tr><th>Key</th><th>Source</th><th>State</th><th>Rules</th><th>Upstreams</th></tr></thead><tbody></tbody></table>
  </section>
  <section>
    <h2>Live events <button id="pause" type="button">Pause</button> <button id="clear" type="button">Clear</button></h2>
    <ol id="events" reversed></ol>
  </section>
</main>
<script nonce="${nonce}">${SCRIPT}</script>
</body>
</html>
`;
}

const STYLE = `
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --line: #8884; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; }
header { display: flex; gap: 1em; align-items: baseline; padding: .6em 1em; border-bottom: 1px solid var(--line); }
h1 { font-size: 1.2em; margin: 0; }
h2 { font-size: 1em; margin: 1.2em 0 .4em; }
main { padding: 0 1em 2em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; }
code { font: 12px ui-monospace, monospace; }
.pill { padding: .1em .6em; border-radius: 1em; color: #fff; background: #888; }
.ok { color: var(--ok); } .bad { color: var(--bad); } .warn { color: var(--warn); }
.pill.ok { background: var(--ok); color: #fff; } .pill.bad { background: var(--bad); color: #fff; }
.muted { opacity: .7; }
input[type=search] { width: 100%; max-width: 40em; padding: .3em .5em; margin-bottom: .5em; }
#events { font: 12px ui-monospace, monospace; max-height: 22em; overflow: auto; padding-left: 3em; }
#events li { white-space: pre-wrap; word-break: break-all; }
.rule { margin: 0 0 .2em; }
`;

const SCRIPT = `
'use strict';
const REFRESH_MS = ${UI_REFRESH_MS};
const params = new URLSearchParams(location.search);
const token = params.get('token');
if (token !== null) {
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
}
const auth = token ? { authorization: 'Bearer ' + token } : {};
const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) if (c !== undefined && c !== null) el.append(c instanceof Node ? c : String(c));
  return el;
}
function fill(tbody, rows, empty, cols) {
  tbody.replaceChildren(...(rows.length ? rows : [h('tr', {}, h('td', { colspan: String(cols), class: 'muted' }, empty))]));
}
function ago(iso) {
  if (!iso) return '—';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : Math.round(s / 3600) + ' h ago';
}
const fmtRate = (x) => (x === undefined ? '—' : x < 10 ? x.toFixed(2) : x.toFixed(0));

let previous; // { at, counts: { policy: {hits, misses} } }
function renderPolicies(state) {
  const now = Date.parse(state.generated_at);
  const counts = {};
  const rows = state.policies.map((p) => {
    const c = p.counts;
    const misses = c.fallbacks + c.none;
    counts[p.name] = { hits: c.hits, misses };
    const before = previous && previous.counts[p.name];
    const dt = previous ? (now - previous.at) / 1000 : 0;
    const hitRate = before && dt > 0 ? (c.hits - before.hits) / dt : undefined;
    const missRate = before && dt > 0 ? (misses - before.misses) / dt : undefined;
    const total = c.hits + misses;
    const reasons = Object.entries(c.reasons).map(([r, n]) => r + ' ' + n).join(', ');
    return h('tr', { 'data-policy': p.name },
      h('td', {}, h('code', {}, p.name)),
      h('td', {}, p.data_source ? p.data_source + ' (' + p.data_source_type + ')' : '—'),
      h('td', {}, (p.fallback_policy || 'none').split('.').pop() + (p.pool.length ? ' [' + p.pool.join(', ') + ']' : '')),
      h('td', { class: 'hit-rate' }, fmtRate(hitRate)),
      h('td', { class: 'miss-rate' }, fmtRate(missRate)),
      h('td', {}, total ? (100 * c.hits / total).toFixed(1) + ' %' : '—'),
      h('td', { class: 'hits' }, c.hits), h('td', { class: 'fallbacks' }, c.fallbacks), h('td', {}, c.none),
      h('td', { class: 'muted' }, reasons || '—'));
  });
  previous = { at: now, counts };
  fill($('policies').tBodies[0], rows, 'no policies', 10);
}

function sourceRows(name, s, depth) {
  const row = h('tr', { 'data-source': name },
    h('td', {}, '\\u00a0'.repeat(depth * 4) + name),
    h('td', {}, s.type),
    h('td', { class: s.healthy ? 'ok' : 'bad' }, s.healthy ? 'healthy' : 'unhealthy'),
    h('td', {}, s.config_count),
    h('td', { title: s.last_sync || '' }, ago(s.last_sync)),
    h('td', { class: 'bad' }, s.last_error || ''));
  return [row, ...Object.entries(s.children || {}).flatMap(([n, c]) => sourceRows(n, c, depth + 1))];
}
function renderSources(state) {
  const rows = Object.entries(state.sources).flatMap(([n, s]) => sourceRows(n, s, 0));
  fill($('sources').tBodies[0], rows, 'no data sources', 6);
  const c = state.cache;
  $('cache').textContent = 'Route cache: ' + c.entries + ' entries, ' + c.hits + ' hits, ' + c.misses + ' misses, hit ratio ' + (100 * c.hit_rate).toFixed(1) + ' %';
  const pe = Object.entries(state.parse_errors);
  $('parse-errors').textContent = pe.length ? 'Route config parse errors: ' + pe.map(([t, e]) => t + ' ' + e.total + ' (last ' + ago(e.last_at) + ')').join(', ') : '';
}

function renderRoutes(state) {
  const r = state.routes;
  const rows = r.items.map((route) => {
    const rules = route.rules.map((rule) => {
      const match = Object.entries(rule.match).map(([k, v]) => k + ' = ' + v).join(' and ') || 'always';
      const ups = rule.upstreams.map((u) => u.address + (u.weight !== 1 ? ' ×' + u.weight : '')).join(', ');
      return h('div', { class: 'rule' }, h('code', {}, 'p' + rule.priority + ' ' + match + ' → ' + rule.algorithm + ': ' + ups));
    });
    const refused = (route.refused_upstreams || []).map((x) => h('div', { class: 'bad' }, 'refused ' + x.address + ': ' + x.reason));
    return h('tr', { 'data-key': route.key },
      h('td', {}, h('code', {}, route.key)),
      h('td', {}, route.source),
      h('td', { class: route.enabled ? 'ok' : 'warn' }, (route.enabled ? 'enabled' : 'disabled') + (route.version !== undefined ? ' v' + route.version : '')),
      h('td', {}, ...(rules.length ? rules : [route.upstream ? h('code', {}, '→ ' + route.upstream) : '—'])),
      h('td', {}, h('code', {}, route.upstreams.join(', ')), ...refused));
  });
  fill($('routes').tBodies[0], rows, r.query ? 'no route matches' : 'no routes cached', 5);
  $('route-count').textContent = '(' + (r.query ? r.matched + ' of ' + r.total + ' match' : r.total + ' cached') + (r.matched > r.items.length ? ', first ' + r.items.length + ' shown' : '') + ')';
}

function renderUpstreams(state) {
  const u = state.upstreams;
  const rows = u.items.map((x) => h('tr', { 'data-upstream': x.address },
    h('td', {}, h('code', {}, x.address)),
    h('td', { class: x.healthy ? 'ok' : 'bad' }, x.healthy ? 'healthy' : 'down'),
    h('td', {}, x.active_checked ? 'active' : 'passive only'),
    h('td', { title: x.last_check || '' }, x.last_check ? ago(x.last_check) + (x.last_check_ok === false ? ' (failed)' : '') : '—'),
    h('td', {}, x.failures + ' now, ' + x.failures_total + ' total'),
    h('td', { class: 'bad' }, x.last_error || ''),
    h('td', {}, x.policies.join(', '))));
  fill($('upstreams').tBodies[0], rows, 'no upstream in use', 7);
  $('upstream-count').textContent = '(' + u.healthy + ' healthy, ' + u.unhealthy + ' down' + (u.total > u.items.length ? ', first ' + u.items.length + ' shown, down first' : '') + ')';
}

let loading = false, again = false, timer;
async function refresh() {
  if (loading) { again = true; return; }
  loading = true;
  clearTimeout(timer);
  try {
    const q = $('search').value.trim();
    const res = await fetch('ui/state' + (q ? '?q=' + encodeURIComponent(q) : ''), { headers: auth, cache: 'no-store' });
    if (!res.ok) throw new Error('state: HTTP ' + res.status);
    const state = await res.json();
    const overall = $('overall');
    overall.textContent = state.overall;
    overall.className = 'pill ' + (state.overall === 'healthy' ? 'ok' : 'bad');
    $('updated').textContent = 'updated ' + new Date(state.generated_at).toLocaleTimeString();
    if (state.listeners) $('listeners').textContent = 'listen ' + (state.listeners.listen || '?');
    renderPolicies(state);
    renderSources(state);
    renderRoutes(state);
    renderUpstreams(state);
  } catch (err) {
    $('updated').textContent = 'update failed: ' + err.message;
  } finally {
    loading = false;
    timer = setTimeout(refresh, REFRESH_MS);
    if (again) { again = false; refresh(); }
  }
}
let searchTimer;
$('search').addEventListener('input', () => { clearTimeout(searchTimer); searchTimer = setTimeout(refresh, 250); });

// ---- live events: SSE read with fetch (so the Authorization header goes along) ----
const MAX_EVENTS = 200;
let paused = false;
$('pause').addEventListener('click', () => { paused = !paused; $('pause').textContent = paused ? 'Resume' : 'Pause'; });
$('clear').addEventListener('click', () => $('events').replaceChildren());
const REFRESHING = new Set(['dynamic_lb.config_updated', 'dynamic_lb.config_deleted', 'dynamic_lb.datasource_health_changed', 'dynamic_lb.upstream_health_changed']);
let eventRefresh;
function onEvent(name, data) {
  if (REFRESHING.has(name)) { clearTimeout(eventRefresh); eventRefresh = setTimeout(refresh, 150); }
  if (paused) return;
  let payload;
  try { payload = JSON.parse(data); } catch { payload = data; }
  const time = payload && payload.timestamp ? new Date(payload.timestamp).toLocaleTimeString() : '';
  if (payload && typeof payload === 'object') delete payload.timestamp;
  const list = $('events');
  list.prepend(h('li', { 'data-event': name }, time + ' ' + name.replace('dynamic_lb.', '') + ' ' + JSON.stringify(payload)));
  while (list.childElementCount > MAX_EVENTS) list.lastElementChild.remove();
}
async function stream() {
  for (;;) {
    try {
      const res = await fetch('events', { headers: { ...auth, accept: 'text/event-stream' }, cache: 'no-store' });
      if (!res.ok || !res.body) throw new Error('events: HTTP ' + res.status);
      $('conn').textContent = 'events: live';
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\\n\\n')) !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = 'message', data = '';
          for (const line of block.split('\\n')) {
            if (line.startsWith('event: ')) name = line.slice(7);
            else if (line.startsWith('data: ')) data += (data ? '\\n' : '') + line.slice(6);
          }
          if (data) onEvent(name, data);
        }
      }
      $('conn').textContent = 'events: reconnecting…';
    } catch (err) {
      $('conn').textContent = 'events: ' + err.message + '; retrying';
    }
    await new Promise((r) => setTimeout(r, 3000));
  }
}
refresh();
stream();
`;
