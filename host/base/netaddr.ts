/**
 * Which local address a listener binds and advertises, so peers on other machines can reach it.
 *
 * - GROUPCOMM_SOCKET_IFNAME picks interfaces with NCCL_SOCKET_IFNAME's rules: a comma-separated
 *   list of name prefixes (`eth,ib` matches eth0, ib1…); a leading `^` excludes those instead;
 *   a leading `=` makes the names exact (`=eth0` matches eth0, not eth01); `^=` combines both.
 *   The first address of a matching interface wins, of the family of the peer we aim at when
 *   known (else IPv4 first); loopback interfaces only when named.
 * - Otherwise, toward a known peer address (MASTER_ADDR, a rendezvous store's host): the source
 *   address of the kernel's route to it, found with a connected UDP socket (no packet is sent).
 *   Toward a loopback address that is the loopback address itself.
 * - Otherwise 127.0.0.1: nothing says the group leaves this machine.
 *
 * An unspecified address (0.0.0.0, ::) may be bound but is never advertised: peers get the
 * address chosen as above instead. IPv6 link-local addresses carry their scope (`fe80::1%eth0`).
 */
import dgram from 'node:dgram';
import dns from 'node:dns';
import net from 'node:net';
import os from 'node:os';
import { setting } from './config.js';
import { configError } from './errors.js';

export interface IfnameSpec {
  exclude: boolean;
  exact: boolean;
  names: string[];
}

/** NCCL_SOCKET_IFNAME's syntax: `[^][=]name[,name…]`. */
export function parseIfname(spec: string): IfnameSpec {
  let s = spec.trim();
  const exclude = s.startsWith('^');
  if (exclude) s = s.slice(1);
  const exact = s.startsWith('=');
  if (exact) s = s.slice(1);
  return { exclude, exact, names: s.split(',').map((n) => n.trim()).filter(Boolean) };
}

export function matchIfname(spec: IfnameSpec, ifname: string): boolean {
  const hit = spec.names.some((n) => (spec.exact ? ifname === n : ifname.startsWith(n)));
  return spec.exclude ? !hit : hit;
}

export interface LocalAddress {
  ifname: string;
  address: string;
  family: 4 | 6;
  internal: boolean;
}

/** Every address of every interface that is up, link-local IPv6 with its `%ifname` scope. */
export function localAddresses(): LocalAddress[] {
  const out: LocalAddress[] = [];
  for (const [ifname, list] of Object.entries(os.networkInterfaces())) {
    for (const a of list ?? []) {
      const family = a.family === 'IPv6' || (a.family as unknown) === 6 ? 6 : 4;
      const linkLocal = family === 6 && /^fe80:/i.test(a.address);
      out.push({ ifname, address: linkLocal && !a.address.includes('%') ? `${a.address}%${ifname}` : a.address, family, internal: a.internal });
    }
  }
  return out;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host) || /^::ffff:127\./i.test(host);
}

export function isUnspecified(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '';
}

/** `[::1]` → `::1`. */
function bare(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/** host:port for messages and store values; IPv6 in brackets. */
export function hostPort(host: string, port: number): string {
  return net.isIPv6(host.split('%')[0]) ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The addresses GROUPCOMM_SOCKET_IFNAME selects, best first for a peer of `family`. */
export function addressesForIfname(raw: string, family?: 4 | 6, all = localAddresses()): LocalAddress[] {
  const spec = parseIfname(raw);
  if (spec.names.length === 0) throw configError('GROUPCOMM_SOCKET_IFNAME', raw, 'interface names: prefixes, `^` to exclude, `=` for exact names');
  const hit = all.filter((a) => matchIfname(spec, a.ifname) && (!a.internal || !spec.exclude));
  const rank = (a: LocalAddress) => (a.family === (family ?? 4) ? 0 : 2) + (a.address.includes('%') ? 1 : 0);
  return hit.sort((a, b) => rank(a) - rank(b));
}

/** The source address of this machine's route toward `dest` (an IP address), or undefined. */
export function routeSource(dest: string): Promise<string | undefined> {
  const family = net.isIPv6(dest.split('%')[0]) ? 'udp6' : 'udp4';
  return new Promise((resolve) => {
    let s: dgram.Socket;
    try {
      s = dgram.createSocket(family);
    } catch {
      resolve(undefined);
      return;
    }
    const done = (v: string | undefined) => {
      try { s.close(); } catch { /* closed */ }
      resolve(v);
    };
    s.once('error', () => done(undefined));
    try {
      // UDP connect only picks the route and source address; nothing goes on the wire.
      s.connect(9, dest, () => {
        try {
          done(s.address().address);
        } catch {
          done(undefined);
        }
      });
    } catch {
      done(undefined);
    }
  });
}

async function resolveIp(host: string): Promise<string | undefined> {
  const h = bare(host);
  if (net.isIP(h.split('%')[0])) return h;
  try {
    return (await dns.promises.lookup(h)).address;
  } catch {
    return undefined;
  }
}

export interface ChooseOptions {
  /** A peer's address (MASTER_ADDR, a rendezvous store's host): the route toward it decides. */
  toward?: string;
  env?: Record<string, string | undefined>;
}

/**
 * The address this process should listen on and advertise (see the file comment). Throws
 * ERR_GROUPCOMM_CONFIG when GROUPCOMM_SOCKET_IFNAME matches no address here, listing what there is.
 */
export async function chooseAddress(o: ChooseOptions = {}): Promise<string> {
  const env = o.env ?? process.env;
  const towardIp = o.toward ? await resolveIp(o.toward) : undefined;
  const family: 4 | 6 | undefined = towardIp ? (net.isIPv6(towardIp.split('%')[0]) ? 6 : 4) : undefined;
  const ifname = env === process.env ? setting('GROUPCOMM_SOCKET_IFNAME') : setting('GROUPCOMM_SOCKET_IFNAME', env);
  if (ifname !== undefined) {
    const all = localAddresses();
    const hit = addressesForIfname(ifname, family, all);
    if (hit.length === 0) {
      const have = [...new Set(all.map((a) => a.ifname))].join(', ');
      throw configError('GROUPCOMM_SOCKET_IFNAME', ifname, `interfaces present here (${have}) — it matches none`);
    }
    return hit[0].address;
  }
  if (towardIp) {
    if (isLoopback(towardIp)) return towardIp;
    if (isUnspecified(towardIp)) return '127.0.0.1';
    const src = await routeSource(towardIp);
    if (src && !isUnspecified(src)) return src;
    const any = localAddresses().find((a) => !a.internal && a.family === family && !a.address.includes('%'));
    if (any) return any.address;
  }
  return '127.0.0.1';
}

/** MASTER_ADDR (without IPv6 brackets), when set: the default peer to aim at. */
export function masterAddr(env: Record<string, string | undefined> = process.env): string | undefined {
  const m = env.MASTER_ADDR?.trim();
  return m ? bare(m) : undefined;
}

/**
 * TCP keepalive on a long-lived connection (GROUPCOMM_TCP_KEEPALIVE_MS idle before the first
 * probe; 0: off). Node and Bun set the idle time only; the kernel's interval and count apply.
 */
export function applyKeepAlive(socket: net.Socket): void {
  const ms = setting('GROUPCOMM_TCP_KEEPALIVE_MS');
  if (ms > 0) socket.setKeepAlive(true, ms);
}
