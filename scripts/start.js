// `npm start`: builds dist/, then runs `charmflow up` in this same process. The
// start script execs this process (`exec node ...`), so the SIGTERM or SIGINT a
// process manager sends npm, which npm passes to its script, reaches the controller
// itself, and nothing (a shell between them) is left behind.
import { buildDist } from './build.js';

await buildDist();
// `npm start -- --headless` passes its arguments on to `up`
process.argv.splice(2, 0, 'up');
await import('../bin/charmflow.js');
