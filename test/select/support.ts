import type { AlgorithmOptions } from '../../src/select/algorithm.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { RequestView, type RequestInput } from '../../src/request/view.ts';

/** A request as the algorithm tests need it: GET /p on host h from 10.0.0.1 with `X-User: u1`, unless overridden. */
export function makeView(overrides: Partial<RequestInput> = {}): RequestView {
  return new RequestView({
    method: 'GET',
    uri: '/p',
    host: 'h',
    scheme: 'http',
    headers: { 'x-user': 'u1' },
    remoteIp: '10.0.0.1',
    ...overrides,
  });
}

/** Algorithm options over upstreams `10.0.<i>:8080` with the given weights; no key, a fresh state table, random 0.5. */
export function makeOptions(weights: readonly number[], overrides: Partial<AlgorithmOptions> = {}): AlgorithmOptions {
  return {
    upstreams: weights.map((weight, i) => ({ address: `10.0.${i >> 8}.${(i & 255) + 1}:8080`, weight })),
    key: undefined,
    state: new UpstreamStateTable(),
    random: () => 0.5,
    ...overrides,
  };
}
