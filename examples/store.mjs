// The TCPStore-compatible store: a master that hosts the server, and a client. Both live in this
// one process here; on a cluster, rank 0 runs the first line and every other rank the second.
// Run: node examples/store.mjs
import { TcpStore } from 'groupcomm';

// rank 0: host the server in-process and connect to it (torch's is_master); port 0 lets the OS
// pick a free port, published as master.port
const master = await TcpStore.create({ port: 0, isServer: true, worldSize: 2, waitForWorkers: false, timeoutMs: 60_000 });
// the other ranks: connect to the master's address
const store = await TcpStore.create({ host: '127.0.0.1', port: master.port, worldSize: 2, timeoutMs: 60_000 });

await store.set('addr/1', '10.0.0.2:41000');
await master.set('addr/0', '10.0.0.1:41000');
const v = await store.get('addr/0');              // Uint8Array; waits until the key exists
console.log(`addr/0 = ${new TextDecoder().decode(v)}`);
console.log(`ready = ${await store.add('ready', 1)}`);   // number; the value is stored as decimal text
await store.wait(['addr/0', 'addr/1'], { timeoutMs: 5000 }); // ERR_GROUPCOMM_TIMEOUT names the keys
await store.close();
await master.close();                              // closes the server too: this client started it
