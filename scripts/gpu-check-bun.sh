#!/bin/bash
# The GPU tests and the plugin's per-call cost on Bun, from the repository root as `npm test`'s
# Bun half runs them (TypeScript sources; node_modules and core.wasm from a pack made by
# `scripts/pack-gpu.sh --bun`, which copies this file in as check.sh). Output also in $OUT/log.txt.
here="$(cd "$(dirname "$0")" && pwd)"; cd "$here/../.."  # the pack lies in build/ of the repository
O=${OUT:-/tmp/out}; mkdir -p $O
exec > >(tee $O/log.txt) 2>&1
t0=$(date +%s); stamp() { echo "=== $1 at +$(( $(date +%s) - t0 )) s"; }
stamp unpack
python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('$here/bun.xz'),open('/tmp/bun','wb'))" && chmod +x /tmp/bun && /tmp/bun --version
[ -e node_modules ] || ln -s "$here/node_modules" node_modules
mkdir -p build && cp "$here/build/core.wasm" build/core.wasm
stamp tests
for f in cuda_tensors cuda_conformance; do GROUPCOMM_REQUIRE_GPU=1 timeout 200 /tmp/bun test/gpu/$f.test.ts 2>&1 | grep -v "^ *$" | grep -v "• •" | tail -25; echo "$f rc ${PIPESTATUS[0]}"; done
stamp bench
timeout 100 /tmp/bun bin/groupcomm.js bench device --plugin cuda -b 1K -e 16M -f 16 -n 20 -w 5 --overhead 20000; echo "bench rc $?"
stamp done
