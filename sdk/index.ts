// @charmflow/ops: write Juju-contract charms in TypeScript.
// See the README's "TypeScript charms" section for a tutorial.
export {
  type ConfigValue,
  HookToolError,
  type LogLevel,
  type ModelBackend,
  RelationNotFoundError,
  type SecretAddOptions,
  type SecretInfo,
  SecretNotFoundError,
  type SecretRef,
  type SettableStatus,
  type StatusInfo,
} from './backend.ts';
export { Charm, type CharmClass, type DispatchInfo, Framework, flattenResults, type Widen } from './charm.ts';
export {
  ActionEvent,
  type ActionResults,
  type AnyCharmTypes,
  type CharmTypes,
  CollectStatusEvent,
  type CollectStatusEventName,
  type DeferredEvent,
  type EventName,
  type EventOf,
  type Handler,
  HookEvent,
  type JsonObject,
  type JsonValue,
  type LifecycleEventName,
  RelationEvent,
  type RelationEventKind,
  SecretEvent,
  type SecretEventName,
} from './events.ts';
export { dispatchInfoFromEnv, run } from './main.ts';
export {
  Application,
  DataAccessError,
  DataBag,
  formatPort,
  LeaderData,
  Logger,
  type Port,
  parsePort,
  Relation,
  Secret,
  Secrets,
  Unit,
} from './model.ts';
export { highestPriority, type ReadStatus, Status } from './status.ts';
export { createToolBackend, type ToolRunner } from './tool-backend.ts';
