import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { buildService } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { OptionReader } from '../../src/config/options.ts';
import { ConfigError } from '../../src/errors.ts';
import { Metrics, ParseErrorLog } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { algorithms } from '../../src/select/index.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { FileDriver } from '../../src/sources/file.ts';
import { SourceNamer, createSource } from '../../src/sources/registry.ts';
import { isMiss, type RouteLookup, type RouteSource } from '../../src/sources/source.ts';
import { eventually } from '../support/service.ts';

const cleanup: Array<() => Promise<void>> = [];

/** stop(), failing (instead of hanging the whole file) when it does not return within `ms`. */
async function stopWithin(source: RouteSource, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`stop() did not return within ${ms} ms`)), ms);
  });
  try {
    await Promise.race([source.stop(), hung]);
  } finally {
    clearTimeout(timer);
  }
}
afterEach(async () => {
  // every step runs (a stop that fails must not leave the temp dir behind); the first failure is reported
  const failures: unknown[] = [];
  for (const c of cleanup.splice(0).reverse()) await c().catch((err: unknown) => failures.push(err));
  if (failures.length > 0) throw failures[0];
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cdr-file-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function fileSource(
  options: Record<string, unknown>,
): Promise<{ source: RouteSource; parseErrors: ParseErrorLog; parseErrorCount: () => Promise<number> }> {
  const metrics = new Metrics();
  const parseErrors = new ParseErrorLog();
  const source = await createSource(
    new OptionReader({ source: 'file', ...options }, 'policies.default.data_source'),
    { metrics, parseErrors, compile: { algorithms, state: new UpstreamStateTable() }, logger: silentLogger },
    new SourceNamer(),
  );
  cleanup.push(() => stopWithin(source, 3000));
  await source.start();
  const parseErrorCount = async (): Promise<number> => {
    const m = await metrics.registry.getSingleMetric('caddy_dynamic_lb_route_config_parse_errors_total')?.get();
    return m?.values.find((v) => v.labels.source_type === 'file')?.value ?? 0;
  };
  return { source, parseErrors, parseErrorCount };
}

/** The upstream a key resolves to (simple upstream or first rule's first upstream), or the miss reason. */
async function resolve(source: RouteSource, key: string): Promise<string> {
  const found: RouteLookup = source.peek(key) ?? (await source.load(key));
  if (isMiss(found)) return `miss:${found.miss}`;
  return found.config.upstream ?? found.config.rules[0]?.upstreams[0]?.address ?? '?';
}

/**
 * Waits until the source's file watch is live: touches a hidden file next to the routes (never a key) and
 * waits for the reload it triggers (last_sync moves). Tests that edit files right after start() use it, so
 * they test the edit, not the start-up race reported by the "stop() right after start()" test.
 */
async function watchEstablished(source: RouteSource, dir: string): Promise<void> {
  const before = source.health().last_sync;
  // start() can resolve before the watcher exists, and the watch's own first sync can land in the same
  // millisecond as the initial one (last_sync unchanged): touch the probe again until a reload shows up
  const deadline = Date.now() + 10_000;
  for (let n = 0; source.health().last_sync === before; n++) {
    if (Date.now() > deadline) throw new Error('timed out after 10000ms waiting for file watch live');
    await writeFile(join(dir, '.watch-probe'), String(n));
    await eventually(() => source.health().last_sync !== before, 300, 'file watch live').catch(() => undefined);
  }
}

const keysOf = (source: RouteSource): string[] => [...source.routes()].map((r) => r.key).sort();

const served = (source: RouteSource, key: string, expected: string, what: string, timeoutMs = 1000): Promise<number> =>
  eventually(async () => (await resolve(source, key)) === expected, timeoutMs, what);

// ---- directory mode -------------------------------------------------------------------------------------------------

test('directory mode: one route per file, key = file name minus its extension, any format, hidden files skipped', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'tenant-a'), '10.0.0.1:80\n');
  await writeFile(join(dir, 'tenant-b.json'), JSON.stringify({ upstream: '10.0.0.2:80' }));
  await writeFile(join(dir, 'tenant-c.yaml'), 'rules:\n  - upstreams:\n      - address: 10.0.0.3:80\n');
  await writeFile(join(dir, 'tenant.d.yml'), '"10.0.0.4:80"');
  await writeFile(join(dir, '.hidden'), '10.0.0.66:80');
  await writeFile(join(dir, '.tenant-e.yaml.swp'), '10.0.0.67:80');
  await mkdir(join(dir, 'nested'));
  await writeFile(join(dir, 'nested', 'tenant-f'), '10.0.0.68:80');
  const { source } = await fileSource({ path: dir, watch: false });
  assert.equal(source.healthy(), true);
  assert.deepEqual(keysOf(source), ['tenant-a', 'tenant-b', 'tenant-c', 'tenant.d']);
  assert.equal(await resolve(source, 'tenant-a'), '10.0.0.1:80');
  assert.equal(await resolve(source, 'tenant-b'), '10.0.0.2:80');
  assert.equal(await resolve(source, 'tenant-c'), '10.0.0.3:80');
  assert.equal(await resolve(source, 'tenant.d'), '10.0.0.4:80');
  assert.equal(await resolve(source, '.hidden'), 'miss:no_config');
  assert.equal(await resolve(source, 'nested'), 'miss:no_config');
  assert.equal(source.type, 'file');
  assert.equal(source.health().config_count, 4);
});

test('directory mode: a bad file is counted as a file parse error and does not stop the others', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'good'), '10.0.0.1:80');
  await writeFile(join(dir, 'bad.json'), '{"upstream": "10.0.0.2:80", "algorithm": "fastest"}');
  const { source, parseErrors, parseErrorCount } = await fileSource({ path: dir, watch: false });
  assert.equal(await resolve(source, 'good'), '10.0.0.1:80');
  assert.equal(await resolve(source, 'bad'), 'miss:no_config');
  assert.equal(await parseErrorCount(), 1);
  assert.equal(parseErrors.snapshot()?.file?.total, 1);
  assert.match(source.health().last_error ?? '', /route "bad": algorithm: unknown algorithm "fastest"/);
});

test('an empty file is "no config" for its key, not an error', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'empty.yaml'), '\n');
  const { source, parseErrorCount } = await fileSource({ path: dir, watch: false });
  assert.equal(await resolve(source, 'empty'), 'miss:no_config');
  assert.equal(await parseErrorCount(), 0);
});

// ---- single-file mode -------------------------------------------------------------------------------------------------

test('single file: a JSON map of key → string or object', async () => {
  const dir = await tempDir();
  const file = join(dir, 'routes.json');
  await writeFile(
    file,
    JSON.stringify(
      { 'tenant-a': '10.0.0.1:80', 'tenant-b': { rules: [{ upstreams: [{ address: '10.0.0.2:80' }] }] }, 'tenant-null': null },
      null,
      2,
    ),
  );
  const { source } = await fileSource({ path: file, watch: false });
  assert.deepEqual(keysOf(source), ['tenant-a', 'tenant-b']);
  assert.equal(await resolve(source, 'tenant-a'), '10.0.0.1:80');
  assert.equal(await resolve(source, 'tenant-b'), '10.0.0.2:80');
});

test('single file: a YAML map of key → string or object', async () => {
  const dir = await tempDir();
  const file = join(dir, 'routes.yaml');
  await writeFile(
    file,
    [
      '# all tenants',
      'tenant-a: 10.0.0.1:80',
      'tenant-b:',
      '  upstream: 10.0.0.2:80',
      '  enabled: false',
      'tenant-c:',
      '  rules:',
      '    - upstreams: [10.0.0.3:80]',
      '',
    ].join('\n'),
  );
  const { source } = await fileSource({ path: file, watch: false });
  assert.deepEqual(keysOf(source), ['tenant-a', 'tenant-b', 'tenant-c']);
  assert.equal(await resolve(source, 'tenant-a'), '10.0.0.1:80');
  const b = source.peek('tenant-b');
  assert.ok(b !== undefined && !isMiss(b) && b.enabled === false);
  assert.equal(await resolve(source, 'tenant-c'), '10.0.0.3:80');
});

const formats: ReadonlyArray<{ desc: string; format: string | undefined; text: string; loads: boolean }> = [
  {
    desc: 'auto reads a "{" document as JSON (a trailing comma is invalid JSON)',
    format: undefined,
    text: '{"t": "10.0.0.1:80",}',
    loads: false,
  },
  { desc: 'format yaml reads the same document as YAML (valid flow map)', format: 'yaml', text: '{"t": "10.0.0.1:80",}', loads: true },
  { desc: 'format json rejects a YAML map', format: 'json', text: 't: 10.0.0.1:80\n', loads: false },
  { desc: 'format json reads a JSON map', format: 'json', text: '{"t": "10.0.0.1:80"}', loads: true },
  { desc: 'auto reads a YAML map', format: 'auto', text: 't: 10.0.0.1:80\n', loads: true },
];

for (const c of formats) {
  test(`single file format: ${c.desc}`, async () => {
    const dir = await tempDir();
    const file = join(dir, 'routes.conf');
    await writeFile(file, c.text);
    const { source, parseErrorCount } = await fileSource({
      path: file,
      watch: false,
      ...(c.format !== undefined ? { format: c.format } : {}),
    });
    const answer = await resolve(source, 't');
    if (c.loads) assert.equal(answer, '10.0.0.1:80');
    else assert.match(answer, /^miss:/);
    assert.equal(await parseErrorCount(), c.loads ? 0 : 1);
  });
}

test('an unknown format is a config error naming the option', async () => {
  const dir = await tempDir();
  await assert.rejects(
    fileSource({ path: dir, format: 'toml' }),
    (err: unknown) =>
      err instanceof ConfigError && /^policies\.default\.data_source\.format: must be one of auto, json, yaml/.test(err.message),
  );
});

// ---- watching -------------------------------------------------------------------------------------------------------

test('watch: good → bad → good; the bad edit keeps the last good route and is counted; the fix is served within 1 s', async () => {
  const dir = await tempDir();
  const file = join(dir, 'tenant-x.yaml');
  await writeFile(file, 'upstream: 10.0.0.1:80\n');
  const { source, parseErrors, parseErrorCount } = await fileSource({ path: dir });
  await watchEstablished(source, dir);
  assert.equal(await resolve(source, 'tenant-x'), '10.0.0.1:80');

  await writeFile(file, 'upstream: 10.0.0.2:80\n');
  const firstEdit = await served(source, 'tenant-x', '10.0.0.2:80', 'first edit');
  assert.ok(firstEdit < 1000);

  await writeFile(file, 'upstream: http://10.0.0.3:80\n');
  await eventually(async () => (await parseErrorCount()) === 1, 1000, 'bad edit counted');
  assert.equal(await resolve(source, 'tenant-x'), '10.0.0.2:80', 'the last good route keeps serving');
  assert.equal(parseErrors.snapshot()?.file?.total, 1);
  assert.match(source.health().last_error ?? '', /tenant-x.*upstream: malformed address/);

  await writeFile(file, 'upstream: 10.0.0.4:80\n');
  const fix = await served(source, 'tenant-x', '10.0.0.4:80', 'fix served');
  assert.ok(fix < 1000, `fix served after ${fix.toFixed(0)} ms`);
});

test('watch: a bad file is counted once, not again each time another file changes', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'bad.json'), '{"upstream": "10.0.0.2:80", "algorithm": "fastest"}');
  await writeFile(join(dir, 'good'), '10.0.0.1:80');
  const { source, parseErrorCount } = await fileSource({ path: dir });
  await watchEstablished(source, dir);
  const counted = await parseErrorCount();
  assert.ok(counted >= 1);
  for (const address of ['10.0.0.3:80', '10.0.0.4:80']) {
    await writeFile(join(dir, 'good'), address);
    await served(source, 'good', address, 'unrelated edit served');
  }
  assert.equal(await parseErrorCount(), counted, 'the unchanged bad file was not counted again');
});

test('watch: a new file is served and a removed file’s key is gone', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'keep'), '10.0.0.1:80');
  await writeFile(join(dir, 'drop.json'), '"10.0.0.2:80"');
  const { source } = await fileSource({ path: dir });
  await watchEstablished(source, dir);
  await writeFile(join(dir, 'fresh.yaml'), 'upstream: 10.0.0.3:80\n');
  await served(source, 'fresh', '10.0.0.3:80', 'new file served');
  await unlink(join(dir, 'drop.json'));
  await served(source, 'drop', 'miss:no_config', 'removed key gone');
  assert.deepEqual(keysOf(source), ['fresh', 'keep']);
});

test('watch: an atomic-rename save (temp file renamed over the route) is picked up', async () => {
  const dir = await tempDir();
  const file = join(dir, 'tenant-x.json');
  await writeFile(file, JSON.stringify({ upstream: '10.0.0.1:80' }));
  const { source, parseErrorCount } = await fileSource({ path: dir });
  await watchEstablished(source, dir);
  const temp = join(dir, '.tenant-x.json.tmp');
  await writeFile(temp, JSON.stringify({ upstream: '10.0.0.2:80' }));
  await rename(temp, file);
  await served(source, 'tenant-x', '10.0.0.2:80', 'renamed-over content served');
  // and again: the watch survives the inode change
  await writeFile(temp, JSON.stringify({ upstream: '10.0.0.3:80' }));
  await rename(temp, file);
  await served(source, 'tenant-x', '10.0.0.3:80', 'second atomic save served');
  assert.equal(await parseErrorCount(), 0);
});

test('watch: a single file saved by atomic rename keeps being watched', async () => {
  const dir = await tempDir();
  const file = join(dir, 'routes.yaml');
  await writeFile(file, 't: 10.0.0.1:80\n');
  const { source } = await fileSource({ path: file });
  await watchEstablished(source, dir);
  for (const [i, address] of ['10.0.0.2:80', '10.0.0.3:80'].entries()) {
    const temp = join(dir, `routes.yaml.${i}.tmp`);
    await writeFile(temp, `t: ${address}\n`);
    await rename(temp, file);
    await served(source, 't', address, `atomic save ${i + 1}`);
  }
});

test('watch: a Kubernetes ConfigMap ..data symlink swap serves the new content', async () => {
  const dir = await tempDir();
  await mkdir(join(dir, '..2026_a'));
  await writeFile(join(dir, '..2026_a', 'tenant-x'), '10.0.0.1:80');
  await writeFile(join(dir, '..2026_a', 'tenant-y.yaml'), 'upstream: 10.0.0.5:80\n');
  await symlink('..2026_a', join(dir, '..data'));
  await symlink('..data/tenant-x', join(dir, 'tenant-x'));
  await symlink('..data/tenant-y.yaml', join(dir, 'tenant-y.yaml'));
  const { source } = await fileSource({ path: dir });
  await watchEstablished(source, dir);
  assert.deepEqual(keysOf(source), ['tenant-x', 'tenant-y']);
  assert.equal(await resolve(source, 'tenant-x'), '10.0.0.1:80');

  await mkdir(join(dir, '..2026_b'));
  await writeFile(join(dir, '..2026_b', 'tenant-x'), '10.0.0.2:80');
  await writeFile(join(dir, '..2026_b', 'tenant-y.yaml'), 'upstream: 10.0.0.6:80\n');
  await symlink('..2026_b', join(dir, '..data_tmp'));
  await rename(join(dir, '..data_tmp'), join(dir, '..data'));
  await rm(join(dir, '..2026_a'), { recursive: true });
  await served(source, 'tenant-x', '10.0.0.2:80', 'swapped content served');
  assert.equal(await resolve(source, 'tenant-y'), '10.0.0.6:80');
  assert.deepEqual(keysOf(source), ['tenant-x', 'tenant-y'], 'the ..data / ..2026_* entries are not keys');
});

test('single file: broken YAML keeps every last good route and is counted once per broken save', async () => {
  const dir = await tempDir();
  const file = join(dir, 'routes.yaml');
  await writeFile(file, 'a: 10.0.0.1:80\nb: 10.0.0.2:80\n');
  const { source, parseErrors, parseErrorCount } = await fileSource({ path: file });
  await watchEstablished(source, dir);
  await writeFile(file, 'a: 10.0.0.1:80\nb: [10.0.0.2:80\n');
  await eventually(async () => (await parseErrorCount()) >= 1, 1000, 'broken file counted');
  assert.deepEqual(keysOf(source), ['a', 'b']);
  assert.equal(await resolve(source, 'b'), '10.0.0.2:80');
  assert.equal(parseErrors.snapshot()?.file?.total, await parseErrorCount());
  assert.match(source.health().last_error ?? '', /routes\.yaml/);
  await writeFile(file, 'a: 10.0.0.9:80\n');
  await served(source, 'a', '10.0.0.9:80', 'repaired file served');
  await served(source, 'b', 'miss:no_config', 'b removed by the repaired file');
});

test('watch: false with poll_interval picks changes up by polling', async () => {
  const dir = await tempDir();
  const file = join(dir, 'tenant-x');
  await writeFile(file, '10.0.0.1:80');
  const { source } = await fileSource({ path: dir, watch: false, poll_interval: '50ms' });
  assert.equal(await resolve(source, 'tenant-x'), '10.0.0.1:80');
  await writeFile(file, '10.0.0.2:80');
  await writeFile(join(dir, 'tenant-y'), '10.0.0.3:80');
  await served(source, 'tenant-x', '10.0.0.2:80', 'polled change');
  await served(source, 'tenant-y', '10.0.0.3:80', 'polled new file');
});

test('watch: false without poll_interval loads once', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'tenant-x'), '10.0.0.1:80');
  const { source } = await fileSource({ path: dir, watch: false });
  assert.equal(await resolve(source, 'tenant-x'), '10.0.0.1:80');
  assert.equal(source.healthy(), true);
});

test('clear() empties the cache, re-reads the files and keeps watching (the Go module wiped file routes until the next event)', async () => {
  const dir = await tempDir();
  const file = join(dir, 'tenant-x');
  await writeFile(file, '10.0.0.1:80');
  const { source } = await fileSource({ path: dir });
  await watchEstablished(source, dir);
  source.clear();
  await eventually(() => source.cacheStats().entries === 1, 1000, 're-read after clear');
  await writeFile(file, '10.0.0.2:80');
  await eventually(
    () => {
      const r = source.peek('tenant-x');
      return r !== undefined && !isMiss(r) && r.config.upstream === '10.0.0.2:80';
    },
    1000,
    'the watch delivers changes after clear',
  );
});

test('clear() right after start() leaves a watch that still delivers changes', async () => {
  const dir = await tempDir();
  const file = join(dir, 'tenant-x');
  await writeFile(file, '10.0.0.1:80');
  const { source } = await fileSource({ path: dir });
  source.clear();
  await eventually(() => source.cacheStats().entries === 1, 1000, 're-read after clear');
  await writeFile(file, '10.0.0.2:80');
  await eventually(
    () => {
      const r = source.peek('tenant-x');
      return r !== undefined && !isMiss(r) && r.config.upstream === '10.0.0.2:80';
    },
    2000,
    'the watch delivers changes after an early clear',
  );
});

test('stop() right after start() returns, even while the watch is still starting', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'tenant-x'), '10.0.0.1:80');
  for (let i = 0; i < 5; i++) {
    const metrics = new Metrics();
    const source = await createSource(
      new OptionReader({ source: 'file', path: dir }, 'policies.default.data_source'),
      { metrics, parseErrors: new ParseErrorLog(), compile: { algorithms, state: new UpstreamStateTable() }, logger: silentLogger },
      new SourceNamer(),
    );
    await source.start();
    await stopWithin(source, 2000);
  }
});

// ---- configuration errors ---------------------------------------------------------------------------------------------

test('a missing path is a ConfigError naming policies.default.data_source.path at build time', async () => {
  const dir = await tempDir();
  const missing = join(dir, 'no-such-dir');
  const config = parseConfig(
    stringify({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      policies: { default: { key: '{header.X-Tenant}', data_source: { source: 'file', path: missing } } },
    }),
    'svc.yaml',
  );
  await assert.rejects(buildService(config, { logger: silentLogger, metrics: new Metrics() }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /^svc\.yaml:\d+: policies\.default\.data_source\.path: .*no-such-dir does not exist/);
    return true;
  });
});

test('path is required', async () => {
  await assert.rejects(
    fileSource({}),
    (err: unknown) => err instanceof ConfigError && /policies\.default\.data_source\.path: is required/.test(err.message),
  );
});

test('a misspelt file option is rejected as unknown', async () => {
  const dir = await tempDir();
  await assert.rejects(
    fileSource({ path: dir, wacth: false }),
    (err: unknown) => err instanceof ConfigError && /policies\.default\.data_source\.wacth: unknown option/.test(err.message),
  );
});

// ---- size: large directories, lookups without a scan, bounded listings ---------------------------------------------

/** `count` route files `t-00000.yaml` … in `dir`, written a few hundred at a time. */
async function manyFiles(dir: string, count: number): Promise<void> {
  for (let i = 0; i < count; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, count - i) }, (_, j) =>
        writeFile(join(dir, `t-${String(i + j).padStart(5, '0')}.yaml`), `10.0.${(i + j) >> 8}.${(i + j) & 255}:80\n`),
      ),
    );
  }
}

test('a large directory (3,000 files) loads within initial_load_timeout; keys beyond max_cache_size are read from their own file', async () => {
  const dir = await tempDir();
  await manyFiles(dir, 3_000);
  const { source } = await fileSource({ path: dir, watch: false, initial_load_timeout: '20s', max_cache_size: 100 });
  assert.equal(source.healthy(), true, source.health().last_error);
  // the cache keeps 100 routes; every other key is a cache miss answered from the file named like it
  assert.equal(await resolve(source, 't-00000'), '10.0.0.0:80');
  assert.equal(await resolve(source, 't-02999'), '10.0.11.183:80');
  assert.equal(await resolve(source, 't-01500'), '10.0.5.220:80');
  assert.equal(await resolve(source, 't-99999'), 'miss:no_config');
  // a file written after the listing (no watch) is found by its name, without a new listing
  await writeFile(join(dir, 'late.json'), JSON.stringify({ upstream: '10.9.9.9:80' }));
  assert.equal(await resolve(source, 'late'), '10.9.9.9:80');
  // the extensions seen by the listing count too
  await writeFile(join(dir, 'other.conf'), '10.9.9.8:80');
  await writeFile(join(dir, 'x.conf'), '10.9.9.7:80');
  assert.equal(await resolve(source, 'x'), 'miss:no_config', '.conf was not seen by the last listing (nor is it a common extension)');
});

test('a cache miss never reads outside the directory: keys that are paths or hidden names are "no config"', async () => {
  const parent = await tempDir();
  const dir = join(parent, 'routes');
  await mkdir(dir);
  await writeFile(join(parent, 'secret.yaml'), '10.6.6.6:80');
  await writeFile(join(dir, '.hidden.yaml'), '10.6.6.7:80');
  await manyFiles(dir, 20);
  const { source } = await fileSource({ path: dir, watch: false, max_cache_size: 5 });
  for (const key of ['../secret', '..', '.hidden', 'a/../../secret', 'a\\b', 'nul\0byte', ''])
    assert.equal(await resolve(source, key), 'miss:no_config', JSON.stringify(key));
  assert.equal(await resolve(source, 't-00019'), '10.0.0.19:80');
});

test('initial_load_timeout bounds each listing: a directory that cannot be read in time leaves the source unhealthy, with the timeout named', async () => {
  const dir = await tempDir();
  await manyFiles(dir, 3_000);
  const { source } = await fileSource({ path: dir, watch: false, initial_load_timeout: '1ms' });
  assert.equal(source.ready(), true);
  await eventually(() => /list did not finish within 1ms/.test(source.health().last_error ?? ''), 5_000, 'the listing timeout reported');
  assert.equal(source.healthy(), false);
});

test('an abandoned listing stops between files: list() rejects with the abort reason instead of reading on', async () => {
  const dir = await tempDir();
  await manyFiles(dir, 2_000);
  const driver = new FileDriver({ path: dir, format: 'auto', watch: false, pollIntervalMs: 0, debounceMs: 100 });
  const controller = new AbortController();
  const listing = driver.list(controller.signal);
  setImmediate(() => controller.abort(new Error('abandoned')));
  await assert.rejects(listing, /abandoned/);
  // and a listing left alone reads them all
  assert.equal([...(await driver.list(new AbortController().signal)).entries].length, 2_000);
});

test('initial_load_timeout must be greater than 0', async () => {
  const dir = await tempDir();
  await assert.rejects(
    fileSource({ path: dir, initial_load_timeout: '0s' }),
    (err: unknown) =>
      err instanceof ConfigError && /policies\.default\.data_source\.initial_load_timeout: must be greater than 0/.test(err.message),
  );
});

test('the probe reports whether the path exists', async () => {
  const dir = await tempDir();
  await new FileDriver({ path: dir, format: 'auto', watch: false, pollIntervalMs: 0, debounceMs: 100 }).probe();
  await assert.rejects(
    new FileDriver({ path: join(dir, 'gone'), format: 'auto', watch: false, pollIntervalMs: 0, debounceMs: 100 }).probe(),
    /ENOENT/,
  );
});
