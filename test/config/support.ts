import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config/load.ts';
import { ConfigError } from '../../src/errors.ts';

/** The ConfigError `text` raises when parsed as file svc.yaml; fails the test when it loads. */
export function configError(text: string, env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    parseConfig(text, 'svc.yaml', env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the config to be rejected');
}
