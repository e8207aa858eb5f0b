// Secrets stay secret: a failing statement never carries its parameters into an
// error, a log line or an operation.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { inspect } from 'node:util';
import { isUniqueViolation, openStore, type Store } from '../store/store.ts';
import { StoreError } from '../store/store-error.ts';

const SECRET = 'hunter2-Sup3rS3cret-value';

/** Everything an error could show: message, stack, own properties, as a logger prints it. */
function everything(err: unknown): string {
  return [String(err), inspect(err, { depth: 10 }), JSON.stringify(err), (err as Error)?.stack ?? ''].join('\n');
}

async function failure(fn: () => Promise<unknown>): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  assert.fail('the statement should have failed');
}

describe('store errors carry no statement parameters', () => {
  let store: Store;
  before(async () => {
    store = await openStore({});
  });
  after(async () => {
    await store?.close();
  });

  test('a JSON value Postgres refuses: its text is not quoted back', async () => {
    const err = await failure(() =>
      store.db
        .insertInto('clouds')
        .values({ name: 'c1', type: 'manual', endpoint: null })
        .execute()
        .then(() =>
          store.db
            .insertInto('credentials')
            .values({
              cloud: 'c1',
              name: 'k',
              auth_type: 'userpass',
              attributes: JSON.stringify({ password: `${SECRET}\0` }),
            })
            .execute(),
        ),
    );
    assert.ok(err instanceof StoreError, inspect(err));
    assert.equal(err.code, '22P05');
    assert.ok(!everything(err).includes(SECRET), everything(err));
  });

  test('a value of the wrong type: the message names the type, not the value', async () => {
    const err = await failure(() =>
      store.db
        .selectFrom('operations')
        .selectAll()
        .where('id', '=', SECRET as unknown as number)
        .execute(),
    );
    assert.ok(err instanceof StoreError);
    assert.equal(err.code, '22P02');
    assert.match(err.message, /invalid input syntax for type integer/);
    assert.ok(!everything(err).includes(SECRET), everything(err));
  });

  test('the SQLSTATE and the constraint stay, so callers still tell a duplicate', async () => {
    const err = await failure(() =>
      store.db.insertInto('clouds').values({ name: 'c1', type: 'manual', endpoint: null }).execute(),
    );
    assert.ok(isUniqueViolation(err));
    assert.equal((err as StoreError).constraint, 'clouds_pkey');
  });
});
