#!/usr/bin/env node
// Follows the sidecar's event stream and prints one JSON line per event: {"id", "event", ...payload}.
// Plain Node ≥ 20, no dependencies:
//   node examples/events/watch-events.mjs [events]   e.g. config_updated,route_missed (default: all)
// Environment: ADMIN (default http://127.0.0.1:2021), DYNAMIC_LB_ADMIN_TOKEN (when the admin API has a token),
// MAX_EVENTS (exit after that many events; default: follow until Ctrl-C).
const admin = process.env.ADMIN ?? 'http://127.0.0.1:2021';
const filter = process.argv[2];
const max = Number(process.env.MAX_EVENTS ?? Infinity);
const token = process.env.DYNAMIC_LB_ADMIN_TOKEN;

const res = await fetch(`${admin}/dynamic-lb/events${filter ? `?events=${encodeURIComponent(filter)}` : ''}`, {
  headers: { accept: 'text/event-stream', ...(token ? { authorization: `Bearer ${token}` } : {}) },
});
if (!res.ok || res.body === null) {
  console.error(`GET /dynamic-lb/events: HTTP ${res.status} ${await res.text()}`);
  process.exit(1);
}
console.error('connected; waiting for events');

// SSE framing: events are separated by a blank line; lines are "field: value"; lines starting with ":" are comments
let buffer = '';
let seen = 0;
const decoder = new TextDecoder();
for await (const chunk of res.body) {
  buffer += decoder.decode(chunk, { stream: true });
  let end;
  while ((end = buffer.indexOf('\n\n')) >= 0) {
    const block = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    const fields = {};
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const name = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      fields[name] = name in fields ? `${fields[name]}\n${value}` : value;
    }
    if (fields.data === undefined) continue;
    console.log(JSON.stringify({ id: fields.id, event: fields.event, ...JSON.parse(fields.data) }));
    if (++seen >= max) process.exit(0);
  }
}
