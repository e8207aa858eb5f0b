// Tables of application backups and schedules (migration 012), part of the store's Database type.

// biome-ignore lint/suspicious/noEmptyInterface: filled in as the tables are added
export interface AppBackupsTables {}
