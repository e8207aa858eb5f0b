// A charm argument as commands take it: a charm directory or `.charm` file (packed
// and uploaded), or the name of a charm the controller already has (`name`, `name:REV`).
import { existsSync, statSync } from 'node:fs';
import type { CharmInfo, CharmUploadAnswer } from '../api/routes/charms.ts';
import { loadCharm, packCharm } from '../charm/charm-archive.ts';
import { CharmValidationError } from '../charm/metadata.ts';
import { type ApiClient, CliError } from './api-client.ts';
import { isTsCharm, packTsCharm } from './commands/charm-dev.ts';

export interface CharmRef {
  name: string;
  revision: number;
  /** True when this call stored a new revision. */
  created?: boolean;
}

const NAME_REF_RE = /^([a-z][a-z0-9-]*)(?::(\d+))?$/;

/** Packs a charm directory or `.charm` file into the normalized archive the store keeps. */
export async function packCharmPath(path: string): Promise<{ name: string; archive: Buffer; sha256: string }> {
  try {
    const loaded = await loadCharm(path);
    return { name: loaded.meta.name, archive: await packCharm(loaded.files), sha256: loaded.hash };
  } catch (err) {
    if (err instanceof CharmValidationError) throw new CliError(`invalid charm ${path}: ${err.message}`);
    throw err;
  }
}

/**
 * Upload the charm at `pathOrName` when it is a path, else check the named charm
 * (optionally one revision) exists on the controller. Returns what to deploy.
 */
export async function uploadCharm(api: ApiClient, pathOrName: string): Promise<CharmRef> {
  if (existsSync(pathOrName)) {
    // a TypeScript charm's source folder is bundled first, as `charmflow pack` does
    const ts = statSync(pathOrName).isDirectory() && isTsCharm(pathOrName);
    const { archive } = ts ? await packTsCharm(pathOrName) : await packCharmPath(pathOrName);
    const { charm } = await api.request<CharmUploadAnswer>('POST', '/v1/charms', archive);
    return { name: charm.name, revision: charm.revision, created: charm.created };
  }
  const m = NAME_REF_RE.exec(pathOrName);
  if (!m) {
    throw new CliError(
      `"${pathOrName}" is neither a charm directory, a .charm file, nor the name of an uploaded charm`,
    );
  }
  const [, name, rev] = m;
  const query = rev !== undefined ? `?revision=${rev}` : '';
  // A 404 answers `charm "x" not found` (or names the revision).
  const info = await api.get<CharmInfo>(`/v1/charms/${encodeURIComponent(name!)}${query}`);
  return { name: info.name, revision: info.revision };
}
