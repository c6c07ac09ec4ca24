"""Interop peer for test/interop/torch.test.ts: PyTorch's TCPStore against groupcomm's, both ways.

Protocol with the TypeScript test (one JSON object per stdout line, plain lines on stdin):
  1. start a torch TCPStore server, report {"event": "torch_server", "port": P}
  2. read our server's port from stdin; run a torch *client* against it; report
     {"event": "need_late"} when blocked on a key the TS side sets late; then
     {"event": "client_done", "results": {...}}
  3. as the torch server's own client: wait for "ts_waiting", set "py_late", wait for "ts_done",
     read what the TS client wrote and report {"event": "server_done", "results": {...}}
  4. read a port from stdin; connect a torch client to it (a raw recorder on the TS side);
     report {"event": "handshake_done", "pid": PID}
Debian's torch 2.6 has no libuv, so the server is the legacy backend (use_libuv=False).
"""
import json
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist


def out(**kv):
    print(json.dumps(kv), flush=True)


def store(host, port, master, timeout_s=30, **kw):
    if int(torch.__version__.split(".")[0]) >= 2:
        kw.setdefault("use_libuv", False)
    return dist.TCPStore(host, port, None, master, timedelta(seconds=timeout_s), **kw)


srv = store("127.0.0.1", 0, True, wait_for_workers=False)
srv.set("py_key", "hello from torch")
out(event="torch_server", port=srv.port, version=torch.__version__)

port = int(sys.stdin.readline())
c = store("127.0.0.1", port, False)
r = {}
c.set("from_torch", b"torch_value")
r["get_ts_key"] = c.get("from_ts").decode()
r["add"] = [c.add("ctr", 5), c.add("ctr", 16)]
r["get_ctr"] = c.get("ctr").decode()
r["cas_missing"] = c.compare_set("cas", "wrong", "x").decode()
r["cas_create"] = c.compare_set("cas", "", "first").decode()
r["cas_wrong"] = c.compare_set("cas", "nope", "second").decode()
r["cas_right"] = c.compare_set("cas", "first", "second").decode()
r["check"] = [c.check(["from_torch"]), c.check(["missing"])]
c.set_timeout(timedelta(milliseconds=200))
try:
    c.wait(["never"])
    r["wait_timeout"] = "no error"
except Exception as e:  # DistStoreError on torch 2.x
    r["wait_timeout"] = str(e)
c.set_timeout(timedelta(seconds=30))
c.set("after_timeout", "ok")
r["after_timeout"] = c.get("after_timeout").decode()
c.multi_set(["m1", "m2"], ["v1", "v2"])
r["multi_get"] = [v.decode() for v in c.multi_get(["m1", "m2"])]
c.append("ap", "po")
c.append("ap", "tato")
r["append"] = c.get("ap").decode()
r["delete"] = [c.delete_key("m1"), c.delete_key("m1")]
r["num_keys"] = c.num_keys()
out(event="need_late")
r["late"] = c.get("late").decode()
out(event="client_done", results=r)

srv.wait(["ts_waiting"])
srv.set("py_late", "late from torch")
srv.wait(["ts_done"])
r2 = {
    "ts_set": srv.get("ts_set").decode(),
    "ts_ctr": srv.get("ts_ctr").decode(),
    "ts_append": srv.get("ts_append").decode(),
    "ts_multi": [v.decode() for v in srv.multi_get(["ts_m1", "ts_m2"])],
    "ts_cas": srv.get("ts_cas").decode(),
    "ts_deleted": srv.check(["ts_del"]),
    "num_keys": srv.num_keys(),
}
out(event="server_done", results=r2)

# 4. torch's TestClientProtocol, mirrored: a torch client against a hand-written server that
#    records its first bytes (world_size=2, wait_for_workers=False: the handshake and nothing else)
port = int(sys.stdin.readline())
kw = {"use_libuv": False} if int(torch.__version__.split(".")[0]) >= 2 else {}
hs = dist.TCPStore("127.0.0.1", port, 2, False, timedelta(seconds=30), wait_for_workers=False, **kw)
out(event="handshake_done", pid=os.getpid())
