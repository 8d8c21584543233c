import { LineCounter, parseDocument, type Node } from 'yaml';

/**
 * The 1-based line of a field path (`rules[1].upstreams[0].weight`) inside a JSON or YAML route document,
 * for `file:line: problem` messages. Falls back to line 1 when the path cannot be found.
 */
export function lineOfField(text: string, field: string): number {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const error = doc.errors[0];
  if (error !== undefined) return lines.linePos(error.pos[0]).line;
  const path = fieldPath(field);
  while (path.length > 0) {
    const node = doc.getIn(path, true) as Node | undefined;
    const offset = node?.range?.[0];
    if (offset !== undefined) return lines.linePos(offset).line;
    path.pop();
  }
  return 1;
}

export function fieldPath(field: string): Array<string | number> {
  const out: Array<string | number> = [];
  for (const m of field.matchAll(/([^.[\]]+)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]/g)) {
    if (m[1] !== undefined) out.push(m[1]);
    else if (m[2] !== undefined) out.push(Number(m[2]));
    else if (m[3] !== undefined) out.push(JSON.parse(`"${m[3]}"`) as string);
  }
  return out;
}
