// What test/examples/examples.test.ts checks per example: the route files `dynamic-lb validate` gets, the
// Caddyfiles that are `dynamic-lb caddyfile` output (and with which arguments), and for the examples that run end
// to end the requests of their README and the upstreams it promises.
import assert from 'node:assert/strict';
import type { parseDocument } from 'yaml';

export interface Sidecar {
  url: string;
  adminUrl: string;
  dns: string | undefined;
  /** `GET /select/<policy>` with these headers: status, chosen upstream, route and reason. */
  select(headers?: Record<string, string>, policy?: string): Promise<{ status: number; upstream: string | null; route: string | null; reason: string | null; upstreams: string | null }>;
  output(): string;
}

export interface RunOptions {
  /** More changes to the config document (e.g. a route path moved to a temp copy). */
  edit?: (doc: ReturnType<typeof parseDocument>) => void;
  env?: NodeJS.ProcessEnv;
}

export interface RunContext {
  tmp: string;
  cli(args: readonly string[], env?: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }>;
}

export interface ExampleRun {
  what: string;
  options?: (tmp: string) => RunOptions | Promise<RunOptions>;
  run(sidecar: Sidecar, ctx: RunContext): Promise<void>;
}

/** Route files and folders of each example (relative to its folder), checked with its config. */
export const ROUTE_PATHS: Record<string, string[]> = {
  basic: ['routes'],
};

/** Caddyfiles that are the generator's output: file → `dynamic-lb caddyfile` arguments. */
export const GENERATED_CADDYFILES: Record<string, string[]> = {
  'basic/Caddyfile': ['--config', 'examples/basic/dynamic-lb.yaml'],
};

const POOL = ['127.0.0.1:9001', '127.0.0.1:9002', '127.0.0.1:9003'];

export const EXAMPLE_RUNS: Record<string, ExampleRun> = {
  basic: {
    what: 'bare host:port, a header rule, fallback to the pool',
    async run(s) {
      assert.deepEqual(await s.select({ 'X-Tenant': 'tenant-a' }), { status: 200, upstream: '127.0.0.1:9001', route: 'hit', reason: null, upstreams: '127.0.0.1:9001' });
      assert.equal((await s.select({ 'X-Tenant': 'tenant-b' })).upstream, '127.0.0.1:9002');
      assert.equal((await s.select({ 'X-Tenant': 'tenant-b', 'X-Version': 'v2' })).upstream, '127.0.0.1:9003');
      const seen: string[] = [];
      for (const headers of [{ 'X-Tenant': 'nobody' }, {}, { 'X-Tenant': 'nobody' }] as Record<string, string>[]) {
        const r = await s.select(headers);
        assert.deepEqual([r.status, r.route, r.reason], [200, 'fallback', 'X-Tenant' in headers ? 'no_config' : 'no_key']);
        seen.push(r.upstream ?? '');
      }
      assert.deepEqual([...seen].sort(), POOL, 'round_robin over the pool: each once in three');
    },
  },
};
