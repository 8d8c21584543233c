import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/errors.ts';
import { formatToken, onNewLine, replaceEnvVars, tokenize } from '../../src/migrate/lexer.ts';
import { parseCaddyfile, type Directive } from '../../src/migrate/parse.ts';

const texts = (input: string): string[] => tokenize(input, 'F').map((t) => t.text);
const lines = (input: string): number[] => tokenize(input, 'F').map((t) => t.line);

describe('lexer (Caddy 2.6.2 rules)', () => {
  test('whitespace separates tokens; braces are ordinary tokens', () => {
    assert.deepEqual(texts('a b\t c\n{\n}'), ['a', 'b', 'c', '{', '}']);
    assert.deepEqual(texts('a{ b}'), ['a{', 'b}']);
  });

  test('double quotes keep spaces; \\" is the only escape, other backslashes stay', () => {
    const t = tokenize('"a b" "say \\"hi\\"" "c\\d"', 'F');
    assert.deepEqual(
      t.map((x) => x.text),
      ['a b', 'say "hi"', 'c\\d'],
    );
    assert.deepEqual(
      t.map((x) => x.quote),
      ['"', '"', '"'],
    );
    assert.deepEqual(texts('""'), ['']);
  });

  test('backticks: no escapes at all, may contain double quotes and span lines', () => {
    const t = tokenize('`a "b" \\n`\n`x\ny` z', 'F');
    assert.deepEqual(
      t.map((x) => x.text),
      ['a "b" \\n', 'x\ny', 'z'],
    );
    assert.equal(t[0]?.quote, '`');
    assert.deepEqual(
      t.map((x) => x.line),
      [1, 2, 3],
    );
  });

  test('a quote only opens at the start of a token', () => {
    assert.deepEqual(texts('a"b c"'), ['a"b', 'c"']);
  });

  test('# starts a comment only at the start of a token, to the end of the line', () => {
    assert.deepEqual(texts('a # b c\nd#e f'), ['a', 'd#e', 'f']);
    assert.deepEqual(texts('"# not a comment" x'), ['# not a comment', 'x']);
  });

  test('line numbers: multi-line quoted tokens, CRLF, a leading BOM', () => {
    assert.deepEqual(lines('a\n"b\nc"\nd'), [1, 2, 4]);
    assert.deepEqual(lines('\uFEFFa\r\nb\r\n\r\nc'), [1, 2, 4]);
    assert.deepEqual(texts('\uFEFFa\r\nb'), ['a', 'b']);
  });

  test('a backslash before a newline joins lines; the skipped line is counted later', () => {
    const t = tokenize('a \\\n b\nc', 'F');
    assert.deepEqual(
      t.map((x) => x.text),
      ['a', 'b', 'c'],
    );
    assert.deepEqual(
      t.map((x) => x.line),
      [1, 1, 3],
    );
    assert.equal(onNewLine(t[0], t[1] as never), false);
  });

  test('a backslash inside a bare token is kept', () => {
    assert.deepEqual(texts('a\\b'), ['a\\b']);
  });

  test('an unterminated quote yields what was read, as Caddy does', () => {
    assert.deepEqual(texts('"abc'), ['abc']);
  });

  test('{$ENV} and {$ENV:default} are replaced in the raw text, once, like Caddy', () => {
    const env: Record<string, string> = { A: 'x', LOOP: '{$A}' };
    const get = (n: string): string | undefined => env[n];
    assert.equal(replaceEnvVars('{$A} {$B:def} {$C} {$} {$LOOP}', get), 'x def  {$} {$A}');
    assert.equal(replaceEnvVars('{$A', get), '{$A');
    assert.deepEqual(texts(replaceEnvVars('key {$B:two words}', get)), ['key', 'two', 'words']);
  });

  test('{env.X} is a runtime placeholder: an ordinary token', () => {
    assert.deepEqual(texts('token {env.CONSUL_TOKEN}'), ['token', '{env.CONSUL_TOKEN}']);
  });

  test('formatToken quotes what would not survive as a bare token', () => {
    assert.equal(formatToken({ text: 'a b', quote: '' }), '"a b"');
    assert.equal(formatToken({ text: 'x', quote: '`' }), '`x`');
    assert.equal(formatToken({ text: 'say "hi"', quote: '"' }), '"say \\"hi\\""');
    assert.equal(formatToken({ text: '{http.request.host}', quote: '' }), '{http.request.host}');
    assert.equal(formatToken({ text: '#x', quote: '' }), '"#x"');
  });
});

const flat = (ds: Directive[], depth = 0): string[] =>
  ds.flatMap((d) => [
    `${'.'.repeat(depth)}${[d.name, ...d.args].map((t) => t.text).join(' ')}`,
    ...(d.block ? flat(d.block, depth + 1) : []),
  ]);

describe('parser (blocks, snippets, imports)', () => {
  test('global block, sites with several addresses (trailing comma continues), nested blocks', () => {
    const blocks = parseCaddyfile(
      '{\n\tadmin off\n}\na.example,\nb.example c.example {\n\treverse_proxy x:1 {\n\t\theader_up A B\n\t}\n}\n',
      'F',
    );
    assert.equal(blocks.length, 2);
    assert.equal(blocks[0]?.global, true);
    assert.deepEqual(
      blocks[1]?.keys.map((k) => k.text),
      ['a.example', 'b.example', 'c.example'],
    );
    assert.deepEqual(flat(blocks[1]?.directives ?? []), ['reverse_proxy x:1', '.header_up A B']);
  });

  test('a single site may omit its braces', () => {
    const blocks = parseCaddyfile(':80\nrespond hi\nlog', 'F');
    assert.deepEqual(
      blocks[0]?.keys.map((k) => k.text),
      [':80'],
    );
    assert.deepEqual(flat(blocks[0]?.directives ?? []), ['respond hi', 'log']);
  });

  test('snippets are spliced in where imported, with {args.N}, inside directive blocks too', () => {
    const blocks = parseCaddyfile(
      '(k) {\n\tkey {args.0}\n}\n:80 {\n\treverse_proxy {\n\t\timport k {header.X-T}\n\t\tfallback first\n\t}\n}\n',
      'F',
    );
    assert.equal(blocks.length, 1);
    assert.deepEqual(flat(blocks[0]?.directives ?? []), ['reverse_proxy', '.key {header.X-T}', '.fallback first']);
  });

  test('import of files by glob, relative to the importing file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cdr-migrate-import-'));
    try {
      writeFileSync(join(dir, 'a.caddy'), 'header A 1\n');
      writeFileSync(join(dir, 'b.caddy'), 'header B 2\n');
      writeFileSync(join(dir, 'Caddyfile'), ':80 {\n\timport *.caddy\n\trespond ok\n}\n');
      const blocks = parseCaddyfile(':80 {\n\timport *.caddy\n\trespond ok\n}\n', join(dir, 'Caddyfile'));
      assert.deepEqual(flat(blocks[0]?.directives ?? []), ['header A 1', 'header B 2', 'respond ok']);
      assert.match(blocks[0]?.directives[0]?.name.file ?? '', /a\.caddy$/);
      assert.throws(
        () => parseCaddyfile(':80 {\n\timport missing.caddy\n}\n', join(dir, 'Caddyfile')),
        /Caddyfile:2: import missing\.caddy: not a snippet, and the file cannot be read: no such file/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('import cycles and bad braces are errors with file:line', () => {
    assert.throws(
      () => parseCaddyfile('(a) {\n\timport a\n}\n:80 {\n\timport a\n}\n', 'F'),
      (e: unknown) => e instanceof ConfigError && /imports \(an import cycle\?\)/.test(e.message),
    );
    assert.throws(() => parseCaddyfile(':80 {\n\troute {\n\t\trespond x\n', 'F'), /block opened at line \d+ is not closed/);
    assert.throws(() => parseCaddyfile(':80 {\n\trespond x\n}\n}\n', 'F'), /F:4: unexpected '}'/);
    assert.throws(() => parseCaddyfile(':80{\n}\n', 'F'), /F:1: site addresses cannot end with a curly brace/);
    assert.throws(() => parseCaddyfile(':80 {\n\troute { respond x\n\t}\n}\n', 'F'), /F:2: unexpected next token after '\{' on same line/);
    assert.throws(() => parseCaddyfile('(a) {\n}\n(a) {\n}\n', 'F'), /F:3: redeclaration of previously declared snippet a/);
  });
});
