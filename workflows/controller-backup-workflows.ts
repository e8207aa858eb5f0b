// Workflows of controller backups (issue 11): every export here is registered (workflows/index.ts).
export {};
