import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'undici';
import { terminate } from './processes.ts';

/**
 * A real headless Chromium (Debian `chromium`) driven over the DevTools protocol: one page, its console
 * errors, uncaught exceptions and browser log errors (failed loads, CSP violations) collected as they happen.
 * `CHROMIUM` overrides the binary.
 */
export interface Problem {
  kind: 'console' | 'exception' | 'log';
  text: string;
}

export interface Browser {
  /** Calls a DevTools method on the page. */
  send<T = Record<string, unknown>>(method: string, params?: Record<string, unknown>): Promise<T>;
  /** Navigates and waits for the load event. */
  open(url: string): Promise<void>;
  /** Evaluates an expression in the page; returns its JSON value (promises awaited). */
  evaluate<T>(expression: string): Promise<T>;
  /** Polls `expression` until it is truthy, at most `timeoutMs`; returns its value. */
  waitFor<T>(expression: string, what: string, timeoutMs?: number): Promise<T>;
  /** PNG bytes of the viewport. */
  screenshot(): Promise<Buffer>;
  /** Console errors, exceptions and error log entries so far. */
  problems: Problem[];
  /** Main-frame navigations so far (a reload counts). */
  navigations: number;
  close(): Promise<void>;
}

export async function launchChromium(options: { width?: number; height?: number } = {}): Promise<Browser> {
  const profile = await mkdtemp(join(tmpdir(), 'dlb-chromium-'));
  const args = [
    '--headless=new',
    '--remote-debugging-port=0',
    '--remote-debugging-address=127.0.0.1',
    `--user-data-dir=${profile}`,
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-gpu',
    '--disable-extensions',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--metrics-recording-only',
    '--hide-scrollbars',
    `--window-size=${options.width ?? 1280},${options.height ?? 900}`,
    ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
    'about:blank',
  ];
  const child = spawn(process.env.CHROMIUM ?? 'chromium', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const stopChild = async (): Promise<void> => {
    await terminate(child, 5000);
    await rm(profile, { recursive: true, force: true });
  };
  let browserWs: string;
  try {
    browserWs = await devtoolsUrl(child);
  } catch (err) {
    await stopChild();
    throw err;
  }
  const port = new URL(browserWs).port;
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as Array<{
    type: string;
    webSocketDebuggerUrl: string;
  }>;
  const page = targets.find((t) => t.type === 'page');
  if (page === undefined) {
    await stopChild();
    throw new Error('chromium: no page target');
  }
  const ws = new WebSocket(page.webSocketDebuggerUrl);
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener('open', () => resolve(), { once: true });
    ws.addEventListener('error', () => reject(new Error('chromium: DevTools WebSocket failed')), { once: true });
  });

  let nextId = 0;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; method: string }>();
  const listeners = new Map<string, Array<(params: Record<string, unknown>) => void>>();
  const on = (method: string, fn: (params: Record<string, unknown>) => void): void =>
    void listeners.set(method, [...(listeners.get(method) ?? []), fn]);
  ws.addEventListener('message', (e) => {
    const msg = JSON.parse(String(e.data)) as {
      id?: number;
      method?: string;
      params?: Record<string, unknown>;
      result?: unknown;
      error?: { message: string };
    };
    if (msg.id !== undefined) {
      const w = waiting.get(msg.id);
      waiting.delete(msg.id);
      if (msg.error) w?.reject(new Error(`${w.method}: ${msg.error.message}`));
      else w?.resolve(msg.result);
    } else if (msg.method) for (const fn of listeners.get(msg.method) ?? []) fn(msg.params ?? {});
  });
  ws.addEventListener('close', () => {
    for (const w of waiting.values()) w.reject(new Error(`${w.method}: DevTools connection closed`));
    waiting.clear();
  });
  const send = <T>(method: string, params: Record<string, unknown> = {}): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = ++nextId;
      waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, method });
      ws.send(JSON.stringify({ id, method, params }));
    });

  const browser: Browser = {
    send,
    problems: [],
    navigations: 0,
    async open(url) {
      const loaded = new Promise<void>((resolve) => {
        const fn = (): void => resolve();
        on('Page.loadEventFired', fn);
      });
      const nav = await send<{ errorText?: string }>('Page.navigate', { url });
      if (nav.errorText) throw new Error(`navigate ${url}: ${nav.errorText}`);
      await loaded;
    },
    async evaluate<T>(expression: string) {
      const r = await send<{ result: { value?: unknown }; exceptionDetails?: { text: string; exception?: { description?: string } } }>(
        'Runtime.evaluate',
        { expression, awaitPromise: true, returnByValue: true },
      );
      if (r.exceptionDetails)
        throw new Error(`evaluate ${expression}: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
      return r.result.value as T;
    },
    async waitFor<T>(expression: string, what: string, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const v = await browser.evaluate<T>(expression);
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async screenshot() {
      const r = await send<{ data: string }>('Page.captureScreenshot', { format: 'png' });
      return Buffer.from(r.data, 'base64');
    },
    async close() {
      ws.close();
      await stopChild();
    },
  };
  on('Runtime.consoleAPICalled', (p) => {
    if (p.type === 'error' || p.type === 'assert') browser.problems.push({ kind: 'console', text: JSON.stringify(p.args) });
  });
  on('Runtime.exceptionThrown', (p) => browser.problems.push({ kind: 'exception', text: JSON.stringify(p.exceptionDetails) }));
  on('Log.entryAdded', (p) => {
    const entry = p.entry as { level: string; text: string; url?: string };
    if (entry.level === 'error') browser.problems.push({ kind: 'log', text: `${entry.text} ${entry.url ?? ''}` });
  });
  on('Page.frameNavigated', (p) => {
    if ((p.frame as { parentId?: string }).parentId === undefined) browser.navigations++;
  });
  try {
    await Promise.all([send('Page.enable'), send('Runtime.enable'), send('Log.enable')]);
  } catch (err) {
    await browser.close();
    throw err;
  }
  return browser;
}

/** Reads `DevTools listening on ws://…` from chromium's stderr (at most 30 s). */
function devtoolsUrl(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => done(new Error(`chromium: no DevTools URL after 30 s; stderr: ${text.slice(-2000)}`)), 30_000);
    const onData = (chunk: Buffer): void => {
      text += chunk.toString();
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(text);
      if (m) done(undefined, m[1]);
    };
    const onExit = (code: number | null): void =>
      done(new Error(`chromium exited (${code}) before DevTools listened; stderr: ${text.slice(-2000)}`));
    const onError = (err: Error): void =>
      done(new Error(`chromium: ${err.message} (install the Debian package chromium: test/support/infra.sh)`));
    function done(err: Error | undefined, url?: string): void {
      clearTimeout(timer);
      child.stderr?.off('data', onData);
      child.stderr?.resume(); // keep draining it, or a chatty browser would block on a full pipe
      child.off('exit', onExit);
      child.off('error', onError);
      if (err) reject(err);
      else resolve(url as string);
    }
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}
