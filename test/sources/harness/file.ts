import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StoreHarness } from '../behaviour.ts';

/**
 * The file source as a harness (used by the propagation benchmark): a temp directory, one file per key,
 * saved the way editors do (write a temp file, rename it over). There is no network, so `target` and the
 * address given to `dataSource` are unused.
 */
export async function makeHarness(): Promise<StoreHarness> {
  const dir = await mkdtemp(join(tmpdir(), 'cdr-file-'));
  let n = 0;
  return {
    target: { host: '127.0.0.1', port: 0 },
    dataSource: () => ({ source: 'file', path: dir, debounce: '5ms' }),
    async put(key, value) {
      const tmp = join(dir, `.${key}.${n++}.tmp`);
      await writeFile(tmp, value);
      await rename(tmp, join(dir, key));
    },
    async del(key) {
      await rm(join(dir, key), { force: true });
    },
    async close() {
      await rm(dir, { recursive: true, force: true });
    },
    propagationMs: 2000,
  };
}
