// Commands of controller backups (issue 11).
import type { Command } from 'commander';

export function registerControllerBackups(_program: Command): void {}
