// Errors out of the model store, without the statement's parameters. Both drivers
// attach what a failing statement carried: PGlite its parameters and query, Postgres
// a CONTEXT quoting the JSON it could not read and a DETAIL with the failing row.
// Any of it may be a secret (a config value, a private key), and an error travels
// far: the controller log, an activity failure in a workflow history, an
// operation's error. So every statement error is rebuilt here from the parts that
// name schema objects only, with the parameters' text cut out of the message.
import type {
  CompiledQuery,
  DatabaseConnection,
  DatabaseIntrospector,
  Dialect,
  DialectAdapter,
  Driver,
  Kysely,
  QueryCompiler,
  QueryResult,
  TransactionSettings,
} from 'kysely';

const REDACTED = '[redacted]';
/** Shorter strings are left in messages: cutting "a" out of every word helps no one and hides no secret. */
const MIN_REDACTED_LENGTH = 3;

/** A failed statement: Postgres' message (parameters cut out), its SQLSTATE and the schema objects it names. */
export class StoreError extends Error {
  override readonly name = 'StoreError';
  /** SQLSTATE, e.g. 23505 for a unique violation. */
  readonly code?: string;
  readonly table?: string;
  readonly column?: string;
  readonly constraint?: string;

  constructor(message: string, parts: { code?: string; table?: string; column?: string; constraint?: string }) {
    super(message);
    if (parts.code) this.code = parts.code;
    if (parts.table) this.table = parts.table;
    if (parts.column) this.column = parts.column;
    if (parts.constraint) this.constraint = parts.constraint;
  }
}

/** Every string a statement's parameters hold, JSON documents' values included. */
function parameterStrings(params: readonly unknown[]): string[] {
  const out: string[] = [];
  const visit = (v: unknown, depth: number) => {
    if (depth > 20) return;
    if (typeof v === 'string') {
      out.push(v);
      if (/^\s*[[{"]/.test(v)) {
        try {
          visit(JSON.parse(v), depth + 1);
        } catch {
          // not JSON: the string itself is enough
        }
      }
    } else if (Array.isArray(v)) {
      for (const x of v) visit(x, depth + 1);
    } else if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) {
      for (const x of Object.values(v)) visit(x, depth + 1);
    }
  };
  for (const p of params) visit(p, 0);
  return out;
}

/** `text` with every parameter string in it replaced by [redacted], longest first. */
export function redactParameters(text: string, params: readonly unknown[]): string {
  const strings = [...new Set(parameterStrings(params))]
    .filter((s) => s.length >= MIN_REDACTED_LENGTH)
    .sort((a, b) => b.length - a.length);
  let out = text;
  for (const s of strings) out = out.split(s).join(REDACTED);
  return out;
}

/** The error to throw in place of what a driver threw for a statement with these parameters. */
export function storeError(err: unknown, params: readonly unknown[]): StoreError {
  if (err instanceof StoreError) return err;
  const e = (err ?? {}) as {
    message?: unknown;
    code?: unknown;
    table?: unknown;
    column?: unknown;
    constraint?: unknown;
  };
  const str = (v: unknown) => (typeof v === 'string' && v.length > 0 ? v : undefined);
  const message = redactParameters(str(e.message) ?? String(err), params);
  return new StoreError(message, {
    code: str(e.code),
    table: str(e.table),
    column: str(e.column),
    constraint: str(e.constraint),
  });
}

class RedactingConnection implements DatabaseConnection {
  constructor(readonly inner: DatabaseConnection) {}

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    try {
      return await this.inner.executeQuery<R>(compiled);
    } catch (err) {
      throw storeError(err, compiled.parameters);
    }
  }

  streamQuery<R>(compiled: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    const inner = this.inner.streamQuery<R>(compiled, chunkSize);
    return (async function* () {
      try {
        yield* inner;
      } catch (err) {
        throw storeError(err, compiled.parameters);
      }
    })();
  }
}

class RedactingDriver implements Driver {
  private readonly wrapped = new WeakMap<DatabaseConnection, RedactingConnection>();

  constructor(private readonly inner: Driver) {}

  private unwrap(conn: DatabaseConnection): DatabaseConnection {
    return conn instanceof RedactingConnection ? conn.inner : conn;
  }

  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw storeError(err, []);
    }
  }

  init(): Promise<void> {
    return this.guard(() => this.inner.init());
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    const conn = await this.guard(() => this.inner.acquireConnection());
    let w = this.wrapped.get(conn);
    if (!w) {
      w = new RedactingConnection(conn);
      this.wrapped.set(conn, w);
    }
    return w;
  }

  beginTransaction(conn: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    return this.guard(() => this.inner.beginTransaction(this.unwrap(conn), settings));
  }

  commitTransaction(conn: DatabaseConnection): Promise<void> {
    return this.guard(() => this.inner.commitTransaction(this.unwrap(conn)));
  }

  rollbackTransaction(conn: DatabaseConnection): Promise<void> {
    return this.guard(() => this.inner.rollbackTransaction(this.unwrap(conn)));
  }

  releaseConnection(conn: DatabaseConnection): Promise<void> {
    return this.inner.releaseConnection(this.unwrap(conn));
  }

  destroy(): Promise<void> {
    return this.inner.destroy();
  }
}

/** `dialect`, with every statement error rebuilt by storeError. */
export class RedactingDialect implements Dialect {
  constructor(private readonly inner: Dialect) {}
  createAdapter(): DialectAdapter {
    return this.inner.createAdapter();
  }
  createDriver(): Driver {
    return new RedactingDriver(this.inner.createDriver());
  }
  createQueryCompiler(): QueryCompiler {
    return this.inner.createQueryCompiler();
  }
  // biome-ignore lint/suspicious/noExplicitAny: Kysely's own signature
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return this.inner.createIntrospector(db);
  }
}
