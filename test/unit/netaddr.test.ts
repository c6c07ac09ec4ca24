// Choosing the address to listen on and advertise: GROUPCOMM_SOCKET_IFNAME's NCCL rules, the
// route toward a peer, loopback and wildcard handling. (Across real namespaces: multinode_netns.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import os from 'node:os';
import { addressesForIfname, chooseAddress, hostPort, isUnspecified, matchIfname, parseIfname, type LocalAddress } from '../../host/base/netaddr.js';
import { ErrorCode, isGroupcommError } from '../../host/base/errors.js';

const ifs: LocalAddress[] = [
  { ifname: 'lo', address: '127.0.0.1', family: 4, internal: true },
  { ifname: 'eth0', address: '10.0.0.2', family: 4, internal: false },
  { ifname: 'eth0', address: 'fe80::1%eth0', family: 6, internal: false },
  { ifname: 'eth0', address: 'fd77::2', family: 6, internal: false },
  { ifname: 'eth01', address: '10.1.0.2', family: 4, internal: false },
  { ifname: 'docker0', address: '172.17.0.1', family: 4, internal: false },
];

test('NCCL_SOCKET_IFNAME syntax: prefixes, ^ excludes, = exact', () => {
  assert.equal(parseIfname('^=eth0,ib'), { exclude: true, exact: true, names: ['eth0', 'ib'] });
  assert.ok(matchIfname(parseIfname('eth'), 'eth01'));
  assert.not.ok(matchIfname(parseIfname('=eth0'), 'eth01'));
  assert.ok(matchIfname(parseIfname('=eth0'), 'eth0'));
  assert.not.ok(matchIfname(parseIfname('^docker,lo'), 'docker0'));
  assert.ok(matchIfname(parseIfname('^docker,lo'), 'eth0'));
  assert.equal(addressesForIfname('=eth0', 4, ifs).map((a) => a.address), ['10.0.0.2', 'fd77::2', 'fe80::1%eth0']);
  assert.equal(addressesForIfname('=eth0', 6, ifs).map((a) => a.address), ['fd77::2', 'fe80::1%eth0', '10.0.0.2']);
  assert.equal(addressesForIfname('eth', 4, ifs)[0].address, '10.0.0.2');
  assert.equal(addressesForIfname('^eth,lo', 4, ifs).map((a) => a.address), ['172.17.0.1'], 'excluding never yields loopback');
});

test('chooseAddress: the interface named, else the route toward the peer, else loopback', async () => {
  assert.is(await chooseAddress({ env: {} }), '127.0.0.1');
  assert.is(await chooseAddress({ toward: '127.0.0.5', env: {} }), '127.0.0.5');
  assert.is(await chooseAddress({ toward: '[::1]', env: {} }), '::1');
  const lo = Object.entries(os.networkInterfaces()).find(([, l]) => l?.some((a) => a.internal && a.family === 'IPv4'));
  if (lo) assert.is(await chooseAddress({ toward: '10.99.0.1', env: { GROUPCOMM_SOCKET_IFNAME: `=${lo[0]}` } }), '127.0.0.1');
  try {
    await chooseAddress({ env: { GROUPCOMM_SOCKET_IFNAME: 'no-such-if' } });
    assert.unreachable('an interface that is not there');
  } catch (e) {
    assert.ok(isGroupcommError(e, ErrorCode.CONFIG), String(e));
    assert.is(e.variable, 'GROUPCOMM_SOCKET_IFNAME');
    assert.match(e.message, 'it matches none');
  }
  assert.ok(isUnspecified('0.0.0.0') && isUnspecified('::'));
  assert.is(hostPort('fd77::1', 5), '[fd77::1]:5');
  assert.is(hostPort('10.0.0.1', 5), '10.0.0.1:5');
});

test.run();
