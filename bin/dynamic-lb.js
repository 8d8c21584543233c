#!/usr/bin/env node
// Entry point for the installed `dynamic-lb` command: the compiled CLI in dist/. The package ships dist/
// prebuilt; in a clone, `npm ci` builds it (the `prepare` script), or `npm run build`.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/cmd/dynamic-lb.js', import.meta.url);
if (existsSync(cli)) {
  await import(cli.href);
} else {
  process.stderr.write('dynamic-lb: dist/ is missing (a clone that was not built): run `npm run build` (or `npm ci`) first\n');
  process.exitCode = 1;
}
