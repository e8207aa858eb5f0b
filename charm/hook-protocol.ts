// The wire contract between the controller and the machine-side hook runner
// (charm/runtime/runner.py). The controller sends one HookContext as JSON on the
// runner's stdin; the runner streams HookEvent JSON lines on stdout, ending with
// exactly one `result` event. See ../shared/DESIGN.md, "The hook runtime".
import { z } from 'zod';

export const JUJU_VERSION = '3.6.4';

const StringMap = z.record(z.string(), z.string());

export const StatusValue = z.object({
  status: z.string(),
  message: z.string().default(''),
});

export const RelationSnapshot = z.object({
  /** Numeric relation id; JUJU_RELATION_ID is `${endpoint}:${id}`. */
  id: z.number().int().nonnegative(),
  endpoint: z.string(),
  interface: z.string(),
  role: z.enum(['provides', 'requires', 'peer']),
  remoteApplication: z.string(),
  /** Data bags: unit name or application name -> settings. Includes this unit and its application. */
  data: z.record(z.string(), StringMap),
  /** Remote units currently in the relation (for peers: the other units of this app). */
  units: z.array(z.string()),
});
export type RelationSnapshot = z.infer<typeof RelationSnapshot>;

/** A secret this unit owns (its application's, for every unit of it), as a hook sees it. */
export const OwnedSecret = z.object({
  /** The bare id (20 characters); tools print `secret:<id>`. */
  id: z.string(),
  owner: z.enum(['application', 'unit']),
  label: z.string().default(''),
  description: z.string().default(''),
  expiry: z.string().nullable().default(null),
  rotation: z.string().nullable().default(null),
  /** The latest revision, and every revision still kept. */
  revision: z.number().int(),
  revisions: z.array(z.number().int()),
  /** The latest revision's content. */
  content: StringMap,
  /** Grants: the application or unit, and the relation it goes with. */
  access: z.array(z.object({ target: z.string(), relation: z.number().int() })).default([]),
});

/** A secret granted to this unit (through a relation), as a hook sees it. */
export const GrantedSecret = z.object({
  id: z.string(),
  /** The label this unit gave it (secret-get --label). */
  label: z.string().default(''),
  /** The revision the unit tracks (null: it never read the secret) and its content. */
  revision: z.number().int().nullable(),
  content: StringMap.nullable(),
  latestRevision: z.number().int(),
  latestContent: StringMap,
});

export const HookContext = z.object({
  /** Unique per hook execution and stable across retries of the same execution. */
  contextId: z.string().regex(/^[A-Za-z0-9._-]+$/),
  kind: z.enum(['hook', 'action']),
  /** Hook name (`install`, `db-relation-changed`) or action name. */
  name: z.string(),
  unit: z.string(),
  application: z.string(),
  model: z.object({ name: z.string(), uuid: z.string() }),
  machineId: z.string(),
  availabilityZone: z.string().default(''),
  /** Absolute path of the unit's charm dir on the machine (cwd of the hook; writable, persistent). */
  charmDir: z.string(),
  /** Absolute path of the unit's state dir on the machine (holds .hooks/<contextId>/). */
  unitDir: z.string(),
  /** Absolute path of the dir holding the hook tool symlinks (prepended to PATH). */
  toolsDir: z.string(),
  jujuVersion: z.string().default(JUJU_VERSION),
  /** Typed config values; options with no value and no default are absent. */
  config: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
  isLeader: z.boolean(),
  leaderSettings: StringMap,
  relations: z.array(RelationSnapshot),
  /** Set for relation hooks. */
  relation: z
    .object({
      id: z.number().int(),
      remoteUnit: z.string().optional(),
      remoteApp: z.string().optional(),
      departingUnit: z.string().optional(),
    })
    .optional(),
  privateAddress: z.string(),
  publicAddress: z.string(),
  /** Currently opened ports, as `80/tcp`, `1000-2000/udp`, `icmp`. */
  ports: z.array(z.string()),
  unitStatus: StatusValue,
  applicationStatus: StatusValue,
  /** Statuses of this application's units, for `status-get --application`: given to the leader only. */
  unitStatuses: z.record(z.string(), StatusValue).default({}),
  /** The names of this application's units (for `goal-state`), given to the other units. */
  applicationUnits: z.array(z.string()).default([]),
  charmState: StringMap.default({}),
  goalState: z.record(z.string(), z.unknown()).default({}),
  action: z
    .object({
      id: z.string(),
      params: z.record(z.string(), z.unknown()),
    })
    .optional(),
  /** Juju secrets the unit owns or has been granted, with their content (secret-get). */
  secrets: z
    .object({ owned: z.array(OwnedSecret).default([]), granted: z.array(GrantedSecret).default([]) })
    .default({ owned: [], granted: [] }),
  /**
   * A per-hook key (base64) the hook tools seal secret content with in what outlives
   * the hook (changes.json, result.json); it leaves the machine with the context.
   */
  secretKey: z.string().optional(),
  /** secret-changed, secret-remove, ...: JUJU_SECRET_ID, JUJU_SECRET_LABEL, JUJU_SECRET_REVISION. */
  secretEvent: z
    .object({ id: z.string(), label: z.string().optional(), revision: z.number().int().optional() })
    .optional(),
  /** Kill the hook (whole process group) after this long. */
  timeoutSeconds: z.number().int().positive().default(3600),
});
export type HookContext = z.infer<typeof HookContext>;
export type HookContextInput = z.input<typeof HookContext>;

export const SecretOp = z.discriminatedUnion('op', [
  z.object({
    op: z.literal('add'),
    id: z.string().regex(/^[0-9a-v]{20}$/),
    owner: z.enum(['application', 'unit']),
    content: z.string(),
    label: z.string().optional(),
    description: z.string().optional(),
    expire: z.string().optional(),
    rotate: z.string().optional(),
  }),
  z.object({
    op: z.literal('set'),
    id: z.string(),
    content: z.string().optional(),
    label: z.string().optional(),
    description: z.string().optional(),
    expire: z.string().optional(),
    rotate: z.string().optional(),
  }),
  z.object({ op: z.literal('remove'), id: z.string(), revision: z.number().int().optional() }),
  z.object({
    op: z.literal('grant'),
    id: z.string(),
    relationId: z.number().int(),
    app: z.string(),
    unit: z.string().optional(),
  }),
  z.object({
    op: z.literal('revoke'),
    id: z.string(),
    relationId: z.number().int().optional(),
    app: z.string().optional(),
    unit: z.string().optional(),
  }),
  /** A consumer moved to a revision (secret-get's first read, --refresh) or labelled the secret. */
  z.object({
    op: z.literal('track'),
    id: z.string(),
    revision: z.number().int().optional(),
    label: z.string().optional(),
  }),
]);
export type SecretOp = z.infer<typeof SecretOp>;

/** What a successful hook commits. Keys with null values are deletions. */
export const HookChanges = z.object({
  /** relation id (as string) -> { unit?: settings, app?: settings } */
  relationSettings: z
    .record(
      z.string(),
      z.object({
        unit: z.record(z.string(), z.string().nullable()).optional(),
        app: z.record(z.string(), z.string().nullable()).optional(),
      }),
    )
    .default({}),
  leaderSettings: z.record(z.string(), z.string().nullable()).default({}),
  charmState: z.record(z.string(), z.string().nullable()).default({}),
  /** The full set of opened ports after the hook. */
  ports: z.array(z.string()),
  actionResults: z.record(z.string(), z.unknown()).default({}),
  actionFailed: z.string().nullable().default(null),
  /**
   * What the hook did to secrets, in order (the hook tools' records); content is
   * sealed under the hook's secretKey. Applied by activities/charm-secrets.ts.
   */
  secretOps: z.array(SecretOp).default([]),
});
export type HookChanges = z.infer<typeof HookChanges>;

export const HookEvent = z.discriminatedUnion('type', [
  /** juju-log: level is DEBUG|INFO|WARNING|ERROR|TRACE. */
  z.object({ type: z.literal('log'), ts: z.number(), level: z.string(), message: z.string() }),
  /** status-set: takes effect at once. */
  z.object({
    type: z.literal('status'),
    ts: z.number(),
    scope: z.enum(['unit', 'application']),
    status: z.string(),
    message: z.string(),
  }),
  z.object({ type: z.literal('app-version'), ts: z.number(), version: z.string() }),
  z.object({ type: z.literal('action-log'), ts: z.number(), message: z.string() }),
  /** A line the hook printed on stdout or stderr. */
  z.object({ type: z.literal('output'), ts: z.number(), stream: z.enum(['stdout', 'stderr']), line: z.string() }),
  z.object({
    type: z.literal('result'),
    ts: z.number(),
    /** Hook exit code; null when killed (timeout or signal). */
    exitCode: z.number().int().nullable(),
    /** True when the charm has neither `dispatch` nor the hook file: nothing ran. */
    skipped: z.boolean(),
    /** True when this execution had already finished before (a retried call): nothing ran again. */
    replayed: z.boolean(),
    timedOut: z.boolean(),
    /** How long the hook itself ran on the machine. */
    durationMs: z.number(),
    /** How long it waited for the machine lock (another unit's hook) before that. */
    lockWaitMs: z.number().optional(),
    /** Last lines of stdout+stderr, for error messages. */
    tail: z.array(z.string()),
    changes: HookChanges,
  }),
]);
export type HookEvent = z.infer<typeof HookEvent>;
export type HookResult = Extract<HookEvent, { type: 'result' }>;
