// The model a request names, or the 404 that names it.
import type { ModelRow } from '../store/schema.ts';
import type { Db } from '../store/store.ts';
import { NotFoundError } from './errors.ts';

export async function findModel(db: Db, name: string): Promise<ModelRow> {
  const model = await db.selectFrom('models').selectAll().where('name', '=', name).executeTakeFirst();
  if (!model) throw new NotFoundError('model', name);
  return model;
}
