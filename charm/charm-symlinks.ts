// Where a charm's symlinks lead, worked out the way the kernel will once the charm
// is on a machine: component by component against the archive's own tree, links
// followed wherever they occur (so `a/b/..` after `a/b -> ..` climbs from the
// link's target, not from `a`), at most 40 links per lookup as Linux allows.
import { CharmValidationError } from './metadata.ts';

/** Linux's MAXSYMLINKS: links followed in one path lookup before ELOOP. */
export const MAX_SYMLINK_HOPS = 40;
/** PATH_MAX: a longer link target is never a real one. */
export const MAX_SYMLINK_TARGET_BYTES = 4096;

type Resolution =
  | { ok: true; parts: readonly string[]; hops: number }
  // `via`: the link whose own target broke the rule ('' until the walk's caller names it).
  | { ok: false; problem: 'outside' | 'absolute' | 'loop' | 'deep'; via: string };

/** The charm's symlinks, resolved on demand and remembered, so a charm of many links costs each one once. */
export class CharmSymlinks {
  private readonly links = new Map<string, string>();
  private readonly resolved = new Map<string, Resolution>();
  private readonly resolving = new Set<string>();

  constructor(files: ReadonlyArray<{ readonly path: string; readonly symlinkTarget?: string }>) {
    for (const f of files) if (f.symlinkTarget !== undefined) this.links.set(f.path, f.symlinkTarget);
  }

  /**
   * Throws CharmValidationError (file: the link, field: 'symlink') unless every
   * link's final target lies inside the charm: no absolute target, no climbing
   * above the root at any step of any link it goes through, no loop.
   */
  checkAll(): void {
    for (const [path, target] of this.links) {
      if (target === '' || Buffer.byteLength(target) > MAX_SYMLINK_TARGET_BYTES) {
        throw new CharmValidationError(path, 'symlink', `target of ${Buffer.byteLength(target)} bytes is not a path`);
      }
      const r = this.resolveLink(path);
      if (!r.ok) throw linkError(path, target, r);
    }
  }

  /** The charm path `path` leads to through links (missing parts taken as written); throws as checkAll does. */
  resolve(path: string): string {
    const r = this.walk(path.split('/'), [], 0);
    if (!r.ok) throw linkError(path, this.links.get(path) ?? path, r);
    return r.parts.join('/');
  }

  private resolveLink(path: string): Resolution {
    const known = this.resolved.get(path);
    if (known) return known;
    if (this.resolving.has(path)) return { ok: false, problem: 'loop', via: path };
    const target = this.links.get(path)!;
    this.resolving.add(path);
    let r: Resolution;
    if (target.startsWith('/')) r = { ok: false, problem: 'absolute', via: path };
    else r = this.walk(target.split('/'), path.split('/').slice(0, -1), 1);
    if (!r.ok && r.via === '') r = { ...r, via: path };
    this.resolving.delete(path);
    this.resolved.set(path, r);
    return r;
  }

  /** Follow `segments` from the directory `base` (resolved parts); `hops` links were followed to get here. */
  private walk(segments: readonly string[], base: readonly string[], hops: number): Resolution {
    const parts = [...base];
    for (const seg of segments) {
      if (seg === '' || seg === '.') continue;
      if (seg === '..') {
        if (parts.length === 0) return { ok: false, problem: 'outside', via: '' };
        parts.pop();
        continue;
      }
      parts.push(seg);
      const here = parts.join('/');
      if (!this.links.has(here)) continue;
      const r = this.resolveLink(here);
      if (!r.ok) return r;
      hops += r.hops;
      if (hops > MAX_SYMLINK_HOPS) return { ok: false, problem: 'deep', via: here };
      parts.splice(0, parts.length, ...r.parts);
    }
    return { ok: true, parts, hops };
  }
}

function linkError(path: string, target: string, r: Extract<Resolution, { ok: false }>): CharmValidationError {
  const through = r.via && r.via !== path ? ` (through the symlink "${r.via}")` : '';
  const problem = {
    outside: `target "${target}" points outside the charm${through}`,
    absolute: `target "${target}" points outside the charm${through}`,
    loop: `target "${target}" is a symlink loop${through}`,
    deep: `target "${target}" goes through more than ${MAX_SYMLINK_HOPS} symlinks${through}`,
  }[r.problem];
  return new CharmValidationError(path, 'symlink', problem);
}
