// The example TypeScript charm's own harness tests, run by `npm test`.
import '../examples/charms/ts-kv-web/test/charm.test.ts';
