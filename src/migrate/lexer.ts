/**
 * A Caddyfile tokenizer faithful to Caddy's own (caddyconfig/caddyfile/lexer.go, v2.6.2): tokens are separated
 * by whitespace; `"…"` quotes (with `\"` as the only escape; other backslashes are kept) and backtick quotes
 * (no escapes at all) may span lines; `#` starts a comment only at the start of a token; a backslash before a
 * newline joins the lines (the next token keeps the first line's number); `\r` is ignored; a leading BOM is
 * skipped. `{` and `}` are ordinary tokens here, as in Caddy: the parser gives them meaning.
 */
export interface Token {
  file: string;
  line: number;
  text: string;
  /** The enclosing quote character, '' when the token was bare. */
  quote: '' | '"' | '`';
  /** Set on tokens spliced in by one `import` (a different import or the importing text starts a new line). */
  origin?: number;
}

export function tokenize(input: string, file: string): Token[] {
  const tokens: Token[] = [];
  const chars = Array.from(input.startsWith('\uFEFF') ? input.slice(1) : input);
  let line = 1;
  let skippedLines = 0;
  let i = 0;
  while (i < chars.length) {
    let val = '';
    let tokenLine = line;
    let comment = false;
    let quoted = false;
    let btQuoted = false;
    let escaped = false;
    let done: Token | undefined;
    for (; i < chars.length; i++) {
      const ch = chars[i] as string;
      if (!escaped && !btQuoted && ch === '\\') {
        escaped = true;
        continue;
      }
      if (quoted || btQuoted) {
        if (quoted && escaped) {
          if (ch !== '"') val += '\\';
          escaped = false;
        } else if ((quoted && ch === '"') || (btQuoted && ch === '`')) {
          done = { file, line: tokenLine, text: val, quote: quoted ? '"' : '`' };
          i++;
          break;
        }
        if (ch === '\n') {
          line += 1 + skippedLines;
          skippedLines = 0;
        }
        val += ch;
        continue;
      }
      if (/\s/u.test(ch)) {
        if (ch === '\r') continue;
        if (ch === '\n') {
          if (escaped) {
            skippedLines++;
            escaped = false;
          } else {
            line += 1 + skippedLines;
            skippedLines = 0;
          }
          comment = false;
        }
        if (val.length > 0) {
          done = { file, line: tokenLine, text: val, quote: '' };
          i++;
          break;
        }
        continue;
      }
      if (ch === '#' && val.length === 0) comment = true;
      if (comment) continue;
      if (val.length === 0) {
        tokenLine = line;
        if (ch === '"') {
          quoted = true;
          continue;
        }
        if (ch === '`') {
          btQuoted = true;
          continue;
        }
      }
      if (escaped) {
        val += '\\';
        escaped = false;
      }
      val += ch;
    }
    if (done === undefined) {
      // end of input: Caddy emits what it has (an unterminated quote included)
      if (val.length > 0) tokens.push({ file, line: tokenLine, text: val, quote: quoted ? '"' : btQuoted ? '`' : '' });
      break;
    }
    tokens.push(done);
  }
  return tokens;
}

/** Line breaks inside a token's text (a quoted token may span lines). */
export function lineBreaks(t: Token): number {
  let n = 0;
  for (const ch of t.text) if (ch === '\n') n++;
  return n;
}

/** True when `b` starts a new line after `a` (Caddy's Dispenser.isNewLine). */
export function onNewLine(a: Token | undefined, b: Token): boolean {
  if (a === undefined) return true;
  if (a.file !== b.file || a.origin !== b.origin) return true;
  return a.line + lineBreaks(a) < b.line;
}

/**
 * `{$NAME}` and `{$NAME:default}` as Caddy replaces them in the raw text before tokenizing (parse.go
 * replaceEnvVars): an unset variable becomes its default or nothing; a replaced value is not scanned again.
 */
export function replaceEnvVars(input: string, lookup: (name: string) => string | undefined): string {
  let offset = 0;
  let out = input;
  for (;;) {
    const begin = out.indexOf('{$', offset);
    if (begin < 0) break;
    const end = out.indexOf('}', begin + 2);
    if (end < 0) break;
    const inner = out.slice(begin + 2, end);
    if (inner.length === 0) {
      offset = end + 1;
      continue;
    }
    const colon = inner.indexOf(':');
    const name = colon < 0 ? inner : inner.slice(0, colon);
    let value = lookup(name);
    if (value === undefined) value = colon < 0 ? '' : inner.slice(colon + 1);
    out = out.slice(0, begin) + value + out.slice(end + 1);
    offset = begin + value.length;
  }
  return out;
}

/** A token as it can be written back into a Caddyfile (quoted when it must be). */
export function formatToken(t: Pick<Token, 'text' | 'quote'>): string {
  if (t.quote === '`') return `\`${t.text}\``;
  if (t.quote === '"' || t.text === '' || /[\s"]/.test(t.text) || t.text.startsWith('#') || t.text.startsWith('`')) {
    return `"${t.text.replace(/"/g, '\\"')}"`;
  }
  return t.text;
}
