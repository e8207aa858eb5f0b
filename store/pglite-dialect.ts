// Kysely dialect for PGlite (Postgres compiled to WASM, in process). PGlite has one
// connection, so connections are handed out one at a time: a transaction holds
// it until commit and no other query can interleave.
import type { PGlite, Results } from '@electric-sql/pglite';
import {
  type CompiledQuery,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  type Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type QueryCompiler,
  type QueryResult,
} from 'kysely';

/** A statement seen this often is prepared (PREPARE) and run with EXECUTE from then on. */
const PREPARE_AFTER = 2;
/** Prepared statements kept at most (least recently used go first). */
const MAX_PREPARED = 200;

/** `value` as a Postgres string literal, or undefined when it is not a plain value. */
function literal(value: unknown): string | undefined {
  let text: string;
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'string') text = value;
  else if (typeof value === 'number' && Number.isFinite(value)) text = String(value);
  else if (typeof value === 'bigint' || typeof value === 'boolean') text = String(value);
  else return undefined;
  // standard_conforming_strings is on (checked): only the quote needs doubling
  return text.includes('\0') ? undefined : `'${text.replaceAll("'", "''")}'`;
}

/**
 * Parsing and planning cost PGlite about as much as running the small statements
 * the controller repeats for every hook. A parameterized statement seen twice is
 * PREPAREd once, and EXECUTEd with its arguments as quoted literals from then on,
 * which is what binding them as text does; Postgres re-plans it by itself after
 * a schema change. Arguments other than strings, numbers, booleans and nulls, a
 * statement Postgres cannot prepare, and the first sightings take the plain path.
 */
class StatementCache {
  private readonly seen = new Map<string, number>();
  private readonly prepared = new Map<string, string>();
  private readonly refused = new Set<string>();
  private counter = 0;
  private conforming: boolean | undefined;

  constructor(private readonly pg: PGlite) {}

  /**
   * The EXECUTE for this statement, preparing it if it is due; undefined: run it
   * plainly. Statements are prepared outside transactions only, so a failure
   * means the statement cannot be prepared, not that a transaction was aborted.
   */
  async executeFor(sqlText: string, params: readonly unknown[], inTransaction: boolean): Promise<string | undefined> {
    if (params.length === 0 || this.refused.has(sqlText)) return undefined;
    const args = params.map(literal);
    if (args.some((a) => a === undefined)) return undefined;
    let name = this.prepared.get(sqlText);
    if (name) {
      // most recently used last
      this.prepared.delete(sqlText);
      this.prepared.set(sqlText, name);
    } else {
      const count = (this.seen.get(sqlText) ?? 0) + 1;
      if (count < PREPARE_AFTER || inTransaction) {
        if (this.seen.size >= MAX_PREPARED * 4) this.seen.clear();
        this.seen.set(sqlText, count);
        return undefined;
      }
      this.seen.delete(sqlText);
      this.conforming ??=
        (await this.pg.query<{ on: string }>('SELECT current_setting($1) AS on', ['standard_conforming_strings']))
          .rows[0]?.on === 'on';
      if (!this.conforming) return undefined;
      name = `cf_stmt_${++this.counter}`;
      try {
        await this.pg.exec(`PREPARE ${name} AS ${sqlText}`);
      } catch {
        this.refused.add(sqlText);
        return undefined;
      }
      this.prepared.set(sqlText, name);
      if (this.prepared.size > MAX_PREPARED) {
        const [oldest, oldName] = this.prepared.entries().next().value as [string, string];
        this.prepared.delete(oldest);
        await this.pg.exec(`DEALLOCATE ${oldName}`).catch(() => {});
      }
    }
    return `EXECUTE ${name}(${args.join(', ')})`;
  }

  async forget(sqlText: string): Promise<void> {
    const name = this.prepared.get(sqlText);
    if (!name) return;
    this.prepared.delete(sqlText);
    await this.pg.exec(`DEALLOCATE ${name}`).catch(() => {});
  }
}

class PGliteConnection implements DatabaseConnection {
  private readonly statements: StatementCache;
  /** Set by the driver between BEGIN and COMMIT/ROLLBACK. */
  inTransaction = false;

  constructor(private readonly pg: PGlite) {
    this.statements = new StatementCache(pg);
  }

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    const params = compiled.parameters as unknown[];
    const execute = await this.statements.executeFor(compiled.sql, params, this.inTransaction);
    let res: Results<R>;
    try {
      res = execute ? await this.pg.query<R>(execute) : await this.pg.query<R>(compiled.sql, params);
    } catch (err) {
      // a table under a prepared `SELECT *` changed shape: plan it afresh
      if (!execute || !/cached plan must not change result type/.test(String(err))) throw err;
      await this.statements.forget(compiled.sql);
      res = await this.pg.query<R>(compiled.sql, params);
    }
    const kind = compiled.query.kind;
    const mutates = kind === 'InsertQueryNode' || kind === 'UpdateQueryNode' || kind === 'DeleteQueryNode';
    return {
      rows: res.rows,
      ...(mutates ? { numAffectedRows: BigInt(res.affectedRows ?? 0) } : {}),
    };
  }

  // biome-ignore lint/correctness/useYield: streaming is not supported; fail loudly
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('PGlite dialect does not support streaming queries');
  }
}

class PGliteDriver implements Driver {
  private queue: Promise<void> = Promise.resolve();
  private release: (() => void) | null = null;
  private readonly connection: PGliteConnection;

  constructor(private readonly pg: PGlite) {
    this.connection = new PGliteConnection(pg);
  }

  async init(): Promise<void> {
    await this.pg.waitReady;
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    const previous = this.queue;
    let release!: () => void;
    this.queue = new Promise<void>((r) => {
      release = r;
    });
    await previous;
    this.release = release;
    return this.connection;
  }

  async beginTransaction(): Promise<void> {
    await this.pg.exec('BEGIN');
    this.connection.inTransaction = true;
  }

  async commitTransaction(): Promise<void> {
    this.connection.inTransaction = false;
    await this.pg.exec('COMMIT');
  }

  async rollbackTransaction(): Promise<void> {
    this.connection.inTransaction = false;
    await this.pg.exec('ROLLBACK');
  }

  async releaseConnection(): Promise<void> {
    const r = this.release;
    this.release = null;
    r?.();
  }

  async destroy(): Promise<void> {
    await this.pg.close();
  }
}

export class PGliteDialect implements Dialect {
  constructor(private readonly pg: PGlite) {}
  createAdapter(): DialectAdapter {
    return new PostgresAdapter();
  }
  createDriver(): Driver {
    return new PGliteDriver(this.pg);
  }
  createQueryCompiler(): QueryCompiler {
    return new PostgresQueryCompiler();
  }
  // biome-ignore lint/suspicious/noExplicitAny: Kysely's own signature
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new PostgresIntrospector(db);
  }
}
