// Migration 017: an application's set of units has a serial, taken afresh from a
// store-wide sequence by the statement that adds or removes any of its units, and
// by the insert of the application itself (a deploy, a restore, an import). A hook
// of a unit that is not the leader needs its application's unit names (goal-state);
// with the serial it reads one number with its application's row, and the names
// only when the set changed, so a hook costs the same at 10 units as at 1000
// (counting the units on every hook made a deploy's hooks O(n²) in all). A sequence
// never hands out a value twice, so a serial names one set in this store even
// after a restore or an import brought an application's row back.
import { type Kysely, type Migration, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations run before the typed schema exists
type AnyDb = Kysely<any>;

const ddl: string[] = [
  `CREATE SEQUENCE unit_set_serial AS integer`,
  `ALTER TABLE applications ADD COLUMN unit_set integer NOT NULL DEFAULT nextval('unit_set_serial')`,
  `CREATE FUNCTION fresh_unit_set() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    NEW.unit_set := nextval('unit_set_serial');
    RETURN NEW;
  END $$`,
  `CREATE TRIGGER application_added BEFORE INSERT ON applications
    FOR EACH ROW EXECUTE FUNCTION fresh_unit_set()`,
  // statement triggers: a deploy's thousand units take one serial for their application;
  // both name their transition table changed_units (the rows added, or removed)
  `CREATE FUNCTION next_unit_set() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    UPDATE applications a SET unit_set = nextval('unit_set_serial')
      FROM (SELECT DISTINCT model_uuid, application FROM changed_units) c
      WHERE a.model_uuid = c.model_uuid AND a.name = c.application;
    RETURN NULL;
  END $$`,
  `CREATE TRIGGER units_added AFTER INSERT ON units REFERENCING NEW TABLE AS changed_units
    FOR EACH STATEMENT EXECUTE FUNCTION next_unit_set()`,
  `CREATE TRIGGER units_removed AFTER DELETE ON units REFERENCING OLD TABLE AS changed_units
    FOR EACH STATEMENT EXECUTE FUNCTION next_unit_set()`,
];

export const m017: Migration = {
  async up(db: AnyDb) {
    for (const stmt of ddl) await sql.raw(stmt).execute(db);
  },
};
