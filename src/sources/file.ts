import { watch as fsWatch, type FSWatcher } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { RouteParseError } from '../errors.ts';
import { parseYamlLinear } from '../route/yaml.ts';
import type { DriverFactory } from './registry.ts';
import type { Snapshot, StoreDriver, StoredValue, WatchContext } from './source.ts';

/**
 * Route configs in files — the embedded default.
 *  - Directory: one file per key, directly inside (`tenant-a.yaml` ⇒ key `tenant-a`), hidden files skipped,
 *    each file auto-detected (bare host:port, JSON or YAML).
 *  - Single file: a JSON or YAML map `{ key: config }` whose values are strings or objects.
 * Changes are picked up by watching the directory (the file's directory in single-file mode) — which also
 * catches editors' atomic-rename saves and Kubernetes' `..data` symlink swap of mounted ConfigMaps —
 * debounced, then the whole path is re-read and the runner applies only what changed. A bad file keeps its
 * last good route; a broken single file keeps all of them.
 */
export interface FileOptions {
  /** File or directory. Required; must exist at start. */
  path: string;
  /** `auto` (default) detects per file; `json` / `yaml` force the single-file map format. */
  format: 'auto' | 'json' | 'yaml';
  /** Watch for changes (default true). */
  watch: boolean;
  /** Also re-read every interval (for filesystems without change events); 0 = only on events. Default 0. */
  pollIntervalMs: number;
  /** Quiet time after the last file event before reloading. Default 100ms. */
  debounceMs: number;
}

export class FileDriver implements StoreDriver {
  private readonly path: string;
  readonly watch: StoreDriver['watch'];
  readonly pollIntervalMs: number | undefined;
  constructor(private readonly o: FileOptions) {
    this.path = resolve(o.path);
    // watching: events (plus optional periodic re-reads inside the watch); not watching: runner polls, if asked
    this.watch = o.watch ? (ctx) => this.watchFiles(ctx) : undefined;
    this.pollIntervalMs = o.watch ? undefined : o.pollIntervalMs || undefined;
  }

  async list(): Promise<Snapshot> {
    const info = await stat(this.path);
    return info.isDirectory() ? this.listDirectory() : this.listFile();
  }

  async get(key: string): Promise<StoredValue | null> {
    if ((await stat(this.path)).isDirectory()) {
      // only the file(s) named like the key: a cache miss must not re-read the whole directory
      for (const name of (await readdir(this.path)).sort()) {
        if (name.startsWith('.')) continue;
        const ext = extname(name);
        if ((ext ? name.slice(0, -ext.length) : name) !== key) continue;
        const file = join(this.path, name);
        if ((await stat(file)).isFile()) return readFile(file, 'utf8');
      }
      return null;
    }
    const snapshot = await this.listFile();
    if (snapshot.invalid) throw snapshot.invalid;
    for (const [k, v] of snapshot.entries) if (k === key) return v;
    return null;
  }

  private async listDirectory(): Promise<Snapshot> {
    const entries: Array<[string, string]> = [];
    for (const name of (await readdir(this.path)).sort()) {
      if (name.startsWith('.')) continue; // hidden files, and the ..data / ..2024_… dirs of a mounted ConfigMap
      const file = join(this.path, name);
      let info;
      try {
        info = await stat(file); // follows symlinks: mounted ConfigMap keys are links into ..data
      } catch {
        continue; // vanished between readdir and stat (a save in progress); the next event reloads
      }
      if (!info.isFile()) continue;
      const ext = extname(name);
      const key = ext ? name.slice(0, -ext.length) : name;
      entries.push([key, await readFile(file, 'utf8')]);
    }
    return { entries };
  }

  private async listFile(): Promise<Snapshot> {
    const text = await readFile(this.path, 'utf8');
    const where = basename(this.path);
    let doc: unknown;
    try {
      const format = this.o.format !== 'auto' ? this.o.format : /^\s*\{/.test(text) ? 'json' : 'yaml';
      doc = format === 'json' ? JSON.parse(text) : parseYamlLinear(text);
    } catch (err) {
      return { entries: [], invalid: new RouteParseError(where, `invalid ${this.o.format === 'json' ? 'JSON' : 'JSON/YAML'}: ${(err as Error).message.split('\n')[0]}`) };
    }
    if (doc === null || doc === undefined) return { entries: [] };
    if (typeof doc !== 'object' || Array.isArray(doc)) {
      return { entries: [], invalid: new RouteParseError(where, 'must be a map of routing key → route config') };
    }
    const entries: Array<[string, string]> = [];
    for (const [key, value] of Object.entries(doc as Record<string, unknown>)) {
      if (value === null || value === undefined) continue;
      entries.push([key, typeof value === 'string' ? value : JSON.stringify(value)]);
    }
    return { entries };
  }

  private async watchFiles(ctx: WatchContext): Promise<void> {
    let fail!: (err: unknown) => void;
    // listen for the abort before the first await: a stop that lands while we start must still end us
    const ended = new Promise<void>((resolve, reject) => {
      fail = reject;
      if (ctx.signal.aborted) resolve();
      else ctx.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    const isDir = (await stat(this.path)).isDirectory();
    if (ctx.signal.aborted) return;
    const target = isDir ? this.path : dirname(this.path);
    const file = isDir ? undefined : basename(this.path);
    let timer: NodeJS.Timeout | undefined;
    let reloading = Promise.resolve();
    const reload = (): void => {
      reloading = reloading.then(async () => {
        if (ctx.signal.aborted) return;
        ctx.onSnapshot(await this.list());
      });
      reloading.catch(fail);
    };
    const schedule = (): void => {
      clearTimeout(timer);
      timer = setTimeout(reload, this.o.debounceMs);
    };
    let watcher: FSWatcher | undefined;
    let poller: NodeJS.Timeout | undefined;
    try {
      watcher = fsWatch(target, { persistent: false }, (_event, name) => {
        // single-file mode: our file, or a ..data swap / temp file renamed over it
        if (file === undefined || name === null || name === file || name.startsWith('.') || name.startsWith('..')) schedule();
      });
      watcher.on('error', fail);
      if (this.o.pollIntervalMs > 0) poller = setInterval(reload, this.o.pollIntervalMs);
      // the listing may have changed between list() and the watcher starting
      ctx.onSnapshot(await this.list());
      ctx.onReady();
      await ended;
    } finally {
      clearTimeout(timer);
      clearInterval(poller);
      watcher?.close();
    }
  }

  async close(): Promise<void> {}
}

export const factory: DriverFactory = async ({ options }) => {
  const path = options.required('path');
  const o: FileOptions = {
    path,
    format: options.oneOf('format', ['auto', 'json', 'yaml'] as const, 'auto'),
    watch: options.bool('watch', true),
    pollIntervalMs: options.duration('poll_interval', 0),
    debounceMs: options.duration('debounce', 100),
  };
  try {
    await stat(resolve(path));
  } catch {
    options.fail('path', `${resolve(path)} does not exist`);
  }
  return { driver: new FileDriver(o), runtime: { initialLoadTimeoutMs: options.duration('initial_load_timeout', 30_000), backoffInitialMs: 200, backoffMaxMs: 5_000 } };
};
