// The one seam between the SDK and the world: everything the model reads or
// writes goes through a ModelBackend. In a hook it is the hook tools
// (tool-backend.ts); under the test harness it is an in-memory state
// (testing.ts). Both speak the same typed calls, so a charm cannot tell them apart.

/** A config value as `config-get --format=json` gives it. */
export type ConfigValue = string | number | boolean;

/** The statuses a charm may set (Juju alone sets error, unknown and terminated). */
export type SettableStatus = 'active' | 'blocked' | 'maintenance' | 'waiting';

/** A status as `status-get` reports it. */
export interface StatusInfo {
  status: string;
  message: string;
}

/** A secret's metadata, as `secret-info-get` reports it. */
export interface SecretInfo {
  id: string;
  label?: string;
  description?: string;
  owner?: 'application' | 'unit';
  revision?: number;
  rotation?: string;
  expiry?: string;
}

export interface SecretAddOptions {
  label?: string;
  description?: string;
  /** Who owns the secret: the application (default, leader only) or this unit. */
  owner?: 'application' | 'unit';
}

/** Where a secret is looked up: by id, by label, or both (the id wins, the label is then (re)attached). */
export interface SecretRef {
  id?: string;
  label?: string;
}

/**
 * The hook-side calls the SDK needs. Implementations throw {@link HookToolError}
 * (or a subclass) when the tool fails.
 */
export interface ModelBackend {
  configGet(): Record<string, ConfigValue>;
  isLeader(): boolean;
  /** Relation ids (`endpoint:N`) of one endpoint. */
  relationIds(endpoint: string): string[];
  /** Remote units in a relation. */
  relationList(relationId: string): string[];
  /** The remote application of a relation, or null when it is not known yet. */
  relationRemoteApp(relationId: string): string | null;
  /** One data bag: `owner` is a unit name or, with `app`, an application name. */
  relationGet(relationId: string, owner: string, app: boolean): Record<string, string>;
  /** Writes keys of this unit's (or, for the leader, this application's) bag; an empty value deletes a key. */
  relationSet(relationId: string, data: Record<string, string>, app: boolean): void;
  statusGet(app: boolean): StatusInfo;
  statusSet(status: SettableStatus, message: string, app: boolean): void;
  applicationVersionSet(version: string): void;
  leaderGet(): Record<string, string>;
  leaderSet(data: Record<string, string>): void;
  actionGet(): Record<string, unknown>;
  /** Flat dotted keys (`a.b` nests), string values. */
  actionSet(results: Record<string, string>): void;
  actionFail(message: string): void;
  actionLog(message: string): void;
  openPort(spec: string): void;
  closePort(spec: string): void;
  openedPorts(): string[];
  /** `unit-get private-address` / `public-address`. */
  unitAddress(kind: 'private' | 'public'): string;
  /** Charm state kept by the controller for this unit, committed with the hook (state-get). */
  stateGet(): Record<string, string>;
  /** Writes charm state keys; an empty value deletes a key (state-set). */
  stateSet(data: Record<string, string>): void;
  log(level: LogLevel, message: string): void;
  secretGet(ref: SecretRef, opts: { refresh?: boolean; peek?: boolean }): Record<string, string>;
  secretInfoGet(ref: SecretRef): SecretInfo;
  secretAdd(content: Record<string, string>, opts: SecretAddOptions): string;
  secretSet(id: string, content: Record<string, string>, opts: { label?: string; description?: string }): void;
  secretGrant(id: string, relationId: string, unit?: string): void;
  secretRevoke(id: string, relationId: string, unit?: string): void;
  secretRemove(id: string, revision?: number): void;
  secretIds(): string[];
}

export type LogLevel = 'DEBUG' | 'INFO' | 'WARNING' | 'ERROR';

/** A hook tool failed: its name, exit code and the message it printed (without `ERROR `). */
export class HookToolError extends Error {
  constructor(
    readonly tool: string,
    readonly exitCode: number,
    message: string,
  ) {
    super(`${tool}: ${message}`);
    this.name = 'HookToolError';
  }
}

/** The relation named is not (or no longer) there. */
export class RelationNotFoundError extends HookToolError {
  override name = 'RelationNotFoundError';
}

/** The secret named does not exist or is not granted to this unit. */
export class SecretNotFoundError extends HookToolError {
  override name = 'SecretNotFoundError';
}
