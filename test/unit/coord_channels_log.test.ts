/**
 * closeChannels (host/coordinator/channels.ts) never throws for a channel that fails to close: it
 * logs one debug line counting them, and closes only the channels that are open. Also: a member
 * waiting for rank 0's server to go asks with the time left of the linger. GROUPCOMM_DEBUG is
 * read when the logger loads, so this file sets it before importing the library.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stderrLines } from '../helpers/capture.js';

process.env.GROUPCOMM_DEBUG = 'debug';
process.env.GROUPCOMM_DEBUG_SUBSYS = 'COORD';
const { closeChannels } = await import('../../host/coordinator/channels.js');
type Channels = import('../../host/coordinator/channels.js').Channels;

const lines = stderrLines();

/** Only the named channels are open; those in `fail` throw when closed. */
function open(names: string[], fail: string[] = [], pings: number[] = []): Channels {
  const part = (name: string) => ({
    close: async () => { if (fail.includes(name)) throw new Error(`${name} broke`); },
    abort: async () => { if (fail.includes(name)) throw new Error(`${name} broke`); },
    ping: async (p: { timeoutMs: number }) => { pings.push(p.timeoutMs); throw new Error('gone'); },
  });
  return Object.fromEntries(names.map((n) => [n, part(n)])) as unknown as Channels;
}

const logged = () => lines.splice(0).filter((l) => l.includes(' COORD ')).map((l) => l.replace(/^.* COORD DEBUG /, '').trim());

test('closing logs the channels that failed to close, one line; open channels only; nothing when all closed', async () => {
  logged();
  await closeChannels(open(['cpu'], ['cpu']), 10);
  assert.equal(logged(), ['close: 1 channel(s) closed with errors: Error: cpu broke']);
  await closeChannels(open(['pg'], ['pg']), 0);
  assert.equal(logged(), ['close: 1 channel(s) closed with errors: Error: pg broke']);
  await closeChannels(open(['comm', 'server'], ['comm', 'server']), 0);
  assert.equal(logged(), ['close: 2 channel(s) closed with errors: Error: comm broke; Error: server broke']);
  await closeChannels(open(['comm', 'cpu', 'pg', 'store', 'server']), 10);
  await closeChannels(open(['store']), 10);
  await closeChannels({}, 10, true);
  assert.equal(logged(), []);
});

test('a member waiting for the server to go asks with what is left of the linger', async () => {
  const pings: number[] = [];
  await closeChannels(open(['store'], [], pings), 2_000, true);
  assert.is(pings.length, 1);
  assert.ok(pings[0] > 1_000 && pings[0] <= 2_000, String(pings[0]));
});

test.run();
