#!/usr/bin/env node
// A sample backend: answers "Hello from <port>" and GET /health 200. Plain Node ≥ 20, no dependencies:
//   node examples/health-checks/backend.mjs 9001        (0: any free port; the port is printed)
// Stop it (Ctrl-C / kill) and the sidecar's probes take it out of rotation within interval + timeout.
import { createServer } from 'node:http';

const server = createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(200).end('ok\n');
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain' }).end(`Hello from ${server.address().port}\n`);
});
server.listen(Number(process.argv[2] ?? 9001), '127.0.0.1', () => console.error(`backend on 127.0.0.1:${server.address().port}`));
