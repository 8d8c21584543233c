// deploy/kubernetes: the base and the example overlay render with `kubectl kustomize`, every object is valid
// against the Kubernetes schemas (kubernetes-models; PodMonitor: the prometheus-operator models) with no field
// the schema does not know, the pod is shaped as docs/deploy.md says, the Caddyfile in its ConfigMap passes
// `caddy validate` and its dynamic-lb.yaml and routes pass `dynamic-lb validate`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { generateCaddyfile } from '../../src/caddyfile/generate.ts';
import { parseConfig } from '../../src/config/load.ts';
import { caddyBinary, requireCommand } from '../support/servers.ts';
import { childEnv, run } from '../support/processes.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const T = { timeout: 120_000 };

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/** apiVersion/kind → the model whose `validate()` checks an object against its schema. */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'v1/ServiceAccount': ServiceAccount,
  'apps/v1/Deployment': Deployment,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'monitoring.coreos.com/v1/PodMonitor': PodMonitor,
};

/** Every property path of a JSON value, parents before children (`spec`, `spec.replicas`, `spec.x[0]` …). */
function paths(value: unknown, prefix: Array<string | number> = []): Array<Array<string | number>> {
  if (Array.isArray(value)) return value.flatMap((v, i) => [[...prefix, i], ...paths(v, [...prefix, i])]);
  if (value !== null && typeof value === 'object')
    return Object.entries(value).flatMap(([k, v]) => [[...prefix, k], ...paths(v, [...prefix, k])]);
  return [];
}

function withValueAt(obj: unknown, path: ReadonlyArray<string | number>, value: unknown): unknown {
  const copy = structuredClone(obj) as Record<string | number, unknown>;
  let at = copy;
  for (const p of path.slice(0, -1)) at = at[p] as Record<string | number, unknown>;
  at[path[path.length - 1] as string | number] = value;
  return copy;
}

/**
 * Problems of one object: schema errors, and fields the schema does not know. The generated validators ignore
 * unknown properties (a typo such as `readinessProb:` would pass), so each property is also replaced in turn by
 * a value no schema type accepts: if the object still validates, nothing in the schema describes that field.
 */
function problems(obj: K8sObject): string[] {
  const what = `${obj.kind}/${obj.metadata?.name}`;
  const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
  if (Model === undefined) return [`${what}: no schema for ${obj.apiVersion} ${obj.kind} (add it to MODELS)`];
  const check = (data: unknown): string | undefined => {
    try {
      new Model(data as never).validate();
      return undefined;
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    }
  };
  const invalid = check(obj);
  if (invalid !== undefined) return [`${what}: ${invalid}`];
  const unknown: string[] = [];
  for (const path of paths(obj)) {
    if (path[0] === 'apiVersion' || path[0] === 'kind') continue;
    if (check(withValueAt(obj, path, Symbol('no schema type accepts this'))) === undefined)
      unknown.push(`${what}: ${path.join('.')}: not a field of ${obj.apiVersion} ${obj.kind}`);
  }
  return unknown;
}

async function kustomize(dir: string): Promise<K8sObject[]> {
  const r = await run(requireCommand('kubectl'), ['kustomize', dir], { cwd: ROOT });
  assert.equal(r.code, 0, `kubectl kustomize ${dir}: ${r.stderr}`);
  return parseAllDocuments(r.stdout).map((d) => d.toJSON() as K8sObject);
}

const find = (objects: K8sObject[], kind: string, name?: string): K8sObject => {
  const o = objects.find(
    (x) => x.kind === kind && (name === undefined || x.metadata.name === name || x.metadata.name.startsWith(`${name}-`)),
  );
  assert.ok(o, `${kind} ${name ?? ''} rendered`);
  return o;
};

interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: Array<{ name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }>;
  ports?: Array<{ name: string; containerPort: number }>;
  startupProbe?: { httpGet?: { path: string; port: string } };
  readinessProbe?: { httpGet?: { path: string; port: string }; tcpSocket?: { port: string } };
  livenessProbe?: { httpGet?: { path: string; port: string }; tcpSocket?: { port: string } };
  resources?: { requests?: { cpu?: string; memory?: string }; limits?: { memory?: string } };
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean; capabilities?: { drop?: string[] } };
  volumeMounts?: Array<{ name: string; mountPath: string }>;
}
interface PodSpec {
  serviceAccountName?: string;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  containers: Container[];
  volumes: Array<{ name: string; configMap?: { name: string }; emptyDir?: unknown }>;
}
const podSpec = (d: K8sObject): PodSpec => (d.spec as { template: { spec: PodSpec } }).template.spec;

let tmp: string;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'cdr-deploy-k8s-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

describe('the schema check can fail', () => {
  const deployment = (container: Record<string, unknown>): K8sObject => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'x' },
    spec: {
      selector: { matchLabels: { a: 'b' } },
      template: { metadata: { labels: { a: 'b' } }, spec: { containers: [{ name: 'c', image: 'i', ...container }] } },
    },
  });
  const cases: ReadonlyArray<{ desc: string; obj: K8sObject; expect: RegExp }> = [
    { desc: 'a wrong type', obj: deployment({ ports: [{ containerPort: 'http' }] }), expect: /containerPort must be integer/ },
    {
      desc: 'a misspelt field',
      obj: deployment({ readinessProb: { tcpSocket: { port: 80 } } }),
      expect: /spec\.template\.spec\.containers\.0\.readinessProb: not a field/,
    },
    { desc: 'a misplaced field', obj: deployment({ replicas: 2 }), expect: /containers\.0\.replicas: not a field/ },
    { desc: 'an unknown kind', obj: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' } }, expect: /no schema for v1 Pod/ },
    {
      desc: 'a PodMonitor with a numeric port',
      obj: {
        apiVersion: 'monitoring.coreos.com/v1',
        kind: 'PodMonitor',
        metadata: { name: 'm' },
        spec: { selector: {}, podMetricsEndpoints: [{ port: 2021 }] },
      },
      expect: /port must be string/,
    },
  ];
  for (const c of cases) {
    test(`${c.desc} is reported`, () => {
      const found = problems(c.obj);
      assert.ok(
        found.some((p) => c.expect.test(p)),
        found.join('\n'),
      );
    });
  }
  test('a valid object has no problems', () => {
    assert.deepEqual(problems(deployment({ ports: [{ name: 'http', containerPort: 80 }] })), []);
  });
});

for (const dir of ['deploy/kubernetes/base', 'deploy/kubernetes/overlays/example']) {
  describe(`kubectl kustomize ${dir}`, () => {
    let objects: K8sObject[];
    before(async () => {
      objects = await kustomize(dir);
    });

    test('every object is valid against its schema, with no unknown field', T, () => {
      assert.ok(objects.length >= 8, `${objects.length} objects`);
      assert.deepEqual(objects.flatMap(problems), []);
    });

    test('the pod: Caddy and dynamic-lb side by side, probes, resources, non-root, read-only root filesystem', T, () => {
      const pod = podSpec(find(objects, 'Deployment', 'caddy-dynamic-lb'));
      assert.deepEqual(pod.containers.map((c) => c.name).sort(), ['caddy', 'dynamic-lb']);
      const container = (name: string): Container => pod.containers.find((c) => c.name === name) as Container;
      assert.equal(pod.securityContext?.runAsNonRoot, true);
      assert.notEqual(pod.securityContext?.runAsUser, 0);
      for (const c of pod.containers) {
        assert.equal(c.securityContext?.readOnlyRootFilesystem, true, c.name);
        assert.equal(c.securityContext?.allowPrivilegeEscalation, false, c.name);
        assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'], c.name);
        assert.ok(c.resources?.requests?.cpu && c.resources.requests.memory, `${c.name}: resource requests`);
        assert.ok(c.resources?.limits?.memory, `${c.name}: memory limit`);
      }
      const sidecar = container('dynamic-lb');
      assert.deepEqual(sidecar.ports, [{ name: 'admin', containerPort: 2021 }]);
      assert.deepEqual(sidecar.livenessProbe?.httpGet, { path: '/healthz', port: 'admin' });
      assert.deepEqual(sidecar.readinessProbe?.httpGet, { path: '/readyz', port: 'admin' });
      assert.deepEqual(sidecar.startupProbe?.httpGet, { path: '/readyz', port: 'admin' });
      assert.equal(sidecar.env?.find((e) => e.name === 'POD_NAMESPACE')?.valueFrom?.fieldRef?.fieldPath, 'metadata.namespace');
      assert.deepEqual(sidecar.args, ['serve', '--config', '/etc/dynamic-lb/dynamic-lb.yaml']);
      // the writable paths are emptyDirs; the configs come from the generated ConfigMaps
      const volume = (container: Container, mountPath: string) =>
        pod.volumes.find((v) => v.name === container.volumeMounts?.find((m) => m.mountPath === mountPath)?.name);
      const caddy = container('caddy');
      for (const path of ['/data', '/config']) assert.ok(volume(caddy, path)?.emptyDir !== undefined, `caddy ${path} is an emptyDir`);
      assert.equal(volume(caddy, '/etc/caddy')?.configMap?.name, find(objects, 'ConfigMap', 'caddy-dynamic-lb-caddyfile').metadata.name);
      assert.equal(
        volume(sidecar, '/etc/dynamic-lb')?.configMap?.name,
        find(objects, 'ConfigMap', 'caddy-dynamic-lb-config').metadata.name,
      );
    });

    test('every pod meets the restricted Pod Security Standard', T, () => {
      const deployments = objects.filter((o) => o.kind === 'Deployment');
      assert.ok(deployments.length > 0);
      for (const d of deployments) {
        const pod = podSpec(d) as PodSpec & { securityContext?: { seccompProfile?: { type: string } } };
        assert.equal(pod.securityContext?.runAsNonRoot, true, `${d.metadata.name}: runAsNonRoot`);
        assert.equal(pod.securityContext?.seccompProfile?.type, 'RuntimeDefault', `${d.metadata.name}: seccomp`);
        assert.ok(
          pod.volumes === undefined || pod.volumes.every((v) => v.configMap !== undefined || v.emptyDir !== undefined),
          `${d.metadata.name}: configMap and emptyDir volumes only`,
        );
        for (const c of pod.containers) {
          const sc = c.securityContext as Container['securityContext'] & { capabilities?: { add?: string[] } };
          assert.equal(sc?.allowPrivilegeEscalation, false, `${d.metadata.name}/${c.name}: allowPrivilegeEscalation`);
          assert.deepEqual(sc?.capabilities?.drop, ['ALL'], `${d.metadata.name}/${c.name}: drop ALL`);
          assert.ok(
            (sc?.capabilities?.add ?? []).every((cap) => cap === 'NET_BIND_SERVICE'),
            `${d.metadata.name}/${c.name}: adds only NET_BIND_SERVICE`,
          );
        }
      }
    });

    test('RBAC: the service account reads the one routes ConfigMap, in its own namespace', T, () => {
      const pod = podSpec(find(objects, 'Deployment', 'caddy-dynamic-lb'));
      const account = find(objects, 'ServiceAccount', pod.serviceAccountName);
      const role = find(objects, 'Role', 'dynamic-lb-routes-reader');
      assert.deepEqual(role.rules, [
        { apiGroups: [''], resources: ['configmaps'], resourceNames: ['caddy-routing'], verbs: ['get', 'list', 'watch'] },
      ]);
      const binding = find(objects, 'RoleBinding', 'dynamic-lb-routes-reader');
      assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: role.metadata.name });
      assert.deepEqual(binding.subjects, [
        {
          kind: 'ServiceAccount',
          name: account.metadata.name,
          ...(account.metadata.namespace ? { namespace: account.metadata.namespace } : {}),
        },
      ]);
      find(objects, 'ConfigMap', 'caddy-routing');
      assert.equal(
        objects.find((o) => o.metadata.name === 'caddy-routing')?.metadata.name,
        'caddy-routing',
        'the routes ConfigMap keeps its name (dynamic-lb.yaml names it)',
      );
    });

    test('the Service reaches Caddy, the PodMonitor scrapes the admin port', T, () => {
      const labels = (
        find(objects, 'Deployment', 'caddy-dynamic-lb').spec as { template: { metadata: { labels: Record<string, string> } } }
      ).template.metadata.labels;
      const service = find(objects, 'Service', 'caddy-dynamic-lb').spec as {
        selector: Record<string, string>;
        ports: Array<{ targetPort: string }>;
      };
      for (const [k, v] of Object.entries(service.selector)) assert.equal(labels[k], v, `selector ${k}`);
      assert.deepEqual(
        service.ports.map((p) => p.targetPort),
        ['http'],
      );
      const monitor = find(objects, 'PodMonitor', 'caddy-dynamic-lb').spec as {
        selector: { matchLabels: Record<string, string> };
        podMetricsEndpoints: Array<{ port: string; path: string }>;
      };
      for (const [k, v] of Object.entries(monitor.selector.matchLabels)) assert.equal(labels[k], v, `PodMonitor selector ${k}`);
      assert.deepEqual(
        monitor.podMetricsEndpoints.map((e) => [e.port, e.path]),
        [['admin', '/metrics']],
      );
    });

    test(
      'the ConfigMaps: the Caddyfile passes `caddy validate`, dynamic-lb.yaml and the routes pass `dynamic-lb validate`',
      T,
      async () => {
        const out = join(tmp, dir.replaceAll('/', '_'));
        mkdirSync(join(out, 'routes'), { recursive: true });
        const caddyfile = join(out, 'Caddyfile');
        writeFileSync(
          caddyfile,
          (find(objects, 'ConfigMap', 'caddy-dynamic-lb-caddyfile').data as Record<string, string>).Caddyfile as string,
        );
        const caddy = await run(caddyBinary(), ['validate', '--config', caddyfile, '--adapter', 'caddyfile'], {
          env: childEnv({ XDG_CONFIG_HOME: out, XDG_DATA_HOME: out }),
        });
        assert.equal(caddy.code, 0, `caddy validate: ${caddy.stderr}`);

        const config = join(out, 'dynamic-lb.yaml');
        writeFileSync(
          config,
          (find(objects, 'ConfigMap', 'caddy-dynamic-lb-config').data as Record<string, string>)['dynamic-lb.yaml'] as string,
        );
        for (const [key, value] of Object.entries(find(objects, 'ConfigMap', 'caddy-routing').data as Record<string, string>))
          writeFileSync(join(out, 'routes', key), value);
        // in the pod the source uses the service account; here a kubeconfig (validate builds the source, never connects)
        const kubeconfig = join(out, 'kubeconfig');
        writeFileSync(
          kubeconfig,
          'apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n',
        );
        const validate = await run(
          process.execPath,
          ['--import', 'tsx', 'cmd/dynamic-lb.ts', 'validate', '--config', config, join(out, 'routes')],
          { cwd: ROOT, env: childEnv({ KUBECONFIG: kubeconfig, POD_NAMESPACE: 'ns' }) },
        );
        assert.equal(validate.code, 0, `dynamic-lb validate: ${validate.stdout}${validate.stderr}`);
        assert.match(validate.stderr, /^4 checked, 0 problems/m);
      },
    );
  });
}

test('the base Caddyfile is `dynamic-lb caddyfile` of the base dynamic-lb.yaml', () => {
  const file = 'deploy/kubernetes/base/dynamic-lb.yaml';
  const expected = generateCaddyfile(parseConfig(readFileSync(join(ROOT, file), 'utf8'), file), { mode: 'select', site: ':8080' });
  assert.equal(
    readFileSync(join(ROOT, 'deploy/kubernetes/base/Caddyfile'), 'utf8'),
    expected,
    'regenerate: see the header of deploy/kubernetes/base/dynamic-lb.yaml',
  );
});
