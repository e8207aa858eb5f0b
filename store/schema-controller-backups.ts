// Tables of controller backups (migration 013), part of the store's Database type.

// biome-ignore lint/suspicious/noEmptyInterface: filled in as the tables are added
export interface ControllerBackupsTables {}
