import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Where the package is installed: the nearest directory above this module that holds a package.json. The
 * same answer from the sources (src/package.ts, run by tests and tsx) and from the build
 * (dist/src/package.js, run by the `dynamic-lb` bin), so the bundled files (examples/, caddy-config/) are found
 * either way.
 */
export const PACKAGE_ROOT = findRoot(dirname(fileURLToPath(import.meta.url)));

function findRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

/** The `version` of the installed package (what `dynamic-lb --version` prints). */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version?: unknown };
  if (typeof pkg.version !== 'string') throw new Error(`${join(PACKAGE_ROOT, 'package.json')}: version: missing`);
  return pkg.version;
}
