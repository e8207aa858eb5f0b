#!/bin/sh
# Build ops-kv-web.charm (with ops installed under venv/, as charmcraft packs it).
# Usage: build.sh [OUT_FILE]   (default: examples/charms/ops-kv-web/ops-kv-web.charm)
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="${1:-$here/ops-kv-web.charm}"
cd "$repo"
exec node --import tsx -e '
import { buildOpsCharm } from "./charm/build-ops-charm.ts";
const [src, out] = process.argv.slice(1);
const built = await buildOpsCharm(src, out);
console.log(`built ${built.outFile} (${built.meta.name}, sha256 ${built.hash})`);
' "$here" "$out"
