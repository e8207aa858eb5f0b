// Controller settings from the environment: good values are taken, bad ones named.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { loadConfig } from '../controller/config.ts';
import { runCli } from './helpers/cli.ts';

describe('controller settings', () => {
  const saved = process.env.CHARMFLOW_MAX_CONCURRENT_ACTIVITIES;
  afterEach(() => {
    if (saved === undefined) delete process.env.CHARMFLOW_MAX_CONCURRENT_ACTIVITIES;
    else process.env.CHARMFLOW_MAX_CONCURRENT_ACTIVITIES = saved;
  });

  test('CHARMFLOW_MAX_CONCURRENT_ACTIVITIES bounds the worker; unset, the CPU decides', () => {
    delete process.env.CHARMFLOW_MAX_CONCURRENT_ACTIVITIES;
    assert.equal(loadConfig().maxConcurrentActivities, undefined);
    process.env.CHARMFLOW_MAX_CONCURRENT_ACTIVITIES = '8';
    assert.equal(loadConfig().maxConcurrentActivities, 8);
    for (const bad of ['0', '-3', '2.5', 'many']) {
      process.env.CHARMFLOW_MAX_CONCURRENT_ACTIVITIES = bad;
      assert.throws(() => loadConfig(), new RegExp(`CHARMFLOW_MAX_CONCURRENT_ACTIVITIES must be .*"${bad}"`));
    }
  });

  test('charmflow up refuses a bad value with a message naming it, before starting anything', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'charmflow-config-'));
    const r = await runCli(['up'], { CHARMFLOW_DATA_DIR: dataDir, CHARMFLOW_MAX_CONCURRENT_ACTIVITIES: 'lots' });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /CHARMFLOW_MAX_CONCURRENT_ACTIVITIES must be a whole number/);
  });
});
