// Cache invalidation across server processes: a change is applied to this process's caches at once and
// published on Redis so every other process drops its copy too.
//
// Pub/sub delivers at most once: whatever is published while the subscriber's connection is down is lost. So
// the bus fails closed: when that connection drops (or errs) every handler is told to drop everything, again
// at each failed reconnection attempt, and once more when the channel is subscribed again, so no cache keeps
// an entry loaded before a message it may have missed.
import type { Redis } from "ioredis";

/** `revocation` carries the revocation list's epoch rather than a key (src/revocation/revocation-list.ts). */
export type InvalidationTopic =
  | "client"
  | "resource"
  | "delegation"
  | "policy"
  | "signing_key"
  | "revocation";
type Handler = (key: string) => void;

/** The key that means "everything of this topic". */
export const ALL = "*";

export interface InvalidationBus {
  publish(topic: InvalidationTopic, key: string): Promise<void>;
  on(topic: InvalidationTopic, handler: Handler): void;
  close(): Promise<void>;
}

export async function createInvalidationBus(
  publisher: Redis,
  subscriber: Redis,
  prefix: string,
): Promise<InvalidationBus> {
  const channel = `${prefix}invalidate`;
  const handlers = new Map<string, Handler[]>();
  let closing = false;
  let missing = false;
  const deliver = (topic: string, key: string) => {
    for (const handler of handlers.get(topic) ?? []) handler(key);
  };
  const dropAll = () => {
    for (const topic of handlers.keys()) deliver(topic, ALL);
  };
  const lost = () => {
    if (closing) return;
    missing = true;
    dropAll();
  };
  // Anything published before the channel is subscribed again is lost: drop everything once it is.
  const resubscribe = async () => {
    await subscriber.subscribe(channel);
    missing = false;
    dropAll();
  };
  subscriber.on("message", (received: string, message: string) => {
    if (received !== channel) return;
    const separator = message.indexOf(":");
    if (separator > 0) deliver(message.slice(0, separator), message.slice(separator + 1));
  });
  subscriber.on("close", lost);
  subscriber.on("error", lost);
  // A failed subscription drops the connection again, which brings another "ready".
  subscriber.on("ready", () => {
    if (missing && !closing) resubscribe().catch(lost);
  });
  await subscriber.subscribe(channel);
  return {
    async publish(topic, key) {
      deliver(topic, key);
      await publisher.publish(channel, `${topic}:${key}`);
    },
    on(topic, handler) {
      handlers.set(topic, [...(handlers.get(topic) ?? []), handler]);
    },
    async close() {
      closing = true;
      // Never wait on a Redis that is gone: the subscriber connection is dropped either way.
      subscriber.disconnect();
    },
  };
}
