/**
 * TcpStore's requests that need a connection of their own: WAIT and WAIT_GET on a small pool of
 * wait connections (with the bookkeeping that says when a read may leave the main connection),
 * and subscriptions.
 */
import { anySignal, effectiveTimeout, guard, type OpOptions } from '../base/deadline.js';
import { abortedError, invalidArgument, isGroupcommError, protocolError, timeoutError } from '../base/errors.js';
import { openConnection } from './connect.js';
import { Connection, readBytes, readU8, readWaitGet } from './connection.js';
import { CheckReply, keyListFrame, Op, SubscribeReply, WaitReply } from './protocol.js';
import type { Subscription } from './types.js';
import { keyFrame, waitGetFrame } from './client_frames.js';
import { SubscriptionHandle } from './client_subscription.js';
import { StoreClientBase } from './client_base.js';

/** Idle wait connections kept for reuse; more are closed after use. */
const MAX_IDLE_WAIT_CONNECTIONS = 4;

/** Keys remembered as written-but-unconfirmed (TcpStore.unconfirmed) before the map is pruned. */
const MAX_TRACKED_WRITES = 4096;

export abstract class WaitingClient extends StoreClientBase {
  /**
   * Store.subscribe: against a groupcomm server, a connection of its own that receives every
   * key written under `prefix` as the server applies the write (SUBSCRIBE). undefined against a
   * torch server. `onMessage` runs inside the socket's data handler: it must not throw.
   */
  async subscribe(prefix: string, onMessage: (key: string, value: Uint8Array) => void, opts?: OpOptions): Promise<Subscription | undefined> {
    this.ensureOpen();
    if (typeof prefix !== 'string' || !prefix.endsWith('/')) throw invalidArgument(`subscribe: prefix must end in '/', got '${prefix}'`);
    if (!this.extended) return undefined;
    const cut = this.prefix ? 1 : 0;
    const local = this.spec.local?.subscribeLocal ? this.subscribeLocal(prefix, (k, v) => onMessage(k.slice(cut), v)) : undefined;
    if (local) return local;
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    this.waiting++;
    let conn: Connection;
    try {
      ({ conn } = await openConnection({ ...this.spec, timeoutMs, signal: anySignal([opts?.signal, this.life.signal]) }));
    } catch (e) {
      throw this.lostErr ?? e;
    } finally {
      this.waiting--;
    }
    if (this.closed) {
      conn.close();
      this.ensureLive();
    }
    const sub = this.track(new SubscriptionHandle((e) => conn.close(e)));
    conn.onClose((e) => sub.end(e));
    // Set before the request: pushes may arrive in the same read as the reply.
    conn.stream((cur) => {
      const kn = cur.u64();
      if (kn > 1 << 20) throw protocolError(`store pushed a key of ${kn} bytes`);
      const at = cur.take(kn);
      const v = readBytes(cur);
      onMessage(cur.buf.toString('utf8', at + cut, at + kn), v);
    });
    let status: number;
    try {
      status = await guard(conn.request(keyFrame(Op.SUBSCRIBE, this.wireKey(prefix)), readU8, timeoutMs, 'subscribe', prefix), {
        timeoutMs, signal: opts?.signal, what: `subscribe to ${prefix}`, fields: { key: prefix },
        onTimeout: (elapsedMs) => timeoutError(`store subscribe timed out after ${timeoutMs}ms, key: ${prefix}`, { key: prefix, timeoutMs, elapsedMs }),
      });
    } catch (e) {
      sub.close();
      throw e;
    }
    if (status !== SubscribeReply.OK) {
      sub.close();
      throw invalidArgument(status === SubscribeReply.REFUSED
        ? `subscribe: the store lets clients subscribe only to mailboxes (<namespace>/to/<rank>/), not '${prefix}'`
        : `subscribe: another client already subscribed to '${prefix}'`, { key: prefix });
    }
    return sub;
  }

  /**
   * subscribe() against the server in this process: pushes are calls (TcpStoreServer.subscribeLocal).
   * undefined when that server is closing (the caller then goes the TCP way, and fails as it would).
   */
  protected subscribeLocal(prefix: string, onMessage: (key: string, value: Uint8Array) => void): Subscription | undefined {
    let sub: SubscriptionHandle | undefined;
    let handle: { close(): void } | null;
    try {
      handle = this.spec.local!.subscribeLocal!(this.wireLatin1(prefix), onMessage, (e) => sub!.end(e));
    } catch {
      return undefined;
    }
    if (handle === null) throw invalidArgument(`subscribe: another client already subscribed to '${prefix}'`, { key: prefix });
    const h = handle;
    sub = this.track(new SubscriptionHandle(() => h.close()));
    return sub;
  }

  /** Keeps `sub` until it ends, so that close() can end it. */
  protected track(sub: SubscriptionHandle): SubscriptionHandle {
    this.subscriptions.add(sub);
    sub.onClose(() => this.subscriptions.delete(sub));
    return sub;
  }

  /** Notes that `key` is changed by the request about to be sent on the main connection (see mayBypass). */
  protected wrote(key: string): void {
    const u = this.unconfirmed;
    u.set(key, this.main.seq);
    if (u.size <= MAX_TRACKED_WRITES) return;
    for (const [k, seq] of u) if (this.main.applied(seq)) u.delete(k);
    if (u.size > MAX_TRACKED_WRITES / 2) {
      // Mostly reply-less writes (nothing confirms them): forget them all, and bypass nothing
      // until the newest of them is confirmed.
      u.clear();
      this.unconfirmedCutoff = this.main.seq;
    }
  }

  /**
   * May a read of `key` go on a wait connection instead of the main one? Only if no change of
   * the key made by this client could still be on its way: the server applies each connection's
   * requests in order, but nothing orders two connections, so a WAIT_GET could otherwise overtake
   * this client's own SET or DELETE and read the older value.
   */
  protected mayBypass(key: string): boolean {
    if (!this.main.applied(this.unconfirmedCutoff)) return false;
    const seq = this.unconfirmed.get(key);
    if (seq === undefined) return true;
    if (!this.main.applied(seq)) return false;
    this.unconfirmed.delete(key);
    return true;
  }

  /**
   * WAIT (or, with `get`, WAIT_GET, which also returns the values) on a connection of its own.
   * On timeout or abort: CANCEL_WAIT, and the reply reader accepts either WAIT_CANCELED alone or
   * a STOP_WAITING (with the values) that raced it followed by WAIT_CANCELED; after that the
   * connection is in step again and goes back to the pool.
   */
  protected async waitWire(
    wks: Buffer[], keys: string[], opts?: OpOptions, reportMs?: number, knownMissing = false, mode: 'wait' | 'get' | 'take' = 'wait',
  ): Promise<Uint8Array[] | undefined> {
    this.waiting++;
    try {
      const get = mode !== 'wait';
      this.ensureLive();
      const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
      const t0 = performance.now();
      let conn = this.idle.pop();
      if (!conn) {
        // Often the keys are there already: one pipelined CHECK saves opening a connection.
        if (!knownMissing && await this.call(keyListFrame(Op.CHECK, wks), readU8, 'wait', opts, keys, true) === CheckReply.READY) return undefined;
        let c: Connection;
        try {
          ({ conn: c } = await openConnection({
            ...this.spec,
            timeoutMs: Math.max(1, timeoutMs - (performance.now() - t0)),
            signal: anySignal([opts?.signal, this.life.signal]),
          }));
        } catch (e) {
          if (this.lostErr) throw this.lostErr;
          // Out of time (or aborted) before the wait could even be sent: still a wait that gave up
          // on these keys, and the error says so.
          const shown = reportMs ?? timeoutMs;
          if (isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT')) {
            throw timeoutError(`wait timeout after ${shown}ms, keys: ${keys.join(', ')} (opening a wait connection: ${e.message})`,
              { keys, timeoutMs: shown, elapsedMs: performance.now() - t0, cause: e });
          }
          if (isGroupcommError(e, 'ERR_GROUPCOMM_ABORTED')) {
            throw abortedError(`wait for ${keys.join(', ')} aborted`, { keys, cause: e });
          }
          throw e;
        }
        if (this.closed) {
          c.close();
          this.ensureLive();
        }
        conn = c;
        this.waitConns.add(c);
        c.onClose(() => {
          this.waitConns.delete(c);
          const i = this.idle.indexOf(c);
          if (i >= 0) this.idle.splice(i, 1);
        });
      }
      const c = conn;
      let cancelled = false;
      let cancelTimer: NodeJS.Timeout | undefined;
      const reply: Promise<unknown> = get
        ? c.request(waitGetFrame(wks, mode === 'take'), readWaitGet(wks.length), Infinity)
        : c.request(keyListFrame(Op.WAIT, wks), readU8, Infinity);
      reply.then(
        () => { clearTimeout(cancelTimer); this.release(c); },
        () => { clearTimeout(cancelTimer); c.close(); },
      );
      const shown = reportMs ?? timeoutMs;
      const left = Math.max(1, timeoutMs - (performance.now() - t0));
      const got = await guard(reply, {
        timeoutMs: left,
        signal: opts?.signal,
        what: `wait for ${keys.join(', ')}`,
        fields: { keys },
        onTimeout: (elapsedMs) => timeoutError(`wait timeout after ${shown}ms, keys: ${keys.join(', ')}`, { keys, timeoutMs: shown, elapsedMs }),
        cancel: () => {
          if (cancelled || c.closed) return;
          cancelled = true;
          // The WAIT's reply may already have been read in this very tick (an abort fired by a
          // 'data' listener, before the reply's promise callbacks ran). Then there is nothing to
          // cancel, and a CANCEL_WAIT now would leave a WAIT_CANCELED byte that the next WAIT on
          // this pooled connection would take for its own reply.
          const swapped = c.replaceHeadReader((cur) => {
            const b = cur.u8();
            if (b === WaitReply.STOP_WAITING) {
              if (get) for (let i = 0; i < wks.length; i++) readBytes(cur);
              if (cur.u8() !== WaitReply.WAIT_CANCELED) throw protocolError('expected WAIT_CANCELED after STOP_WAITING');
            } else if (b !== WaitReply.WAIT_CANCELED) {
              throw protocolError(`unexpected wait reply ${b}`);
            }
            return b;
          });
          if (!swapped) return;
          c.writeNow(Buffer.from([Op.CANCEL_WAIT]));
          // A server that never answers the cancel would keep this connection (and its socket)
          // forever: the WAIT itself has no deadline. Give the answer the store's timeout.
          cancelTimer = setTimeout(() => c.close(timeoutError(
            `store ${this.host}:${this.port} did not answer CANCEL_WAIT within ${this.timeoutMs}ms (keys: ${keys.join(', ')})`,
            { keys, timeoutMs: this.timeoutMs })), this.timeoutMs);
          cancelTimer.unref?.();
        },
      });
      return get ? got as Uint8Array[] : undefined;
    } finally {
      this.waiting--;
    }
  }

  protected release(c: Connection): void {
    if (this.closed || c.closed) return c.close();
    if (this.idle.length >= MAX_IDLE_WAIT_CONNECTIONS) {
      this.waitConns.delete(c);
      return c.close();
    }
    this.idle.push(c);
  }
}
