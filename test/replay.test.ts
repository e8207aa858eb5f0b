// Recorded histories of the unit agent and the operation workflows, replayed
// against the current workflow code: a change that running workflows could not
// replay (a new activity, timer or child where the history has another) fails
// here, before it reaches a controller with workflows in flight. Record them again
// with `node --import tsx scripts/record-histories.ts` (README: Versioning workflows).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import proto from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { workflowBundlePath } from '../controller/worker.ts';
import { projectRoot } from './helpers/cli.ts';

const dir = join(projectRoot, 'test', 'fixtures', 'histories');
const EXPECTED = ['config', 'deploy', 'destroy-model', 'remove', 'resolve', 'unit-agent'];

describe('workflow replay', () => {
  const cache = mkdtempSync(join(tmpdir(), 'charmflow-replay-'));
  after(() => rmSync(cache, { recursive: true, force: true }));

  test('every recorded history replays against the current workflow code', async () => {
    const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
    // `deploy.json` is today's code; `deploy@<patch>.json` a history from before that patch
    assert.deepEqual(
      [...new Set(files.map((f) => f.replace(/(@[^.]+)?\.json$/, '')))].sort(),
      EXPECTED,
      'a history for the unit agent and each operation workflow',
    );
    const histories = files.map((f) => ({
      workflowId: f.replace(/\.json$/, ''),
      history: proto.temporal.api.history.v1.History.fromObject(JSON.parse(readFileSync(join(dir, f), 'utf8'))),
    }));
    for (const h of histories) assert.ok((h.history.events?.length ?? 0) > 10, `${h.workflowId} has its events`);
    const codePath = await workflowBundlePath(cache);
    const failures: string[] = [];
    let replayed = 0;
    for await (const result of Worker.runReplayHistories({ workflowBundle: { codePath } }, histories)) {
      replayed++;
      if (result.error) failures.push(`${result.workflowId}: ${result.error.message}`);
    }
    assert.equal(replayed, files.length);
    assert.deepEqual(failures, []);
  });
});
