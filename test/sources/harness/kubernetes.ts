import { writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiException, CoreV1Api, KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import type { StoreHarness } from '../behaviour.ts';
import { kubeconfigYaml, startFakeKube, type FakeKube, type FakeKubeOptions, type PolicyRule } from '../../support/fake-kube.ts';

/**
 * The Kubernetes harness: a fresh protocol-faithful fake API server (test/support/fake-kube.ts). The harness
 * writes ConfigMaps with `@kubernetes/client-node` as cluster-admin; the source authenticates with a token
 * bound to the Role shipped in caddy-config/kubernetes-rbac.yaml (by name: exactly that Role; label selector:
 * that Role without `resourceNames`, as its comment says), so every request the source makes must be allowed
 * by the shipped least-privilege Role.
 *
 *  - mode `name`: one ConfigMap `caddy-routing` holds every key.
 *  - mode `selector`: keys are spread over two ConfigMaps labelled `app=caddy-routing`; a ConfigMap left
 *    without keys is deleted (so DELETED events are exercised too).
 */
export type KubeMode = 'name' | 'selector';

export interface KubeHarness extends StoreHarness {
  fake: FakeKube;
  api: CoreV1Api;
  namespace: string;
  mode: KubeMode;
  readerToken: string;
  /** Writes a kubeconfig for `server` (default: the fake itself) with `token` (default: the reader's); returns its path. */
  kubeconfig(server?: string, token?: string): string;
}

export const RBAC_FILE = new URL('../../../caddy-config/kubernetes-rbac.yaml', import.meta.url);
export const ADMIN_TOKEN = 'kube-admin-token';
export const READER_TOKEN = 'dynamic-lb-sa-token';
export const CONFIGMAP = 'caddy-routing';
export const SELECTOR = 'app=caddy-routing';
const SELECTOR_MAPS = ['routes-a', 'routes-b'];

/** The shipped Role: its namespace and rules. */
export async function shippedRole(): Promise<{ namespace: string; rules: PolicyRule[] }> {
  for (const doc of parseAllDocuments(await readFile(RBAC_FILE, 'utf8'))) {
    const o = doc.toJS() as { kind?: string; metadata?: { namespace?: string }; rules?: PolicyRule[] };
    if (o.kind === 'Role') return { namespace: o.metadata?.namespace ?? 'default', rules: o.rules ?? [] };
  }
  throw new Error('no Role in caddy-config/kubernetes-rbac.yaml');
}

export async function makeHarness(
  options: { mode?: KubeMode; fake?: FakeKubeOptions; source?: Record<string, unknown> } = {},
): Promise<KubeHarness> {
  const mode = options.mode ?? 'name';
  const role = await shippedRole();
  const rules = mode === 'name' ? role.rules : role.rules.map(({ resourceNames: _drop, ...rule }) => rule);
  const fake = await startFakeKube({
    tokens: {
      [ADMIN_TOKEN]: { user: 'kubernetes-admin' },
      [READER_TOKEN]: { user: 'system:serviceaccount:default:dynamic-lb', rules, namespace: role.namespace },
    },
    ...options.fake,
  });
  const dir = await mkdtemp(join(tmpdir(), 'fake-kube-'));
  let configs = 0;
  const kubeconfig = (server = fake.url, token = READER_TOKEN): string => {
    const path = join(dir, `kubeconfig-${++configs}.yaml`);
    writeFileSync(path, kubeconfigYaml({ server, token }), { mode: 0o600 });
    return path;
  };
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig(fake.url, ADMIN_TOKEN));
  const api = kc.makeApiClient(CoreV1Api);
  const namespace = role.namespace;
  const mapFor = (key: string): string =>
    mode === 'name' ? CONFIGMAP : (SELECTOR_MAPS[[...key].reduce((h, c) => h + c.charCodeAt(0), 0) % SELECTOR_MAPS.length] as string);

  /** Read-modify-write of one ConfigMap with optimistic concurrency (retried on 409 Conflict). */
  const edit = async (name: string, change: (data: Record<string, string>) => void): Promise<void> => {
    for (let attempt = 0; attempt < 5; attempt++) {
      let current: V1ConfigMap | undefined;
      try {
        current = await api.readNamespacedConfigMap({ name, namespace });
      } catch (err) {
        if (!(err instanceof ApiException && err.code === 404)) throw err;
      }
      const data = { ...(current?.data ?? {}) };
      change(data);
      try {
        if (current === undefined) {
          if (Object.keys(data).length === 0) return;
          await api.createNamespacedConfigMap({
            namespace,
            body: { metadata: { name, ...(mode === 'selector' ? { labels: { app: 'caddy-routing' } } : {}) }, data },
          });
        } else if (mode === 'selector' && Object.keys(data).length === 0) {
          await api.deleteNamespacedConfigMap({ name, namespace });
        } else {
          await api.replaceNamespacedConfigMap({ name, namespace, body: { ...current, data } });
        }
        return;
      } catch (err) {
        if (err instanceof ApiException && (err.code === 409 || err.code === 404)) continue;
        throw err;
      }
    }
    throw new Error(`could not update ConfigMap ${name} after 5 attempts`);
  };

  return {
    fake,
    api,
    namespace,
    mode,
    readerToken: READER_TOKEN,
    kubeconfig,
    target: { host: '127.0.0.1', port: fake.port },
    dataSource: (address) => ({
      source: 'kubernetes',
      kubeconfig: kubeconfig(`http://${address}`),
      namespace,
      ...(mode === 'name' ? { configmap_name: CONFIGMAP } : { label_selector: SELECTOR }),
      ...options.source,
    }),
    async put(key, value) {
      await edit(mapFor(key), (data) => {
        data[key] = value;
      });
    },
    async del(key) {
      await edit(mapFor(key), (data) => {
        delete data[key];
      });
    },
    async close() {
      await fake.close();
      await rm(dir, { recursive: true, force: true });
    },
    restartServer: { stop: () => fake.stop(), start: () => fake.start() },
  };
}
