import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { chmod, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
// Units on the local cloud run on the controller's own host, beside its admin
// token, its SSH key and its store. When the controller runs as root, each local
// machine gets a uid and gid of its own (no passwd entry needed): its hooks run as
// that uid in a sandbox directory it owns, and everything of the controller's
// stays readable by root only. Run as another user, the controller cannot change
// uid, and its local units can read what that user can: use SSH machines (or run
// the controller as root) when charms are not trusted. CHARMFLOW_LOCAL_ISOLATION=off
// runs local units as the controller's user even under root.

/** uids of local machines start here: far above any login user or subordinate range. */
export const LOCAL_UID_BASE = 1_500_000_000;

export function localIsolationEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return process.getuid?.() === 0 && env.CHARMFLOW_LOCAL_ISOLATION !== 'off';
}

/**
 * The uid (and gid) of the local machine at `127.<net>.<hi>.<lo>`: addresses are
 * unique among a controller's local machines, and so are these.
 */
export function localMachineUid(address: string): number {
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address);
  if (!m) throw new Error(`not a local machine address: ${address}`);
  const [net, hi, lo] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return LOCAL_UID_BASE + net * 65_536 + hi * 256 + lo;
}

// once per data dir (a process may run more than one controller: tests do)
const isolating = new Map<string, Promise<void>>();
/**
 * The data dir becomes passable (0711) so a local machine can reach its own
 * directory under machines/; whatever else is in it is made the controller's
 * alone first: files 0600, directories 0700.
 */
export function isolateDataDir(dataDir: string): Promise<void> {
  const known = isolating.get(dataDir);
  if (known) return known;
  const work = (async () => {
    for (const entry of await readdir(dataDir, { withFileTypes: true })) {
      const path = join(dataDir, entry.name);
      if (entry.name === 'machines') continue;
      if (entry.isDirectory()) await chmod(path, 0o700);
      else if (entry.isFile()) await chmod(path, 0o600);
    }
    await chmod(dataDir, 0o711);
  })().catch((err) => {
    isolating.delete(dataDir);
    throw err;
  });
  isolating.set(dataDir, work);
  return work;
}

/** Whether every directory above `path` lets other users pass (the x bit for others). */
function passable(path: string): boolean {
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    try {
      if ((statSync(dir).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
    if (dir === dirname(dir)) return true;
  }
}

/**
 * Where local machines' directories go: `<data dir>/machines`, unless isolated
 * machines could not reach it (a data dir under root's 0700 home), then
 * `/var/lib/charmflow/local-machines/<data dir hash>`.
 */
export function localMachinesDir(dataDir: string): string {
  const inside = join(dataDir, 'machines');
  if (!localIsolationEnabled() || passable(dataDir)) return inside;
  const tag = createHash('sha256').update(dataDir).digest('hex').slice(0, 12);
  return join('/var/lib/charmflow/local-machines', tag);
}
