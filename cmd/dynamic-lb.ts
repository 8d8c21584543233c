import { Command, CommanderError, Option } from 'commander';
import { buildService, startGatewayJwts } from '../src/app.ts';
import { generateCaddyfile, type CaddyfileMode } from '../src/caddyfile/generate.ts';
import { routesCommand } from '../src/cli/routes.ts';
import { DEFAULT_SHUTDOWN_TIMEOUT_MS, configPath, loadConfigFile } from '../src/config/load.ts';
import { demoTour, startDemo } from '../src/demo/demo.ts';
import { ConfigError, DynamicLbError } from '../src/errors.ts';
import { silentLogger } from '../src/observe/log.ts';
import { packageVersion } from '../src/package.ts';
import { validateRoutePaths } from '../src/route/validate-files.ts';

/** `dynamic-lb`: serve | validate | explain | caddyfile | migrate | demo | routes. Exit codes: 0 ok, 1 invalid input, 2 usage. */
const EXIT_INVALID = 1;
const EXIT_USAGE = 2;

const program = new Command()
  .name('dynamic-lb')
  .description(
    'Per-request upstream selection for an unmodified Caddy, from route configs in etcd, Redis, Consul, ZooKeeper, SQL, Kubernetes, files or HTTP.',
  )
  .version(packageVersion(), '-V, --version', 'print the version and exit')
  .showHelpAfterError()
  .exitOverride();

program
  .command('serve')
  .description('run the service (SIGTERM/SIGINT: drain and exit 0 within shutdown_timeout; SIGHUP: reload the config)')
  .option('-c, --config <file>', 'service config (default ./dynamic-lb.yaml, or $DYNAMIC_LB_CONFIG)')
  .action(async (o: { config?: string }) => {
    const file = configPath(o.config);
    const service = await buildService(loadConfigFile(file));
    // a failed start (port in use, …) has closed everything again; the error is printed as one line below
    await service.start();
    const onHup = (): void => {
      service.logger.info({ file }, 'SIGHUP: reloading the config');
      void service.reload(() => loadConfigFile(file));
    };
    process.on('SIGHUP', onHup);
    const signal = await untilSignal();
    process.off('SIGHUP', onHup);
    // SIGHUP's default action would end the process in the middle of its drain
    process.on('SIGHUP', () => service.logger.warn('SIGHUP ignored: stopping'));
    const timeoutMs = service.config.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS;
    service.logger.info({ signal, shutdown_timeout_ms: timeoutMs }, 'stopping: draining requests in flight');
    const again = (): void => {
      service.logger.warn('second signal: exiting without finishing the drain');
      process.exit(EXIT_INVALID);
    };
    process.once('SIGINT', again);
    process.once('SIGTERM', again);
    setTimeout(() => {
      service.logger.error({ shutdown_timeout_ms: timeoutMs }, 'stop did not finish within shutdown_timeout; exiting');
      process.exit(EXIT_INVALID);
    }, timeoutMs).unref();
    await service.stop();
    service.logger.info('stopped');
    // a store client that keeps a handle open must not keep the process past its drain
    process.exit(0);
  });

program
  .command('validate')
  .description('check a service config and/or route configs; prints file:line: problem per error')
  .option('-c, --config <file>', 'service config to check (its data-source options too)')
  .argument('[routes...]', 'route files or directories to check')
  .action(async (routes: string[], o: { config?: string }) => {
    const problems: string[] = [];
    let checked = 0;
    if (o.config !== undefined || routes.length === 0) {
      try {
        const service = await buildService(loadConfigFile(configPath(o.config)), { logger: silentLogger });
        await service.stop();
        checked++;
      } catch (err) {
        if (!(err instanceof DynamicLbError)) throw err;
        problems.push(err.message);
      }
    }
    const result = await validateRoutePaths(routes);
    problems.push(...result.problems);
    checked += result.checked;
    for (const p of problems) process.stdout.write(`${p}\n`);
    process.stderr.write(`${checked} checked, ${problems.length} problem${problems.length === 1 ? '' : 's'}\n`);
    if (problems.length > 0) process.exitCode = EXIT_INVALID;
  });

program
  .command('explain')
  .description('dry run: print the decision for a request as JSON, without serving')
  .requiredOption('-c, --config <file>', 'service config')
  .option('-p, --policy <name>', 'policy', 'default')
  .option('-k, --key <key>', 'routing key (as X-Dynamic-Key would set it)')
  .option('-H, --header <header>', "request header 'Name: value' (repeatable)", (v: string, all: string[]) => [...all, v], [] as string[])
  .option('--uri <uri>', 'request path and query', '/')
  .option('--method <method>', 'request method', 'GET')
  .option('--host <host>', 'request host', 'localhost')
  .option('--remote-ip <ip>', 'client IP', '127.0.0.1')
  .action(
    async (o: {
      config: string;
      policy: string;
      key?: string;
      header: string[];
      uri: string;
      method: string;
      host: string;
      remoteIp: string;
    }) => {
      const headers: Record<string, string> = {};
      for (const h of o.header) {
        const colon = h.indexOf(':');
        if (colon <= 0) throw new CommanderError(EXIT_USAGE, 'usage', `-H expects 'Name: value', got ${JSON.stringify(h)}`);
        headers[h.slice(0, colon).trim()] = h.slice(colon + 1).trim();
      }
      const service = await buildService(loadConfigFile(o.config), { logger: silentLogger });
      try {
        const jwts = [...service.policies.values()].flatMap((r) => (r.gatewayJwt !== undefined ? [r.gatewayJwt] : []));
        await Promise.all([...service.sources.map((s) => s.start()), startGatewayJwts(jwts)]);
        const { explainDecision } = await import('../src/admin/views.ts');
        const result = await explainDecision(service, {
          policy: o.policy,
          key: o.key,
          headers,
          uri: o.uri,
          method: o.method,
          host: o.host,
          remoteIp: o.remoteIp,
        });
        process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      } finally {
        await service.stop();
      }
    },
  );

program
  .command('caddyfile')
  .description(
    'print a ready Caddyfile for the configured policies (select: forward_auth per request; upstreams: dynamic srv from the DNS server)',
  )
  .option('-c, --config <file>', 'service config (default ./dynamic-lb.yaml, or $DYNAMIC_LB_CONFIG)')
  .addOption(
    new Option('-m, --mode <mode>', 'select (forward_auth) or upstreams (dynamic srv)').choices(['select', 'upstreams']).default('select'),
  )
  .option('--site <address>', 'site address of the generated site block', ':8080')
  .option('--sidecar <host>', 'host Caddy reaches the sidecar at (default: the listen host)')
  .option(
    '--handle <matcher=policy>',
    "send requests matching a Caddy matcher to another policy, e.g. '/api/*=api' (repeatable)",
    (v: string, all: string[]) => [...all, v],
    [] as string[],
  )
  .action((o: { config?: string; mode: CaddyfileMode; site: string; sidecar?: string; handle: string[] }) => {
    const handles = o.handle.map((h) => {
      const eq = h.lastIndexOf('=');
      if (eq <= 0 || eq === h.length - 1)
        throw new CommanderError(EXIT_USAGE, 'usage', `--handle expects 'matcher=policy', got ${JSON.stringify(h)}`);
      return { matcher: h.slice(0, eq), policy: h.slice(eq + 1) };
    });
    const config = loadConfigFile(configPath(o.config));
    if (o.mode === 'upstreams' && config.dns === undefined)
      throw new ConfigError('dns', 'required by --mode upstreams (the DNS server Caddy asks)', { file: config.file });
    for (const h of handles)
      if (!config.policies.some((p) => p.name === h.policy))
        throw new ConfigError('policies', `--handle ${h.matcher}: no policy ${JSON.stringify(h.policy)}`, { file: config.file });
    if (o.sidecar !== undefined && config.listen.startsWith('unix/'))
      throw new ConfigError(
        'listen',
        `is a Unix socket (${config.listen}): --sidecar cannot apply, only a Caddy on the same host or pod can dial it`,
        {
          file: config.file,
        },
      );
    process.stdout.write(
      generateCaddyfile(config, { mode: o.mode, site: o.site, handles, ...(o.sidecar !== undefined ? { sidecarHost: o.sidecar } : {}) }),
    );
  });

program
  .command('migrate')
  .description(
    'convert a Caddyfile written for the Go module (lb_policy dynamic, dynamic dynamic_source) into dynamic-lb.yaml + a Caddyfile for stock Caddy',
  )
  .argument('<caddyfile>', 'the Caddyfile to migrate')
  .option('-o, --out <dir>', 'where to write dynamic-lb.yaml, Caddyfile and MIGRATION.txt', '.')
  .option('--listen <addr>', "the sidecar's listen address in the new config", '127.0.0.1:2020')
  .action(async (file: string, o: { out: string; listen: string }) => {
    const { migrateCaddyfile } = await import('../src/migrate/migrate.ts');
    const { readFileSync, mkdirSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError('', `cannot read Caddyfile: ${(err as Error).message}`, { file });
    }
    let result;
    try {
      result = migrateCaddyfile(text, file, { listen: o.listen });
    } catch (err) {
      if (err instanceof DynamicLbError) throw err;
      throw new ConfigError('', (err as Error).message);
    }
    mkdirSync(o.out, { recursive: true });
    writeFileSync(join(o.out, 'dynamic-lb.yaml'), result.yaml);
    writeFileSync(join(o.out, 'Caddyfile'), result.caddyfile);
    writeFileSync(join(o.out, 'MIGRATION.txt'), result.report);
    const dropped = result.notes.filter((n) => n.kept !== true).length;
    if (result.report !== '') process.stderr.write(result.report);
    process.stderr.write(
      `wrote ${join(o.out, 'dynamic-lb.yaml')} and ${join(o.out, 'Caddyfile')}; ${dropped} item${dropped === 1 ? '' : 's'} not carried over (listed in ${join(o.out, 'MIGRATION.txt')})\n`,
    );
  });

program
  .command('demo')
  .description('the zero-setup tour: sidecar on the bundled example routes, three sample backends (and Caddy when installed)')
  .addOption(new Option('--listen <addr>', 'Caddy-facing API').default('127.0.0.1:2020'))
  .addOption(new Option('--admin <addr>', 'admin API').default('127.0.0.1:2021'))
  .option('--caddy <addr>', 'where the demo starts Caddy (when `caddy` is on PATH)', '127.0.0.1:8080')
  .option('--no-caddy', 'do not start Caddy')
  .action(async (o: { listen: string; admin: string; caddy: string | false }) => {
    const demo = await startDemo({
      listen: o.listen,
      adminListen: o.admin,
      logLevel: process.env.LOG_LEVEL ?? 'warn',
      caddyListen: o.caddy,
    });
    process.stdout.write(`${demoTour(demo.service, demo.caddy?.url, demo.caddyProblem)}\n`);
    await untilSignal();
    await demo.stop();
  });

program.addCommand(routesCommand());

function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const done = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve(signal);
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version end here too, with exit code 0
    process.exitCode = err.exitCode === 0 ? 0 : EXIT_USAGE;
  } else if (err instanceof DynamicLbError) {
    process.stderr.write(`dynamic-lb: ${err.message}\n`);
    // a failed start has closed what it opened; exit now so no stray handle keeps the process alive
    process.exit(EXIT_INVALID);
  } else {
    process.stderr.write(`dynamic-lb: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(EXIT_INVALID);
  }
}
