// Shared by the data-source examples' seed scripts: the route files of a folder as [key, value] pairs
// (key = file name without .json/.yaml/.yml; hidden files skipped) — the same keys the file source would read.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/** `dir`, or the folder in $ROUTES_DIR (seed another set of routes with the same script). */
export function readRoutes(dir) {
  dir = process.env.ROUTES_DIR ?? dir;
  return readdirSync(dir)
    .filter((name) => !name.startsWith('.'))
    .sort()
    .map((name) => [name.replace(/\.(json|ya?ml)$/, ''), readFileSync(join(dir, name), 'utf8')]);
}
