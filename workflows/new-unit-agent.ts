// The first state of a new unit's agent (deploy, add-unit, scale, a migration's new
// units): install, relation-created for each relation its application is in, the
// leader hook, config-changed and start, in Juju's order. Pure: run by the deploy
// workflow (agents it starts itself) and by the activity that starts them for it.
import type { UnitEvent } from './messages.ts';
import { introduce, type RelationIntro, type RelationsSeen } from './relations.ts';
import type { UnitAgentState } from './unit-agent.ts';

/** Where new units are and what their application is in. */
export interface UnitsLaunch {
  model: string;
  modelUuid: string;
  application: string;
  /** The charm has endpoints: its units take part in relations. */
  relatable?: boolean;
  /** The application's relations when the units were added (peers, integrations). */
  relations?: RelationIntro[];
}

/**
 * The agent's first state. With `notify`, the workflow of that id is told of every
 * failure, and of success at the end (start); without, nobody is signalled (the
 * deploy follows its units in the model store).
 */
export function newUnitAgentState(
  launch: UnitsLaunch,
  unit: { unit: string; leader: boolean },
  settings: { updateStatusMs?: number } | undefined,
  notify?: string,
): UnitAgentState {
  const tell = notify === undefined ? {} : { notify, quiet: true };
  const seen: RelationsSeen = {};
  const created = introduce(seen, launch.relations ?? []).map((e) => ({ ...e, ...tell }));
  const queue: UnitEvent[] = [
    { hook: 'install', ...tell },
    ...created,
    { hook: unit.leader ? 'leader-elected' : 'leader-settings-changed', ...tell },
    { hook: 'config-changed', ...tell },
    { hook: 'start', ...(notify === undefined ? {} : { notify }) },
  ];
  const relating = launch.relatable ? { relatable: true, started: false, relations: seen } : {};
  return {
    ref: { model: launch.model, modelUuid: launch.modelUuid, unit: unit.unit },
    queue,
    seq: 0,
    prepared: false,
    ...relating,
    ...settings,
  };
}
