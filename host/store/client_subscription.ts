import { destroyedError, type GroupcommError } from '../base/errors.js';
import type { Subscription } from './types.js';

/**
 * What subscribe() hands out, over TCP or in memory alike: close() once; onClose listeners hear
 * the reason the stream ended, or nothing when it was closed on purpose.
 */
export class SubscriptionHandle implements Subscription {
  private closing = false;
  private ended = false;
  private reason?: Error;
  private readonly listeners: ((e?: Error) => void)[] = [];

  /** @param stop ends the stream (with the reason, when it is a failure) */
  constructor(private readonly stop: (e?: GroupcommError) => void) {}

  /** The stream ended (closed, lost, or its store closed). Idempotent. */
  end(e?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.reason = e;
    for (const fn of this.listeners) fn(this.closing ? undefined : e);
  }

  /** Ends the stream because of `e` (its TcpStore closed). */
  fail(e: GroupcommError): void {
    this.stop(e);
    this.end(e);
  }

  close(): void {
    this.closing = true;
    this.stop();
    this.end();
  }

  onClose(fn: (e?: Error) => void): void {
    if (this.ended) fn(this.closing ? undefined : this.reason ?? destroyedError('subscription closed'));
    else this.listeners.push(fn);
  }
}
