import { LineCounter, isMap, isPair, isScalar, isSeq, parseDocument, type Node } from 'yaml';

/**
 * YAML text → plain JS value, in time linear in the text.
 *
 * `yaml`'s own `uniqueKeys` check compares each new map key with every earlier one (quadratic: a 15k-key
 * map took 2–5 s). Here the document is parsed without it and each map's keys are checked once, through a
 * Set, while walking the node tree — which also bounds the nesting depth. The walk uses an explicit stack,
 * so a hostile document cannot overflow the call stack. Aliases are leaves of the walk (yaml's `maxAliasCount`, 100,
 * still bounds their expansion in `toJS`).
 *
 * Keys are compared as the JS object will see them (`1` and `"1"` are the same property), so a duplicate is
 * never silently overwritten. Non-scalar keys (`? [a, b]`) are not compared, as yaml did not either.
 */
export class YamlError extends Error {}

export function parseYamlLinear(text: string, options: { maxDepth?: number } = {}): unknown {
  const lines = new LineCounter();
  const doc = parseDocument(text, { schema: 'core', uniqueKeys: false, prettyErrors: false, lineCounter: lines });
  const first = doc.errors[0];
  if (first !== undefined)
    throw new YamlError(`${first.message.split('\n')[0] as string}${first.pos ? ` at line ${lines.linePos(first.pos[0]).line}` : ''}`);
  const maxDepth = options.maxDepth ?? Infinity;
  const stack: Array<{ node: unknown; depth: number }> = [{ node: doc.contents, depth: 1 }];
  while (stack.length > 0) {
    const { node, depth } = stack.pop() as { node: unknown; depth: number };
    if (isMap(node) || isSeq(node)) {
      if (depth > maxDepth)
        throw new YamlError(`nesting deeper than ${maxDepth} levels at line ${lines.linePos((node as Node).range?.[0] ?? 0).line}`);
      if (isMap(node)) {
        const seen = new Set<string>();
        for (const pair of node.items) {
          if (isScalar(pair.key)) {
            const name = String(pair.key.value);
            if (seen.has(name))
              throw new YamlError(`duplicate key ${JSON.stringify(name)} at line ${lines.linePos(pair.key.range?.[0] ?? 0).line}`);
            seen.add(name);
          } else if (pair.key !== null) stack.push({ node: pair.key, depth: depth + 1 });
          stack.push({ node: pair.value, depth: depth + 1 });
        }
      } else {
        for (const item of node.items) stack.push({ node: isPair(item) ? item.value : item, depth: depth + 1 });
      }
    }
  }
  return doc.toJS();
}
