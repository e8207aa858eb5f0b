// Commands of app backups (issue 11).
import type { Command } from 'commander';

export function registerAppBackups(_program: Command): void {}
