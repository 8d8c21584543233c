import { close as fsClose, open as fsOpen, read as fsRead, watch as fsWatch, type FSWatcher } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { readFile, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { RouteParseError } from '../errors.ts';
import { parseYamlLinear } from '../route/yaml.ts';
import type { DriverFactory } from './driver.ts';
import { ContentRevisionStore, checkRevision } from './content-writes.ts';
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
 *
 * Size: a directory is read READ_CONCURRENCY files at a time, and a listing stops between files once its
 * signal aborts (a listing cut by `initial_load_timeout`, a stop), so abandoned listings never pile up. A
 * cache miss (more files than `max_cache_size`) reads only the file(s) that can hold that key — `<key>` with
 * each extension the last listing saw (and COMMON_EXTENSIONS), and `<key>` bare — never the whole directory.
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

/** Files read at the same time while listing a directory. */
const READ_CONCURRENCY = 32;
/** Extensions a key's file is looked for under even before a listing has seen one. */
const COMMON_EXTENSIONS = ['.yaml', '.yml', '.json'];

export class FileDriver extends ContentRevisionStore implements StoreDriver {
  private readonly path: string;
  /** Extensions (with the dot) of the files seen by the last directory listing, plus COMMON_EXTENSIONS. */
  private extensions = new Set(COMMON_EXTENSIONS);
  readonly watch: StoreDriver['watch'];
  readonly pollIntervalMs: number | undefined;
  constructor(private readonly o: FileOptions) {
    super();
    this.path = resolve(o.path);
    // watching: events (plus optional periodic re-reads inside the watch); not watching: runner polls, if asked
    this.watch = o.watch ? (ctx) => this.watchFiles(ctx) : undefined;
    this.pollIntervalMs = o.watch ? undefined : o.pollIntervalMs || undefined;
  }

  async list(signal?: AbortSignal): Promise<Snapshot> {
    const info = await stat(this.path);
    return info.isDirectory() ? this.listDirectory(signal) : this.listFile();
  }

  /** The path is there (the runner's reachability probe while a failed listing backs off). */
  async probe(): Promise<void> {
    await stat(this.path);
  }

  async get(key: string, signal?: AbortSignal): Promise<StoredValue | null> {
    if ((await stat(this.path)).isDirectory()) return this.readKey(key, signal);
    const snapshot = await this.listFile();
    if (snapshot.invalid) throw snapshot.invalid;
    for (const [k, v] of snapshot.entries) if (k === key) return v;
    return null;
  }

  /**
   * One key of a directory, without reading the directory: the files that can be named like the key are tried
   * (a handful), in reverse name order, so the one a listing would apply (the last in name order) is read.
   */
  private async readKey(key: string, signal: AbortSignal | undefined): Promise<string | null> {
    // a key is a file name minus its extension: never a path, never hidden
    if (!isFileKey(key)) return null;
    return (await this.locateKey(key, signal))?.text ?? null;
  }

  /** The file that holds `key` in the directory (the one a listing applies) and its text. */
  private async locateKey(key: string, signal: AbortSignal | undefined): Promise<{ path: string; text: string } | undefined> {
    const names = [...this.extensions].map((ext) => key + ext);
    if (extname(key) === '') names.push(key);
    for (const name of names.sort().reverse()) {
      if (extname(name) !== name.slice(key.length)) continue; // a listing would derive another key from this name
      signal?.throwIfAborted();
      const path = join(this.path, name);
      try {
        return { path, text: await readText(path) };
      } catch (err) {
        if (MISSING.has((err as NodeJS.ErrnoException).code ?? '')) continue; // absent, or a directory named like it
        throw err;
      }
    }
    return undefined;
  }

  /**
   * Every file directly in the directory, READ_CONCURRENCY at a time, in name order (of two files with the same
   * key, the later name wins, as before). Stops between files when `signal` aborts.
   */
  private async listDirectory(signal: AbortSignal | undefined): Promise<Snapshot> {
    // hidden files, and the ..data / ..2024_… dirs of a mounted ConfigMap, are skipped
    const dirents = (await readdir(this.path, { withFileTypes: true })).filter(
      (d) => !d.name.startsWith('.') && (d.isFile() || d.isSymbolicLink()),
    );
    const names = dirents.map((d) => d.name).sort();
    const links = new Set(dirents.filter((d) => d.isSymbolicLink()).map((d) => d.name));
    const texts: Array<string | undefined> = new Array<string | undefined>(names.length);
    let next = 0;
    let failed = false;
    const worker = async (): Promise<void> => {
      const buffer = Buffer.allocUnsafe(SMALL_FILE);
      while (next < names.length && !failed) {
        signal?.throwIfAborted();
        const i = next++;
        const name = names[i] as string;
        const file = join(this.path, name);
        try {
          // a symlink (mounted ConfigMap keys are links into ..data) counts when it leads to a file
          if (!links.has(name) || (await stat(file)).isFile()) texts[i] = await readText(file, buffer);
        } catch (err) {
          // vanished between readdir and read (a save in progress): the next event reloads
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
          failed = true;
          throw err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, names.length) }, worker));
    const entries: Array<[string, string]> = [];
    const extensions = new Set(COMMON_EXTENSIONS);
    names.forEach((name, i) => {
      const text = texts[i];
      if (text === undefined) return;
      const ext = extname(name);
      if (ext !== '') extensions.add(ext);
      entries.push([ext ? name.slice(0, -ext.length) : name, text]);
    });
    this.extensions = extensions;
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
      return {
        entries: [],
        invalid: new RouteParseError(
          where,
          `invalid ${this.o.format === 'json' ? 'JSON' : 'JSON/YAML'}: ${(err as Error).message.split('\n')[0]}`,
        ),
      };
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
        ctx.onSnapshot(await this.list(ctx.signal));
      });
      reloading.catch((err: unknown) => {
        if (!ctx.signal.aborted) fail(err);
      });
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
      ctx.onSnapshot(await this.list(ctx.signal));
      ctx.onReady();
      await ended;
    } finally {
      clearTimeout(timer);
      clearInterval(poller);
      watcher?.close();
    }
  }

  async close(): Promise<void> {}

  // ---- writes (admin write API): directory mode only; revision = SHA-1 of the file's text ------------------

  /** Writes of this driver run one at a time, so an If-Match check and its rename cannot interleave. */
  private writing: Promise<unknown> = Promise.resolve();

  protected async readText(key: string, signal: AbortSignal): Promise<string | null> {
    return (await this.keyFile(key, signal))?.text ?? null;
  }

  protected put(key: string, text: string | null, ifRevision: string | undefined, signal: AbortSignal): Promise<boolean> {
    return this.serialWrite(async () => {
      const current = await this.keyFile(key, signal);
      checkRevision(key, current?.text, ifRevision);
      if (text === null) {
        if (current === undefined) return false;
        await unlink(current.path);
        // another file may still define the key (`<key>.yaml` beside `<key>.json`): remove those too
        for (let more = await this.keyFile(key, signal); more !== undefined; more = await this.keyFile(key, signal))
          await unlink(more.path);
        return true;
      }
      // the file a listing reads for the key, else `<key>.json` for JSON and `<key>.yaml` for the rest
      const target = current?.path ?? join(this.path, `${key}${/^\s*[{[]/.test(text) ? '.json' : '.yaml'}`);
      // a hidden temporary name (listings skip it), renamed over the target: readers see old or new, never half
      const temp = join(this.path, `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
      await writeFile(temp, text, { encoding: 'utf8', mode: 0o644, signal });
      try {
        await rename(temp, target);
      } catch (err) {
        await unlink(temp).catch(() => undefined);
        throw err;
      }
      return true;
    });
  }

  private serialWrite<T>(work: () => Promise<T>): Promise<T> {
    const result = this.writing.then(work, work);
    this.writing = result.catch(() => undefined);
    return result;
  }

  /** The file that holds `key` (the one a listing applies) and its text; throws when the path is a single file. */
  private async keyFile(key: string, signal: AbortSignal): Promise<{ path: string; text: string } | undefined> {
    if (!(await stat(this.path)).isDirectory())
      throw new Error(`${this.path} is a single file: writes need a directory source (one file per key)`);
    if (!isFileKey(key)) throw new Error(`key ${JSON.stringify(key)}: not a file name (no '/', '\\', NUL or leading '.')`);
    return this.locateKey(key, signal);
  }
}

/** A key is a file name minus its extension: never a path, never hidden. */
function isFileKey(key: string): boolean {
  return key !== '' && !key.startsWith('.') && !/[/\\\0]/.test(key);
}

/** Errors of reading `<dir>/<name>` that mean "no such route file". */
const MISSING = new Set(['ENOENT', 'ENOTDIR', 'EISDIR']);
/** Read size of readText: a route file is almost always smaller, so it takes one read. */
const SMALL_FILE = 64 * 1024;

/**
 * A file's text in three thread-pool calls (open, one read, close) where readFile takes five — the difference
 * between 4 and 10 s for 100,000 files. A file that fills the first read is read again whole. `buffer` (at least
 * SMALL_FILE bytes) may be reused once the promise settles: the text is a copy.
 */
function readText(file: string, buffer = Buffer.allocUnsafe(SMALL_FILE)): Promise<string> {
  return new Promise((resolve, reject) => {
    fsOpen(file, 'r', (err, fd) => {
      if (err) return reject(err);
      fsRead(fd, buffer, 0, SMALL_FILE, 0, (readErr, bytes) => {
        fsClose(fd, () => undefined);
        if (readErr) return reject(readErr);
        if (bytes < SMALL_FILE) return resolve(buffer.toString('utf8', 0, bytes));
        readFile(file, 'utf8').then(resolve, reject);
      });
    });
  });
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
  // no connection to wait for: the timeout bounds the start and every full listing (a large directory)
  return { driver: new FileDriver(o), runtime: { listWithinInitialLoad: true, backoffInitialMs: 200, backoffMaxMs: 5_000 } };
};
