import { test } from 'node:test';
import assert from 'node:assert/strict';
// the whole service graph, as `dynamic-lb serve` imports it
import '../../src/app.ts';
import { compileRegex, re2Loaded } from '../../src/route/regex.ts';
import { parseRouteConfig } from '../../src/route/parse.ts';

test('the RE2 engine is loaded on the first pattern compiled, not when the service is imported', () => {
  assert.equal(re2Loaded(), false, 'importing the service must not instantiate the WebAssembly engine');
  parseRouteConfig('10.0.0.1:80');
  assert.equal(re2Loaded(), false, 'a route without a regex condition does not load it');
  const matcher = compileRegex('^(a|b)+$');
  assert.equal(re2Loaded(), true);
  assert.equal(matcher.test('abba'), true);
  assert.equal(matcher.test('abc'), false);
  assert.throws(() => compileRegex('('), SyntaxError);
  assert.equal(compileRegex('^v[0-9]+$').test('v12'), true, 'later patterns use the loaded engine');
});
