// Workflows of app backups (issue 11): every export here is registered (workflows/index.ts).
export {};
