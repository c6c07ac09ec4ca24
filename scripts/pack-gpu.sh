#!/usr/bin/env bash
# Packs what a GPU machine needs to run groupcomm's GPU tests and device bench without Node and
# without a package registry: this Node binary (stripped, gzip'd; unpacked on first run), the
# runtime node_modules for linux-x64 (koffi + its glibc prebuilt, msgpackr + its native
# accelerator, uvu and its dependencies; not bun, binaryen or
# typescript), dist/, the compiled tests (dist-test/), build/core.wasm and a run script. The folder must stay under 64 MiB.
#
#   scripts/pack-gpu.sh [OUT_DIR]        (default build/gpu-pack; build/ is git-ignored)
#   OUT_DIR/run.sh test                  npm run test:gpu equivalent (GROUPCOMM_REQUIRE_GPU=1 node scripts/test.js gpu; Node only)
#   OUT_DIR/run.sh test node conformance any scripts/test.js mode and filters
#   OUT_DIR/run.sh bench device [...]    groupcomm bench device
#   OUT_DIR/run.sh node FILE [...]       the packed node itself
#   OUT_DIR/check.sh                     the whole GPU check in one call (scripts/gpu-check.sh)
#   scripts/pack-gpu.sh --bun [OUT_DIR]  Bun instead (default build/gpu-pack-bun); OUT_DIR/check.sh
#                                        is then scripts/gpu-check-bun.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# --bun: Bun (xz'd, ≈39 MB) instead of Node, for `DIR/check.sh`, which then runs the TypeScript
# sources from the repository root (the device call's copy of the working tree) as `npm test`'s
# Bun half does; dist/ and dist-test/ stay out so that pack and tree fit the 64 MiB together.
bun=0; if [[ "${1:-}" == --bun ]]; then bun=1; shift; fi
out="${1:-$root/build/gpu-pack$([[ $bun == 1 ]] && echo -bun)}"
limit=$((64 * 1024 * 1024))

cd "$root"
if [[ "${GROUPCOMM_PACK_NO_BUILD:-}" != 1 ]]; then npm run build >/dev/null; fi
[[ -f build/core.wasm && -d dist/host && -d dist-test/test ]] || { echo "pack-gpu: dist/, dist-test/ or build/core.wasm missing; run npm run build" >&2; exit 1; }
[[ "$(uname -s)-$(uname -m)" == Linux-x86_64 ]] || { echo "pack-gpu: packs linux-x64 only (this is $(uname -s)-$(uname -m))" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/node_modules/@koromix" "$out/node_modules/@assemblyscript" "$out/node_modules/@msgpackr-extract" "$out/build" "$out/scripts" "$out/bin"

if [[ $bun == 1 ]]; then
  # Unpacked there with python3's lzma (xz itself may be missing).
  xz -T2 -6 -c "$root/node_modules/.bin/bun" > "$out/bun.xz"
else
  # Node: the binary running this machine's npm, without debug info (95 → 86 MB), gzip'd (≈32 MB).
  node_bin="$(node -p process.execPath)"
  strip -o "$out/node" "$node_bin" 2>/dev/null || cp "$node_bin" "$out/node"
  gzip -9 "$out/node"
fi

nm="$root/node_modules"
copy() { cp -RL "$nm/$1" "$out/node_modules/$1"; }
for p in koffi @koromix/koffi-linux-x64 msgpackr msgpackr-extract @msgpackr-extract/msgpackr-extract-linux-x64 \
         node-gyp-build-optional-packages detect-libc uvu dequal diff kleur sade mri; do
  [[ -e "$nm/$p" ]] || { echo "pack-gpu: node_modules/$p is missing" >&2; exit 1; }
  copy "$p"
done
# Docs and the musl build are not needed to run on a glibc GPU machine.
rm -rf "$out/node_modules/koffi/doc" \
       "$out/node_modules/@koromix/koffi-linux-x64/musl_x64"

if [[ $bun == 1 ]]; then
  cp build/core.wasm "$out/build/core.wasm"
  cp scripts/gpu-check-bun.sh "$out/check.sh"
  size=$(du -sb "$out" | cut -f1)
  echo "pack-gpu: $out is $((size / 1024 / 1024)) MiB with Bun; the working tree travels beside it"
  exit 0
fi
cp -R dist "$out/dist"
cp -R dist-test "$out/dist-test"
cp build/core.wasm "$out/build/core.wasm"
cp package.json "$out/package.json"
cp scripts/test.js "$out/scripts/test.js"
cp bin/groupcomm.js "$out/bin/groupcomm.js"
cp scripts/gpu-check.sh "$out/check.sh"

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs groupcomm from this pack. Node is unpacked next to this script on first use (or into
# $TMPDIR when this folder is read-only).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bindir="$here/.node"
mkdir -p "$bindir" 2>/dev/null && [[ -w "$bindir" ]] || bindir="${TMPDIR:-/tmp}/groupcomm-node-$(id -u)"
mkdir -p "$bindir"
if [[ ! -x "$bindir/node" ]]; then gunzip -c "$here/node.gz" > "$bindir/node.tmp" && chmod +x "$bindir/node.tmp" && mv "$bindir/node.tmp" "$bindir/node"; fi
export PATH="$bindir:$PATH"
cd "$here"
cmd="${1:-test}"; shift || true
case "$cmd" in
  test)  if [[ $# -eq 0 ]]; then set -- gpu; export GROUPCOMM_REQUIRE_GPU="${GROUPCOMM_REQUIRE_GPU:-1}"; fi; exec node scripts/test.js "$@" ;;
  bench) exec node bin/groupcomm.js bench "$@" ;;
  node)  exec node "$@" ;;
  *)     exec node bin/groupcomm.js "$cmd" "$@" ;;
esac
RUN
chmod +x "$out/run.sh"

size=$(du -sb "$out" | cut -f1)
echo "pack-gpu: $out is $((size / 1024 / 1024)) MiB ($size bytes; limit 64 MiB)"
if (( size >= limit )); then echo "pack-gpu: too big" >&2; exit 1; fi
