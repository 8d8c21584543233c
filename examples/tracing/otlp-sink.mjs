#!/usr/bin/env node
// A tiny OTLP/HTTP trace receiver for trying the sidecar's tracing without a collector: it accepts
// POST /v1/traces in the JSON encoding (OTEL_EXPORTER_OTLP_PROTOCOL=http/json) and prints one line per span:
//   <trace id> <span id> <parent span id or -> <span name> {attributes}
// Plain Node ≥ 20, no dependencies:  node examples/tracing/otlp-sink.mjs   (PORT, default 4318; 0: any free port)
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 4318);

/** An OTLP AnyValue as a plain value. */
function value(v) {
  if (v === undefined || v === null) return null;
  if ('stringValue' in v) return v.stringValue;
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return v.doubleValue;
  if ('boolValue' in v) return v.boolValue;
  return JSON.stringify(v);
}

const server = createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/v1/traces') {
    res.writeHead(404).end();
    return;
  }
  if (!String(req.headers['content-type']).startsWith('application/json')) {
    console.error(`got ${req.headers['content-type']}: set OTEL_EXPORTER_OTLP_PROTOCOL=http/json on the sidecar`);
    res.writeHead(415).end();
    return;
  }
  let body = '';
  req.on('data', (d) => (body += d));
  req.on('end', () => {
    const payload = JSON.parse(body);
    for (const rs of payload.resourceSpans ?? []) {
      for (const ss of rs.scopeSpans ?? []) {
        for (const span of ss.spans ?? []) {
          const attributes = Object.fromEntries((span.attributes ?? []).map((a) => [a.key, value(a.value)]));
          console.log(`${span.traceId} ${span.spanId} ${span.parentSpanId || '-'} ${span.name} ${JSON.stringify(attributes)}`);
        }
      }
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
});
server.listen(port, '127.0.0.1', () => console.error(`OTLP/HTTP (JSON) trace sink on http://127.0.0.1:${server.address().port}/v1/traces`));
