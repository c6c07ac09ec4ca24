#!/usr/bin/env bash
# The GPU machine's whole check in one call, run from a folder packed by scripts/pack-gpu.sh
# (which copies this file in as check.sh): the machine's facts (GPUs, python3, the libnccl and
# libcudart it holds), the cuda backend's probe, the strict GPU tests, a world-size-1
# coordinator run through `groupcomm launch`, `groupcomm bench device` with the plugin's own cost
# per call, and, where python3 has torch, the same 1-element allReduce through torch for the side
# by side. Everything goes to stdout and to $OUT/log.txt (or /tmp/gpu-check.log).
#
#   DIR/check.sh            (e.g. device run: bash build/gpu-pack/check.sh, carrying build/gpu-pack)
cd "$(dirname "${BASH_SOURCE[0]}")"
log="${OUT:-/tmp}/log.txt"; [[ -n "${OUT:-}" ]] || log=/tmp/gpu-check.log
exec > >(tee "$log") 2>&1
t0=$(date +%s); stamp() { echo "=== $1 at +$(( $(date +%s) - t0 )) s"; }
stamp machine
nvidia-smi -L; nvidia-smi --query-gpu=driver_version,memory.total --format=csv
which -a python3; find / -xdev \( -name 'libnccl.so.2' -o -name 'libcudart.so.1[23]' \) 2>/dev/null | head -10
stamp probe
./run.sh node --input-type=module -e "
const b = await (await import('./dist/host/device/registry.js')).loadBackend('cuda');
const p = await b.probe(); console.log('probe', JSON.stringify(p)); if (p.available) console.log('report', JSON.stringify(await b.report()));"
stamp test
GROUPCOMM_REQUIRE_GPU=1 timeout 300 ./run.sh test gpu; echo "test rc $?"
stamp launch
cat > /tmp/gc_one.mjs <<'JS'
import path from 'node:path';
const { resolveBackend, StatelessGroupCoordinator, TcpStore, tensor, toDevice, toHost } = await import(path.resolve('dist/host/index.js'));
const rendezvous = await TcpStore.create({ host: process.env.MASTER_ADDR, port: Number(process.env.MASTER_PORT) });
const b = await resolveBackend('cuda');
const g = await StatelessGroupCoordinator.create({ groupRanks: [[0]], globalRank: 0, localRank: 0, groupName: 'one', rendezvous, backend: 'cuda', useDeviceCommunicator: true, timeoutMs: 60_000 });
const x = toDevice(b, tensor(new Float32Array([1, 2, 3])), 0);
const y = await toHost(await g.allReduce(x));
console.log(`launch: a group of one on ${g.device}: allReduce [${y.data}]`);
await g.destroy(); await rendezvous.close();
JS
timeout 60 ./run.sh launch -n 1 /tmp/gc_one.mjs; echo "launch rc $?"
stamp bench
timeout 200 ./run.sh bench device --plugin cuda -b 1K -e 256M -f 4 -n 20 -w 5 --overhead 20000; echo "bench rc $?"
stamp torch
cat > /tmp/gc_torch.py <<'PY'
import time, torch, torch.distributed as dist
dist.init_process_group('nccl', init_method='tcp://127.0.0.1:29555', rank=0, world_size=1)
x = torch.ones(1, device='cuda')
for _ in range(2000): dist.all_reduce(x); torch.cuda.synchronize()
best = 1e9
for r in range(3):
  t = time.perf_counter()
  for _ in range(20000): dist.all_reduce(x); torch.cuda.synchronize()
  best = min(best, (time.perf_counter() - t) / 20000 * 1e6)
print(f'torch {torch.__version__} nccl {torch.cuda.nccl.version()}: 1-element all_reduce + synchronize, world size 1, best of 3 x 20000: {best:.2f} us/call')
dist.destroy_process_group()
PY
if python3 -c 'import torch' 2>/dev/null; then PYTHONUNBUFFERED=1 timeout 90 python3 /tmp/gc_torch.py; echo "torch rc $?"; else echo "torch: not importable by python3, skipped"; fi
stamp done
