// Unit and application statuses, and how collect-status picks one.
import type { SettableStatus, StatusInfo } from './backend.ts';

/** A status a charm sets: one of Juju's settable statuses and a message. */
export interface Status {
  readonly name: SettableStatus;
  readonly message: string;
}

/** Builders for the four statuses a charm may set: `Status.active()`, `Status.blocked('needs a kv relation')`. */
export const Status = {
  active: (message = ''): Status => ({ name: 'active', message }),
  blocked: (message: string): Status => ({ name: 'blocked', message }),
  maintenance: (message: string): Status => ({ name: 'maintenance', message }),
  waiting: (message: string): Status => ({ name: 'waiting', message }),
};

/** A status as read back (it may be one Juju set: error, unknown, terminated). */
export type ReadStatus = StatusInfo;

// The order ops uses to pick the status to show among those collect-status
// handlers offered: the most pressing first.
const PRIORITY: Record<SettableStatus, number> = { blocked: 0, maintenance: 1, waiting: 2, active: 3 };

/** The most pressing of several statuses (blocked > maintenance > waiting > active); undefined for none. */
export function highestPriority(statuses: readonly Status[]): Status | undefined {
  let best: Status | undefined;
  for (const s of statuses) if (best === undefined || PRIORITY[s.name] < PRIORITY[best.name]) best = s;
  return best;
}
