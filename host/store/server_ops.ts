/**
 * TcpStoreServer's requests: the handshake (VALIDATE, then the HMAC exchange), each opcode's
 * handling, waits being woken, and subscriptions (which prefixes may be claimed, pushes).
 */
import crypto from 'node:crypto';
import type { Logger } from '../base/log.js';
import {
  AUTH_NONCE_BYTES, AUTH_REQUIRED_NONCE, Cursor, Frame, Op, SubscribeReply, VALIDATE_MAGIC, WAIT_GET_DELETE, WaitReply, type StoreLimits,
} from './protocol.js';
import { authProof } from './auth.js';
import { KeyTable, valueOf, Violation, type Value } from './table.js';
import {
  Conn, EXT_PROBE_LATIN1, LocalSub, MAILBOX_PREFIX, NOT_READY, putLatin1, putU64, READY, STOP_WAITING, utf8Key, WAIT_CANCELED,
} from './server_conn.js';
import { RequestParser } from './server_parse.js';

export abstract class StoreOps extends RequestParser {
  protected readonly table = new KeyTable<Conn>((c) => this.wake(c), new Set([EXT_PROBE_LATIN1]));
  /** Ranks announced with JOIN_RANK (a groupcomm client given a rank); kept after they leave. */
  protected readonly joinedRanks = new Set<number>();
  /** Subscriptions by prefix (latin1, as keys are): writes under a prefix are pushed, not stored. */
  protected readonly subs = new Map<string, Conn | LocalSub>();
  /** The lengths of those prefixes, shortest first: a key is looked up once per length, not per '/'. */
  protected subLengths: number[] = [];
  /** Keys answered to a consuming WAIT_GET, deleted at the end of the current request. */
  protected takes: string[] = [];

  constructor(limits: StoreLimits, protected readonly log: Logger, protected readonly secret: Buffer | undefined, protected readonly subscribeAny: boolean) {
    super(limits);
  }

  /**
   * A subscription takes every key under its prefix away from the store, so only one rank's
   * mailbox (`<namespace>/to/<rank>/`) may be claimed, unless the server was told 'any'.
   */
  protected checkPrefix(prefix: string): void {
    if (this.subscribeAny || MAILBOX_PREFIX.test(prefix)) return;
    throw new Violation(`SUBSCRIBE prefix '${prefix.slice(0, 100)}' is not a mailbox (…/to/<rank>/)`);
  }

  /**
   * Makes `sub` the subscriber of `prefix` unless a live one holds it (then null); returns the
   * keys stored under the prefix, now removed, for `sub` to be handed first.
   */
  protected claim(prefix: string, sub: Conn | LocalSub): [string, Value][] | null {
    const holder = this.subs.get(prefix);
    if (holder && !holder.closed) return null;
    this.subs.set(prefix, sub);
    this.measureSubs();
    return this.table.takePrefix(prefix);
  }

  protected unsub(prefix: string): void {
    this.subs.delete(prefix);
    this.measureSubs();
  }

  protected measureSubs(): void {
    this.subLengths = [...new Set([...this.subs.keys()].map((p) => p.length))].sort((a, b) => a - b);
  }

  /** A throwing subscriber must not take the writer's connection down with it. */
  protected callLocal(sub: LocalSub, key: string, value: Uint8Array): void {
    try {
      sub.fn(key, value);
    } catch (e) {
      this.log.warn(`in-process subscriber threw on '${key}': ${(e as Error).message}`);
    }
  }

  /**
   * Parses one whole request, then acts on it. Nothing changes before the last field has
   * arrived (INCOMPLETE rewinds), so a request split across reads is applied exactly once.
   */
  protected handle(conn: Conn, cur: Cursor, buf: Buffer): void {
    const op = cur.u8();
    if (conn.stage !== 'ready') {
      this.handshake(conn, cur, op);
      return;
    }
    if (conn.subscribed !== null) throw new Violation(`opcode ${op} on a subscription connection`);
    switch (op) {
      case Op.VALIDATE: {
        if (cur.u32() !== VALIDATE_MAGIC) throw new Violation('bad VALIDATE magic');
        return;
      }
      case Op.PING: {
        const at = cur.take(4);
        this.send(conn, Buffer.from(buf.subarray(at, at + 4)));
        return;
      }
      case Op.SET: {
        const ka = this.keyAt(cur);
        const kb = cur.pos;
        const va = this.valueAt(cur);
        this.write(buf.toString('latin1', ka, kb), buf, va, cur.pos);
        return;
      }
      case Op.SUBSCRIBE: {
        const [ka, kb] = this.key(cur);
        const prefix = buf.toString('latin1', ka, kb);
        if (!prefix.endsWith('/')) throw new Violation('SUBSCRIBE prefix must be non-empty and end in \'/\'');
        if (!this.subscribeAny && !conn.groupcomm) throw new Violation('SUBSCRIBE from a client that did not negotiate groupcomm\'s extensions');
        if (!this.subscribeAny && !MAILBOX_PREFIX.test(prefix)) {
          this.log.warn(`connection ${conn.id} (${conn.remote}): SUBSCRIBE '${prefix.slice(0, 100)}' refused: not a mailbox prefix`);
          this.send(conn, Buffer.from([SubscribeReply.REFUSED]));
          return;
        }
        const backlog = this.claim(prefix, conn);
        if (!backlog) {
          this.send(conn, Buffer.from([SubscribeReply.TAKEN]));
          return;
        }
        this.send(conn, Buffer.from([SubscribeReply.OK]));
        conn.subscribed = prefix;
        for (const [k, v] of backlog) this.pushValue(conn, k, v);
        return;
      }
      case Op.GET:
      case Op.TRY_GET: {
        const ka = this.keyAt(cur);
        const v = this.table.get(buf.toString('latin1', ka, cur.pos));
        if (op === Op.TRY_GET) {
          if (v === undefined) this.send(conn, Buffer.from([0]));
          else this.sendValue(conn, v, 1);
        } else {
          // torch's libuv server answers a missing key with an empty value (legacy closes).
          this.sendValue(conn, v ?? '', -1);
        }
        return;
      }
      case Op.ADD: {
        const ka = this.keyAt(cur);
        const kb = cur.pos;
        const delta = cur.i64();
        this.sendI64(conn, this.table.add(buf.toString('latin1', ka, kb), delta));
        return;
      }
      case Op.COMPARE_SET: {
        const [ka, kb] = this.key(cur);
        const [ea, eb] = this.value(cur);
        const [da, db] = this.value(cur);
        this.sendValue(conn, this.table.compareSet(buf.toString('latin1', ka, kb), buf, ea, eb, da, db), -1);
        return;
      }
      case Op.CHECK: {
        const keys = this.keyList(cur, buf);
        if (keys.length === 1 && keys[0] === EXT_PROBE_LATIN1) conn.groupcomm = true;
        this.send(conn, keys.every((k) => this.table.exists(k)) ? READY : NOT_READY);
        return;
      }
      case Op.WAIT: {
        conn.waitGet = null;
        if (this.table.wait(conn, this.keyList(cur, buf))) this.send(conn, STOP_WAITING);
        return;
      }
      case Op.WAIT_GET: {
        const flags = cur.u8();
        if (flags & ~WAIT_GET_DELETE) throw new Violation(`WAIT_GET with unknown flags ${flags}`);
        const keys = this.keyList(cur, buf);
        conn.waitGet = keys;
        conn.waitTake = flags === WAIT_GET_DELETE;
        if (this.table.wait(conn, keys)) this.wake(conn);
        return;
      }
      case Op.DELETE_QUIET: {
        for (const k of this.keyList(cur, buf)) this.table.delete(k);
        return;
      }
      case Op.CANCEL_WAIT: {
        this.table.cancelWait(conn);
        conn.waitGet = null;
        this.send(conn, WAIT_CANCELED);
        return;
      }
      case Op.GETNUMKEYS: {
        this.sendI64(conn, BigInt(this.table.size));
        return;
      }
      case Op.DELETE_KEY: {
        const [ka, kb] = this.key(cur);
        const existed = this.table.delete(buf.toString('latin1', ka, kb));
        this.sendI64(conn, existed ? 1n : 0n);
        return;
      }
      case Op.APPEND: {
        const [ka, kb] = this.key(cur);
        const [va, vb] = this.value(cur);
        this.table.append(buf.toString('latin1', ka, kb), buf, va, vb, this.limits.maxValueBytes);
        return;
      }
      case Op.APPEND_CHECKED: {
        const [ka, kb] = this.key(cur);
        const [va, vb] = this.value(cur);
        let status = 0;
        try {
          this.table.append(buf.toString('latin1', ka, kb), buf, va, vb, this.limits.maxValueBytes);
        } catch (e) {
          if (!(e instanceof Violation)) throw e;
          status = 1;
        }
        this.send(conn, Buffer.from([status]));
        return;
      }
      case Op.MULTI_GET: {
        const keys = this.keyList(cur, buf);
        for (const k of keys) this.sendValue(conn, this.table.get(k) ?? '', -1);
        return;
      }
      case Op.MULTI_SET: {
        const n = this.count(cur);
        const spans: number[] = [];
        for (let i = 0; i < n; i++) {
          const [ka, kb] = this.key(cur);
          const [va, vb] = this.value(cur);
          spans.push(ka, kb, va, vb);
        }
        for (let i = 0; i < spans.length; i += 4) {
          this.write(buf.toString('latin1', spans[i], spans[i + 1]), buf, spans[i + 2], spans[i + 3]);
        }
        return;
      }
      case Op.QUEUE_PUSH: {
        const [ka, kb] = this.key(cur);
        const [va, vb] = this.value(cur);
        this.table.queuePush(buf.toString('latin1', ka, kb), valueOf(buf, va, vb));
        return;
      }
      case Op.QUEUE_POP: {
        const [ka, kb] = this.key(cur);
        const [len, v] = this.table.queuePop(buf.toString('latin1', ka, kb));
        this.sendI64(conn, BigInt(len));
        if (v !== undefined) this.sendValue(conn, v, -1);
        return;
      }
      case Op.QUEUE_LEN: {
        const [ka, kb] = this.key(cur);
        this.sendI64(conn, BigInt(this.table.queueLen(buf.toString('latin1', ka, kb))));
        return;
      }
      case Op.LIMITS: {
        const l = this.limits;
        this.send(conn, new Frame(32).u64(l.maxKeyBytes).u64(l.maxValueBytes).u64(l.maxKeysPerRequest).u64(l.maxRequestBytes).done());
        return;
      }
      case Op.JOIN_RANK: {
        const rank = cur.i64();
        if (rank < 0n || rank > 0xffffffffn) throw new Violation(`JOIN_RANK with rank ${rank}`);
        this.joinedRanks.add(Number(rank));
        return;
      }
      case Op.AUTH_HELLO:
        throw new Violation(this.secret ? 'AUTH_HELLO after authentication' : 'client asked to authenticate but this server has no secret');
      default:
        throw new Violation(`unknown opcode ${op}`);
    }
  }

  /** VALIDATE first; then, on a server with a secret, the two-step HMAC exchange. */
  protected handshake(conn: Conn, cur: Cursor, op: number): void {
    if (conn.stage === 'validate') {
      if (op !== Op.VALIDATE) throw new Violation(`first message has opcode ${op}, not VALIDATE`);
      const magic = cur.u32();
      if (magic !== VALIDATE_MAGIC) throw new Violation(`bad VALIDATE magic 0x${magic.toString(16)}`);
      conn.stage = this.secret ? 'auth-hello' : 'ready';
      return;
    }
    const secret = this.secret!;
    if (conn.stage === 'auth-hello') {
      if (op === Op.PING) {
        // Tell our client why instead of letting it guess; a torch client just sees a bad echo.
        cur.take(4);
        this.send(conn, new Frame(4).u32(AUTH_REQUIRED_NONCE).done());
        this.flush(conn);
        throw new Violation('client did not authenticate (this server requires a secret)');
      }
      if (op !== Op.AUTH_HELLO) throw new Violation(`opcode ${op} before authentication (this server requires a secret)`);
      const at = cur.take(AUTH_NONCE_BYTES);
      conn.clientNonce = Buffer.from(cur.buf.subarray(at, at + AUTH_NONCE_BYTES));
      conn.serverNonce = crypto.randomBytes(AUTH_NONCE_BYTES);
      this.send(conn, Buffer.concat([conn.serverNonce, authProof(secret, 'server', conn.clientNonce, conn.serverNonce)]));
      conn.stage = 'auth-proof';
      return;
    }
    if (op !== Op.AUTH_PROOF) throw new Violation(`opcode ${op} during authentication`);
    const at = cur.take(32);
    const got = cur.buf.subarray(at, at + 32);
    const want = authProof(secret, 'client', conn.serverNonce!, conn.clientNonce!);
    if (!crypto.timingSafeEqual(got, want)) throw new Violation('authentication failed: wrong secret');
    conn.stage = 'ready';
    this.send(conn, Buffer.from([0]));
  }

  protected applyTakes(): void {
    const keys = this.takes;
    this.takes = [];
    for (const k of keys) this.table.delete(k);
  }

  /** A WAIT (STOP_WAITING) or WAIT_GET (STOP_WAITING, then the values) is satisfied. */
  protected wake(conn: Conn): void {
    const keys = conn.waitGet;
    if (!keys) {
      this.send(conn, STOP_WAITING);
      return;
    }
    conn.waitGet = null;
    // Called from inside the write that completed the wait: every key has its value now (a key
    // that exists only as a non-empty queue reads as empty, as GET answers it).
    if (keys.length === 1) {
      this.sendValue(conn, this.table.get(keys[0]) ?? '', WaitReply.STOP_WAITING);
    } else {
      this.send(conn, STOP_WAITING);
      for (const k of keys) this.sendValue(conn, this.table.get(k) ?? '', -1);
    }
    // Deleted once the request that completed the wait is done: other waiters of the same write
    // are still being woken and must see the value too.
    if (conn.waitTake) for (const k of keys) this.takes.push(k);
  }

  /**
   * A write of `key` (wire form, latin1) with `value`: when a live subscription's prefix covers
   * the key, sends it there and returns true (the key is then not stored); the shortest such
   * prefix wins. `inReadBuffer`: the value is a view
   * of a connection's read buffer (nobody writes over it, so a big one may be handed on as it is);
   * otherwise it belongs to an in-process caller and is copied — unless `handedOver` (the caller
   * never changes it again) and it goes to a socket. An in-process subscriber still gets a copy
   * of a handed-over value: the same value may be on its way to other subscribers' sockets, and
   * what a subscriber receives is its own to change.
   */
  protected push(key: string, value: Uint8Array, inReadBuffer: boolean, handedOver = false): boolean {
    for (const n of this.subLengths) {
      if (n > key.length || key.charCodeAt(n - 1) !== 0x2f /* '/' */) continue;
      const c = this.subs.get(key.slice(0, n));
      if (!c || c.closed) continue;
      const vl = value.length;
      // Copied: a small value (a view would pin the whole read buffer) and a caller's value. A
      // big view of a read buffer is handed on as it is.
      if (c instanceof LocalSub) {
        this.callLocal(c, utf8Key(key), vl <= 4096 || !inReadBuffer ? new Uint8Array(value) : value);
        return true;
      }
      const copy = vl <= 4096 || !(inReadBuffer || handedOver);
      const kl = key.length;
      const f = Buffer.allocUnsafe(16 + kl + (copy ? vl : 0));
      putU64(f, 0, kl);
      putLatin1(f, 8, key);
      putU64(f, 8 + kl, vl);
      if (copy) f.set(value, 16 + kl);
      this.send(c, f);
      if (!copy) this.send(c, Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, vl));
      return true;
    }
    return false;
  }

  /** SET of `key` to buf[a, b) from a connection: pushed to its subscriber, else stored. */
  protected write(key: string, buf: Buffer, a: number, b: number): void {
    if (this.subs.size && this.push(key, buf.subarray(a, b), true)) return;
    this.table.set(key, valueOf(buf, a, b));
  }
}
