import { randomUUID } from 'node:crypto';
import Consul from 'consul';
import type { StoreHarness } from '../behaviour.ts';
import { startFakeConsul, type FakeConsul, type FakeConsulOptions } from '../../support/fake-consul.ts';

/**
 * The Consul harness: a fresh protocol-faithful fake Consul (test/support/fake-consul.ts) with ACLs on —
 * the harness writes with a management token through the `consul` client, the source reads with a token
 * that may only read its prefix (least privilege, as a deployment should). Each run uses its own prefix.
 */
export interface ConsulHarness extends StoreHarness {
  fake: FakeConsul;
  prefix: string;
  admin: Consul;
  /** The source's read-only token. */
  readerToken: string;
}

export const ADMIN_TOKEN = 'e95b599e-166e-7d80-08ad-aee76e7ddf19';
export const READER_TOKEN = '4c0a43f5-5ad1-4e5e-9a52-0d7d6dbd0b8e';

export async function makeHarness(options: { source?: Record<string, unknown>; fake?: FakeConsulOptions } = {}): Promise<ConsulHarness> {
  const prefix = `caddy/routing/run-${randomUUID().slice(0, 8)}/`;
  const fake = await startFakeConsul({
    acl: { tokens: { [ADMIN_TOKEN]: 'management', [READER_TOKEN]: { read: [prefix] } } },
    ...options.fake,
  });
  const admin = new Consul({ host: '127.0.0.1', port: fake.port, defaults: { token: ADMIN_TOKEN } });
  return {
    fake,
    prefix,
    admin,
    readerToken: READER_TOKEN,
    target: { host: '127.0.0.1', port: fake.port },
    dataSource: (address) => ({ source: 'consul', address, token: READER_TOKEN, prefix, ...options.source }),
    async put(key, value) {
      if ((await admin.kv.set(prefix + key, value)) !== true) throw new Error(`consul put ${key} failed`);
    },
    async del(key) {
      await admin.kv.del(prefix + key);
    },
    async close() {
      admin.destroy();
      await fake.close();
    },
    restartServer: { stop: () => fake.stop(), start: () => fake.start() },
  };
}
