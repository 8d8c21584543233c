import { readFile } from 'node:fs/promises';
import { Command, CommanderError } from 'commander';
import { DynamicLbError } from '../errors.ts';

/**
 * `dynamic-lb routes list|get|set|delete` — the admin write API (docs/admin-write.md) of a running sidecar:
 *  - `--admin URL` (default `$DYNAMIC_LB_ADMIN`, else http://127.0.0.1:2021), `--token` (default
 *    `$DYNAMIC_LB_ADMIN_TOKEN`);
 *  - `list` prints `key source upstreams` per cached route (`--json`: the API's answer);
 *  - `get POLICY KEY` prints the stored text (the revision on stderr; `--json`: text, parsed form, revision);
 *  - `set POLICY KEY [FILE]` writes FILE (or stdin, or `-`); an invalid route prints one `key:line: field: problem`
 *    line per error, as `validate` does, and exits 1 with nothing written;
 *  - `delete POLICY KEY`; `set` and `delete` take `--if-match REVISION` (412 → exit 1, the current revision shown).
 * Exit codes: 0 done, 1 refused (invalid, conflict, not found, not writable, unauthorized), 2 usage.
 */
export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:2021';

interface Connection {
  admin?: string;
  token?: string;
}

/** A refusal by the sidecar: printed as `dynamic-lb: message`, exit 1. */
export class AdminRefused extends DynamicLbError {
  constructor(message: string) {
    super('DLB_USAGE', message);
  }
}

export function routesCommand(out: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream } = process): Command {
  const cmd = new Command('routes').description(
    "read and write routes through a running sidecar's admin API (needs admin.token for writes)",
  );
  const connection = (c: Command): Command =>
    c
      .option('--admin <url>', `admin API base URL (default $DYNAMIC_LB_ADMIN, else ${DEFAULT_ADMIN_URL})`)
      .option('--token <token>', 'admin.token (default $DYNAMIC_LB_ADMIN_TOKEN)');

  connection(cmd.command('list'))
    .description('the routes the sidecar has loaded')
    .option('--json', 'print the JSON answer')
    .action(async (o: Connection & { json?: boolean }) => {
      const body = await call<{ routes: Array<{ key: string; source: string; upstreams: string[] }> }>(o, 'GET', '/dynamic-lb/routes');
      if (o.json) {
        out.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
        return;
      }
      for (const r of body.routes) out.stdout.write(`${r.key}\t${r.source}\t${r.upstreams.join(',')}\n`);
    });

  connection(cmd.command('get'))
    .description('one route as stored: its text (revision on stderr)')
    .argument('<policy>')
    .argument('<key>')
    .option('--json', 'print text, parsed form and revision as JSON')
    .action(async (policy: string, key: string, o: Connection & { json?: boolean }) => {
      const body = await call<{ text: string; revision: string }>(o, 'GET', routePath(policy, key));
      if (o.json) {
        out.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
        return;
      }
      out.stdout.write(body.text.endsWith('\n') ? body.text : `${body.text}\n`);
      out.stderr.write(`revision ${body.revision}\n`);
    });

  connection(cmd.command('set'))
    .description('write a route from FILE or stdin; validated first, in effect when the command returns')
    .argument('<policy>')
    .argument('<key>')
    .argument('[file]', 'route file; stdin when absent or -')
    .option('--if-match <revision>', 'write only while the stored revision is this one (0: only when the key does not exist)')
    .action(async (policy: string, key: string, file: string | undefined, o: Connection & { ifMatch?: string }) => {
      const text = file === undefined || file === '-' ? await readStdin() : await readFile(file, 'utf8');
      const body = await call<WriteAnswer>(
        o,
        'PUT',
        routePath(policy, key),
        text,
        o.ifMatch,
        file !== undefined && file !== '-' ? file : undefined,
      );
      out.stderr.write(written(policy, key, body));
    });

  connection(cmd.command('delete'))
    .description('delete a route; in effect when the command returns')
    .argument('<policy>')
    .argument('<key>')
    .option('--if-match <revision>', 'delete only while the stored revision is this one')
    .action(async (policy: string, key: string, o: Connection & { ifMatch?: string }) => {
      const body = await call<WriteAnswer>(o, 'DELETE', routePath(policy, key), undefined, o.ifMatch);
      out.stderr.write(written(policy, key, body));
    });

  /** One admin call; a refusal throws AdminRefused (validation problems are printed first, as `validate` prints them). */
  async function call<T>(o: Connection, method: string, path: string, body?: string, ifMatch?: string, file?: string): Promise<T> {
    const base = (o.admin ?? process.env.DYNAMIC_LB_ADMIN ?? DEFAULT_ADMIN_URL).replace(/\/+$/, '');
    if (!/^https?:\/\//.test(base))
      throw new CommanderError(2, 'usage', `--admin expects http(s)://host:port, got ${JSON.stringify(base)}`);
    const token = o.token ?? process.env.DYNAMIC_LB_ADMIN_TOKEN;
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (ifMatch !== undefined) headers['if-match'] = `"${ifMatch}"`;
    let res: Response;
    try {
      res = await fetch(base + path, { method, headers, ...(body !== undefined ? { body } : {}), signal: AbortSignal.timeout(30_000) });
    } catch (err) {
      throw new AdminRefused(
        `${base}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`,
      );
    }
    const text = await res.text();
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new AdminRefused(`${method} ${path}: HTTP ${res.status}: not a dynamic-lb admin API answer`);
    }
    if (res.ok) return json as T;
    if (res.status === 400 && Array.isArray(json.problems)) {
      // `key:line: problem` → `file:line: problem` when the route came from a file, as `validate FILE` prints it
      const problems = json.problems as string[];
      for (const p of problems) out.stdout.write(`${file !== undefined ? `${file}${p.slice(p.indexOf(':'))}` : p}\n`);
      throw new AdminRefused(`${problems.length} problem${problems.length === 1 ? '' : 's'}: nothing written`);
    }
    const revision = typeof json.revision === 'string' ? ` (stored revision ${json.revision})` : '';
    throw new AdminRefused(
      `${method} ${path}: ${res.status}: ${typeof json.error === 'string' ? json.error : text}${res.status === 412 ? revision : ''}`,
    );
  }

  return cmd;
}

interface WriteAnswer {
  revision: string;
  in_effect: boolean;
  waited_ms?: number;
  note?: string;
}

function written(policy: string, key: string, a: WriteAnswer): string {
  return `${policy}/${key}: revision ${a.revision}, ${a.in_effect ? `in effect (after ${a.waited_ms ?? 0}ms)` : (a.note ?? 'not yet in effect')}\n`;
}

function routePath(policy: string, key: string): string {
  return `/dynamic-lb/routes/${encodeURIComponent(policy)}/${encodeURIComponent(key)}`;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
