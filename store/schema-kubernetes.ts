// Row types of the Kubernetes tables (migration 014).
import type { ColumnType } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;

/** An application on a kubernetes model: the image its charm container runs. */
export interface KubernetesApplicationsTable {
  model_uuid: string;
  application: string;
  charm_image: string;
  /** The application's address: its Service's cluster IP (null until the Service has one). */
  address: ColumnType<string | null, string | null | undefined, string | null>;
  created_at: Timestamp;
}

export interface KubernetesTables {
  kubernetes_applications: KubernetesApplicationsTable;
}
