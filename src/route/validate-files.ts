import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { RouteParseError } from '../errors.ts';
import { lineOfField } from './locate.ts';
import { parseRouteConfig } from './parse.ts';
import { parseYamlLinear } from './yaml.ts';

/**
 * `dynamic-lb validate ROUTE_FILE_OR_DIR…`: every route file checked as the file source would read it —
 * a directory holds one route per file; a single file is either one route or a map of key → route.
 * Returns one `file:line: problem` line per error.
 */
export async function validateRoutePaths(paths: readonly string[]): Promise<{ checked: number; problems: string[] }> {
  const problems: string[] = [];
  let checked = 0;
  for (const path of paths) {
    let info;
    try {
      info = await stat(path);
    } catch {
      problems.push(`${path}:1: no such file or directory`);
      continue;
    }
    if (info.isDirectory()) {
      for (const name of (await readdir(path)).sort()) {
        if (name.startsWith('.')) continue;
        const file = join(path, name);
        if (!(await stat(file)).isFile()) continue;
        checked++;
        problems.push(...checkRoute(file, await readFile(file, 'utf8')));
      }
    } else {
      const text = await readFile(path, 'utf8');
      const routes = asRouteMap(text);
      if (routes === undefined) {
        checked++;
        problems.push(...checkRoute(path, text));
      } else {
        for (const [key, value] of routes) {
          checked++;
          problems.push(...checkRoute(path, value, key, text));
        }
      }
    }
  }
  return { checked, problems };
}

function checkRoute(file: string, text: string, key?: string, wholeText?: string): string[] {
  try {
    parseRouteConfig(text);
    return [];
  } catch (err) {
    if (!(err instanceof RouteParseError)) return [`${file}:1: ${(err as Error).message}`];
    const field = key !== undefined ? `${JSON.stringify(key)}${err.field ? `.${err.field}` : ''}` : err.field;
    const line =
      key !== undefined
        ? lineOfField(
            wholeText ?? text,
            key.includes('.') ? `["${key}"]${err.field ? `.${err.field}` : ''}` : `${key}${err.field ? `.${err.field}` : ''}`,
          )
        : lineOfField(text, err.field);
    return [`${file}:${line}: ${field ? `${field}: ` : ''}${err.problem}`];
  }
}

/** A map of routing key → route (the single-file format), or undefined when the document is one route. */
function asRouteMap(text: string): Array<[string, string]> | undefined {
  let doc: unknown;
  try {
    doc = parseYamlLinear(text);
  } catch {
    return undefined;
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return undefined;
  const obj = doc as Record<string, unknown>;
  if ('upstream' in obj || 'rules' in obj) return undefined;
  return Object.entries(obj).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]);
}
