// A Dockerfile read as the builder reads it (the subset this project uses), and its stages replayed without an
// engine: each stage gets a scratch directory standing for its root filesystem; COPY copies from the build
// context (minus .dockerignore) or from an earlier stage, RUN runs the command there with bash, WORKDIR and ENV
// carry over. What FROM's base image provides (node, npm) is the host's.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, posix } from 'node:path';

export interface Instruction {
  op: string;
  /** The arguments as written (line continuations joined). */
  args: string;
  line: number;
}

export interface Stage {
  name: string;
  from: string;
  instructions: Instruction[];
}

export interface Dockerfile {
  args: Record<string, string>;
  stages: Stage[];
}

export function parseDockerfile(text: string): Dockerfile {
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let logical = lines[i] ?? '';
    while (logical.endsWith('\\') && i + 1 < lines.length) logical = `${logical.slice(0, -1)} ${lines[++i]?.trim() ?? ''}`;
    logical = logical.trim();
    if (logical === '' || logical.startsWith('#')) continue;
    const m = /^(\S+)\s+(.*)$/.exec(logical);
    if (!m) throw new Error(`Dockerfile:${start + 1}: cannot read ${JSON.stringify(logical)}`);
    const op = (m[1] as string).toUpperCase();
    const rest = (m[2] as string).trim();
    if (op === 'ARG' && stages.length === 0) {
      const [k, v = ''] = rest.split('=', 2) as [string, string?];
      args[k] = v;
    } else if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
      if (!f) throw new Error(`Dockerfile:${start + 1}: cannot read FROM ${rest}`);
      const from = (f[1] as string).replace(/\$\{(\w+)\}/g, (_, k: string) => args[k] ?? '');
      stages.push({ name: f[2] ?? String(stages.length), from, instructions: [] });
    } else {
      const stage = stages[stages.length - 1];
      if (!stage) throw new Error(`Dockerfile:${start + 1}: ${op} before FROM`);
      stage.instructions.push({ op, args: rest, line: start + 1 });
    }
  }
  return { args, stages };
}

/** The exec-form JSON array of ENTRYPOINT, CMD or HEALTHCHECK … CMD (shell form is not used here). */
export function execForm(args: string): string[] {
  const json = args.slice(args.indexOf('['));
  const parsed = JSON.parse(json) as unknown;
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) throw new Error(`not an exec-form array: ${args}`);
  return parsed;
}

/** The last instruction `op` of a stage (ENTRYPOINT, CMD, USER, HEALTHCHECK: the last one wins). */
export function last(stage: Stage, op: string): Instruction | undefined {
  return stage.instructions.filter((i) => i.op === op).at(-1);
}

/** ENV of a stage: `K=V K2=V2` pairs (values without spaces, as written here). */
export function stageEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of stage.instructions.filter((x) => x.op === 'ENV')) {
    for (const pair of i.args.split(/\s+/)) {
      const eq = pair.indexOf('=');
      if (eq <= 0) throw new Error(`Dockerfile:${i.line}: ENV ${pair}: use KEY=value`);
      env[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  }
  return env;
}

export interface ReplayedStage {
  /** The scratch directory standing for the stage's `/`. */
  root: string;
  /** WORKDIR at the end of the stage, inside `root`. */
  workdir: string;
  env: Record<string, string>;
}

/** Patterns of .dockerignore as the context filter (names and simple globs `*.log`, relative to the context). */
function ignored(context: string): (path: string) => boolean {
  const file = join(context, '.dockerignore');
  const patterns = existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== '' && !l.startsWith('#'))
    : [];
  const regexes = patterns.map((p) => new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')}(/|$)`));
  return (rel) => regexes.some((r) => r.test(rel));
}

/**
 * Replays every stage of `dockerfile` (in order) into `scratch`/<stage>, except those given in `prebuilt` (their
 * result as it is). RUN commands run with `env` added to the stage's ENV. Throws on the first failing
 * instruction, naming its line.
 */
export function replay(
  dockerfile: Dockerfile,
  context: string,
  scratch: string,
  env: NodeJS.ProcessEnv,
  prebuilt: Record<string, ReplayedStage> = {},
): Map<string, ReplayedStage> {
  const done = new Map<string, ReplayedStage>(Object.entries(prebuilt));
  const skip = ignored(context);
  for (const stage of dockerfile.stages) {
    if (done.has(stage.name)) continue;
    const root = join(scratch, stage.name);
    mkdirSync(root, { recursive: true });
    let workdir = '/';
    const inside = (p: string): string => join(root, posix.resolve(workdir, p));
    for (const i of stage.instructions) {
      const where = `Dockerfile:${i.line} (${stage.name}): ${i.op} ${i.args}`;
      if (i.op === 'WORKDIR') {
        workdir = posix.resolve(workdir, i.args);
        mkdirSync(join(root, workdir), { recursive: true });
      } else if (i.op === 'COPY') {
        const words = i.args.split(/\s+/);
        const from = words[0]?.startsWith('--from=') ? words.shift()?.slice('--from='.length) : undefined;
        const dest = words.pop() as string;
        for (const src of words) {
          let source: string;
          if (from === undefined) {
            if (skip(posix.normalize(src))) throw new Error(`${where}: ${src} is excluded by .dockerignore`);
            source = join(context, src);
          } else {
            const prior = done.get(from);
            if (!prior) throw new Error(`${where}: no earlier stage ${from}`);
            source = join(prior.root, src);
          }
          if (!existsSync(source)) throw new Error(`${where}: ${src} does not exist`);
          // as the builder does: a file copied to a `dir/` lands inside it; a directory's contents land in dest
          const target = dest.endsWith('/') && statSync(source).isFile() ? join(inside(dest), basename(src)) : inside(dest);
          cpSync(source, target, { recursive: true, filter: (p) => from !== undefined || !skip(posix.relative(context, p)) });
        }
      } else if (i.op === 'RUN') {
        try {
          execFileSync('bash', ['-ec', i.args], {
            cwd: join(root, workdir),
            env: { ...env, ...stageEnv(stage) },
            stdio: ['ignore', 'pipe', 'pipe'],
            timeout: 300_000,
          });
        } catch (err) {
          const e = err as { stdout?: Buffer; stderr?: Buffer };
          throw new Error(`${where}: failed\n${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`, { cause: err });
        }
      }
      // ENV is read with stageEnv; EXPOSE, USER, HEALTHCHECK, STOPSIGNAL, ENTRYPOINT, CMD describe the image
    }
    done.set(stage.name, { root, workdir: join(root, workdir), env: stageEnv(stage) });
  }
  return done;
}
