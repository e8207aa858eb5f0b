// What a unit's relation hooks are, worked out the way Juju's uniter does: compare
// what the unit has been told of each relation (kept in its agent's state) with
// what the model store says now, and queue the hooks that close the gap.
// Deterministic and pure: the unit agent runs it in the workflow.
import type { UnitEvent } from './messages.ts';

/** One relation of a unit's application, as the model store has it now. */
export interface RelationView {
  id: number;
  /** This application's endpoint. */
  endpoint: string;
  /** The application at the other end (this one, for a peer relation). */
  remoteApp: string;
  /** Dying: every unit runs relation-departed for the others, then relation-broken. */
  dying: boolean;
  /** Remote units in the relation (peers: the other units), with their data bag's version (0: none yet). */
  units: Record<string, number>;
  /** The version of the remote application's data bag (peers: this application's; 0: none yet). */
  appVersion: number;
}

/** What a unit has been told of one relation. */
export interface RelationSeen {
  endpoint: string;
  remoteApp: string;
  units: Record<string, number>;
  appVersion: number;
}

export type RelationsSeen = Record<string, RelationSeen>;

/** A relation a new unit's first hooks include (relation-created right after install). */
export interface RelationIntro {
  id: number;
  endpoint: string;
  remoteApp: string;
}

function ev(hook: string, id: number, extra: Partial<UnitEvent> = {}): UnitEvent {
  return { hook, relationId: id, ...extra };
}

/** The relation hooks that tell a unit about every relation in `intros`, as created. */
export function introduce(seen: RelationsSeen, intros: RelationIntro[]): UnitEvent[] {
  const events: UnitEvent[] = [];
  for (const r of intros) {
    if (seen[r.id]) continue;
    seen[r.id] = { endpoint: r.endpoint, remoteApp: r.remoteApp, units: {}, appVersion: 0 };
    events.push(ev(`${r.endpoint}-relation-created`, r.id, { remoteApp: r.remoteApp, members: [] }));
  }
  return events;
}

/**
 * The hooks that bring `seen` up to `views`, and `seen` updated to match (in
 * place). Before the unit has started only relation-created (and relation-broken
 * of a relation it was told of) run; joined, changed and departed wait for start.
 *
 * Per relation, in order: created; for each remote unit that came, joined then
 * changed; changed for each remote unit whose data changed, and once (no remote
 * unit) for a change of the remote application's data; departed for each unit
 * that left; broken once, when the relation goes.
 */
export function relationDelta(seen: RelationsSeen, views: RelationView[], started: boolean): UnitEvent[] {
  const events: UnitEvent[] = [];
  const byId = new Map(views.map((v) => [String(v.id), v]));
  for (const v of views) {
    if (!v.dying && !seen[v.id]) events.push(...introduce(seen, [v]));
  }
  if (!started) {
    // a relation that went before the unit started is broken at once
    for (const [id, s] of Object.entries(seen)) {
      const v = byId.get(id);
      if (v && !v.dying) continue;
      events.push(ev(`${s.endpoint}-relation-broken`, Number(id), { remoteApp: s.remoteApp, members: [] }));
      delete seen[id];
    }
    return events;
  }
  for (const [id, s] of Object.entries(seen)) {
    const v = byId.get(id);
    const rid = Number(id);
    const gone = !v || v.dying;
    const now = gone ? {} : v.units;
    const members = () => Object.keys(s.units).sort(unitOrder);
    for (const u of Object.keys(s.units).sort(unitOrder)) {
      if (u in now) continue;
      delete s.units[u];
      events.push(
        ev(`${s.endpoint}-relation-departed`, rid, {
          remoteUnit: u,
          remoteApp: s.remoteApp,
          departingUnit: u,
          members: members(),
        }),
      );
    }
    if (gone) {
      events.push(ev(`${s.endpoint}-relation-broken`, rid, { remoteApp: s.remoteApp, members: [] }));
      delete seen[id];
      continue;
    }
    for (const [u, version] of Object.entries(now).sort(([a], [b]) => unitOrder(a, b))) {
      const known = s.units[u];
      s.units[u] = version;
      if (known === undefined) {
        const m = members();
        events.push(ev(`${s.endpoint}-relation-joined`, rid, { remoteUnit: u, remoteApp: s.remoteApp, members: m }));
        events.push(ev(`${s.endpoint}-relation-changed`, rid, { remoteUnit: u, remoteApp: s.remoteApp, members: m }));
      } else if (version > known) {
        events.push(
          ev(`${s.endpoint}-relation-changed`, rid, { remoteUnit: u, remoteApp: s.remoteApp, members: members() }),
        );
      }
    }
    if (v.appVersion > s.appVersion) {
      // the application's data changed: relation-changed with no remote unit, as
      // Juju does (also while no remote unit is in the relation yet); units joining
      // now read it in their own relation-changed
      const joining = events.some((e) => e.relationId === rid && e.hook.endsWith('-relation-joined'));
      if (!joining) {
        events.push(ev(`${s.endpoint}-relation-changed`, rid, { remoteApp: s.remoteApp, members: members() }));
      }
      s.appVersion = v.appVersion;
    }
  }
  return events;
}

/**
 * The hooks a leaving unit runs for the relations it is in, before its remove
 * hook: departed for each remote unit (the departing unit is itself, as Juju
 * tells it), then broken.
 */
export function teardown(seen: RelationsSeen, self: string): UnitEvent[] {
  const events: UnitEvent[] = [];
  for (const [id, s] of Object.entries(seen)) {
    const rid = Number(id);
    const left = Object.keys(s.units).sort(unitOrder);
    for (const [i, u] of left.entries()) {
      events.push(
        ev(`${s.endpoint}-relation-departed`, rid, {
          remoteUnit: u,
          remoteApp: s.remoteApp,
          departingUnit: self,
          members: left.slice(i + 1),
        }),
      );
    }
    events.push(ev(`${s.endpoint}-relation-broken`, rid, { remoteApp: s.remoteApp, members: [] }));
    delete seen[id];
  }
  return events;
}

/** `app/2` before `app/10`. */
function unitOrder(a: string, b: string): number {
  const [an, ai] = a.split('/');
  const [bn, bi] = b.split('/');
  return an === bn ? Number(ai) - Number(bi) : an < bn ? -1 : 1;
}
