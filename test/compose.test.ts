// The production compose file parses with the Compose Specification's reference
// loader (what `docker compose config` runs); Docker itself cannot run here.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { projectRoot } from './helpers/cli.ts';

const hasGo = spawnSync('go', ['version']).status === 0;

describe('docker-compose.yml', { skip: hasGo ? undefined : 'Go is needed to build the compose checker' }, () => {
  const bin = join(projectRoot, 'tools', 'bin', 'compose-check');
  before(() => {
    if (existsSync(bin)) return;
    mkdirSync(join(projectRoot, 'tools', 'bin'), { recursive: true });
    const r = spawnSync('go', ['build', '-o', bin, '.'], {
      cwd: join(projectRoot, 'scripts', 'compose-check'),
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
  });

  test('loads and has the production services', () => {
    const r = spawnSync(bin, [join(projectRoot, 'docker-compose.yml')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const project = parse(r.stdout);
    for (const s of ['temporal', 'temporal-db', 'temporal-ui', 'model-store', 'api', 'worker']) {
      assert.ok(project.services[s], `service ${s}`);
    }
    assert.equal(project.services.worker.deploy.replicas, 2);
    assert.deepEqual(project.services.worker.command, ['worker']);
    assert.match(project.services.api.environment.DATABASE_URL, /^postgres:\/\/.*@model-store:5432\//);
    assert.equal(project.services.api.environment.TEMPORAL_ADDRESS, 'temporal:7233');
    assert.ok(existsSync(join(projectRoot, 'Dockerfile')));
  });

  test('the checker rejects a broken file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cf-compose-'));
    const file = join(dir, 'docker-compose.yml');
    writeFileSync(file, 'services:\n  a:\n    image: x\n    depends_on: [missing]\n');
    const r = spawnSync(bin, [file], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /undefined service "missing"/);
  });
});
