import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { ConfigError } from '../errors.ts';
import { readInputFile } from '../config/load.ts';
import { onNewLine, tokenize, type Token } from './lexer.ts';

/**
 * Caddyfile structure as Caddy's parser (caddyconfig/caddyfile/parse.go, v2.6.2) sees it: server blocks of
 * addresses (a trailing comma continues on the next line) and directives; `(name) { … }` defines a snippet;
 * `import <snippet|file-glob> [args…]` splices tokens in (at a line start, also inside directive blocks), with
 * `{args.N}` replaced; a single site may omit its braces. Env placeholders are left in the tokens (the caller
 * decides what `{$X}` becomes). Each directive becomes a tree: arguments on its line, then its `{ … }` block.
 */
export interface Directive {
  name: Token;
  args: Token[];
  block: Directive[] | undefined;
}

export interface ServerBlock {
  keys: Token[];
  /** Global options block: the first block, without keys. */
  global: boolean;
  directives: Directive[];
}

export type ReadFile = (path: string) => string;

/** Imports spliced in one parse; past this an import cycle is assumed (Caddy tracks an import graph). */
const MAX_IMPORTS = 1000;

export function parseCaddyfile(text: string, file: string, readFile: ReadFile = (p) => readFileSync(p, 'utf8')): ServerBlock[] {
  return new Parser(tokenize(text, file), readFile).all();
}

export function parseCaddyfileAt(file: string): ServerBlock[] {
  return parseCaddyfile(readInputFile(file, 'Caddyfile'), file);
}

class Parser {
  private cursor = 0;
  private readonly snippets = new Map<string, Token[]>();
  private depth = 0;
  private imports = 0;
  constructor(
    private tokens: Token[],
    private readonly readFile: ReadFile,
  ) {}

  all(): ServerBlock[] {
    const blocks: ServerBlock[] = [];
    while (this.cursor < this.tokens.length) {
      const b = this.block(blocks.length === 0);
      if (b !== undefined) blocks.push(b);
    }
    return blocks;
  }

  private fail(t: Token | undefined, problem: string): never {
    const last = this.tokens[this.tokens.length - 1];
    throw new ConfigError('', problem, { file: t?.file ?? last?.file, line: t?.line ?? last?.line });
  }

  private block(first: boolean): ServerBlock | undefined {
    const keys: Token[] = [];
    let expectingAnother = false;
    for (;;) {
      const t = this.tokens[this.cursor];
      if (t === undefined) {
        if (expectingAnother) this.fail(undefined, 'unexpected end of file: another address expected after a comma');
        return keys.length > 0 ? { keys, global: false, directives: [] } : undefined;
      }
      if (t.text === 'import' && onNewLine(this.tokens[this.cursor - 1], t)) {
        this.doImport();
        continue;
      }
      if (t.text === '{') break;
      if (t.text === '}') this.fail(t, "unexpected '}' because no matching opening brace");
      if (t.text.endsWith('{'))
        this.fail(
          t,
          `site addresses cannot end with a curly brace: ${JSON.stringify(t.text)} - put a space between the token and the brace`,
        );
      if (t.text !== '') {
        expectingAnother = t.text.endsWith(',');
        const text = expectingAnother ? t.text.slice(0, -1) : t.text;
        if (text.includes(',')) this.fail(t, `site addresses cannot contain a comma: ${JSON.stringify(t.text)}`);
        keys.push({ ...t, text });
      }
      this.cursor++;
      const next = this.tokens[this.cursor];
      if (next === undefined) continue;
      if (!expectingAnother && onNewLine(t, next)) break;
    }
    const head = keys[0];
    if (keys.length === 1 && head !== undefined && head.text.startsWith('(') && head.text.endsWith(')')) {
      const name = head.text.slice(1, -1);
      if (this.snippets.has(name)) this.fail(head, `redeclaration of previously declared snippet ${name}`);
      this.snippets.set(name, this.braced(head));
      return undefined;
    }
    const open = this.tokens[this.cursor];
    if (open?.text === '{') {
      this.cursor++;
      const inner = this.braced(open, true);
      return { keys, global: first && keys.length === 0, directives: this.tree(inner) };
    }
    // a single site without braces: the rest of the file is its directives
    const rest = this.tokens.slice(this.cursor);
    this.cursor = this.tokens.length;
    return { keys, global: false, directives: this.tree(this.expandImports(rest)) };
  }

  /** Tokens up to the brace closing the one at the cursor (or already consumed, `opened`), imports expanded. */
  private braced(at: Token, opened = false): Token[] {
    if (!opened) {
      if (this.tokens[this.cursor]?.text !== '{') this.fail(at, 'expected { after the snippet name');
      this.cursor++;
    }
    const out: Token[] = [];
    let nesting = 0;
    for (;;) {
      const t = this.tokens[this.cursor];
      if (t === undefined) this.fail(at, `unexpected end of file: block opened at line ${at.line} is not closed`);
      if (t.text === 'import' && onNewLine(this.tokens[this.cursor - 1], t) && !opened) {
        // snippets keep their imports until they are used (Caddy expands them on use)
      } else if (t.text === 'import' && onNewLine(this.tokens[this.cursor - 1], t)) {
        this.doImport();
        continue;
      }
      this.cursor++;
      if (t.text === '{') nesting++;
      else if (t.text === '}') {
        if (nesting === 0) return out;
        nesting--;
      }
      out.push(t);
    }
  }

  private expandImports(tokens: Token[]): Token[] {
    const saved = { tokens: this.tokens, cursor: this.cursor };
    this.tokens = tokens;
    this.cursor = 0;
    const out: Token[] = [];
    while (this.cursor < this.tokens.length) {
      const t = this.tokens[this.cursor] as Token;
      if (t.text === 'import' && onNewLine(this.tokens[this.cursor - 1], t)) {
        this.doImport();
        continue;
      }
      out.push(t);
      this.cursor++;
    }
    this.tokens = saved.tokens;
    this.cursor = saved.cursor;
    return out;
  }

  /** Replaces `import pattern args…` at the cursor with the imported tokens. */
  private doImport(): void {
    const at = this.tokens[this.cursor] as Token;
    const args: Token[] = [];
    let j = this.cursor + 1;
    let prev = at;
    while (j < this.tokens.length && !onNewLine(prev, this.tokens[j] as Token)) {
      prev = this.tokens[j] as Token;
      args.push(prev);
      j++;
    }
    const pattern = args.shift();
    if (pattern === undefined || pattern.text === '') this.fail(at, 'import requires a non-empty file path or snippet name');
    if (++this.depth > MAX_IMPORTS) this.fail(at, `import ${pattern.text}: more than ${MAX_IMPORTS} imports (an import cycle?)`);
    let imported = this.snippets.get(pattern.text);
    if (imported === undefined) imported = this.importFiles(pattern);
    const origin = ++this.imports;
    const replaced = imported.map((t) => ({
      ...t,
      origin,
      text: t.text.replace(/\{args\.(\d+)\}/g, (whole, n: string) => args[Number(n)]?.text ?? whole),
    }));
    this.tokens = [...this.tokens.slice(0, this.cursor), ...replaced, ...this.tokens.slice(j)];
  }

  private importFiles(pattern: Token): Token[] {
    const full = isAbsolute(pattern.text) ? pattern.text : join(dirname(pattern.file), pattern.text);
    let files: string[];
    if (/[*?[]/.test(basename(full))) {
      const re = new RegExp(
        `^${basename(full)
          .replace(/[.+^${}()|\\]/g, '\\$&')
          .replace(/\*/g, '[^/]*')
          .replace(/\?/g, '[^/]')}$`,
      );
      let names: string[] = [];
      try {
        names = readdirSync(dirname(full));
      } catch {
        names = [];
      }
      files = names
        .filter((n) => re.test(n))
        .sort()
        .map((n) => join(dirname(full), n));
      // Caddy only warns when a glob matches nothing
    } else {
      files = [full];
    }
    const out: Token[] = [];
    for (const f of files) {
      let text: string;
      try {
        if (statSync(f).isDirectory()) this.fail(pattern, `import ${pattern.text}: ${f} is a directory`);
        text = this.readFile(f);
      } catch (err) {
        if (err instanceof ConfigError) throw err;
        this.fail(
          pattern,
          `import ${pattern.text}: not a snippet, and the file cannot be read: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
        );
      }
      out.push(...tokenize(text, f));
    }
    return out;
  }

  /** The directive trees of a block's tokens (imports already expanded). */
  private tree(tokens: Token[]): Directive[] {
    let i = 0;
    const parseList = (closing: Token | undefined): Directive[] => {
      const list: Directive[] = [];
      while (i < tokens.length) {
        const name = tokens[i] as Token;
        if (name.text === '}') {
          if (closing === undefined) this.fail(name, "unexpected '}' because no matching opening brace");
          i++;
          return list;
        }
        i++;
        const d: Directive = { name, args: [], block: undefined };
        let prev = name;
        while (i < tokens.length && !onNewLine(prev, tokens[i] as Token)) {
          const t = tokens[i] as Token;
          if (t.text === '{') {
            i++;
            const next = tokens[i];
            if (next !== undefined && !onNewLine(t, next) && t.quote === '' && next.text !== '}')
              this.fail(t, "unexpected next token after '{' on same line");
            d.block = parseList(t);
            prev = tokens[i - 1] as Token;
            break;
          }
          d.args.push(t);
          prev = t;
          i++;
        }
        list.push(d);
      }
      if (closing !== undefined) this.fail(closing, `unexpected end of file: block opened at line ${closing.line} is not closed`);
      return list;
    };
    return parseList(undefined);
  }
}
