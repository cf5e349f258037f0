// Cache invalidation across server processes: a change is applied to this process's caches at once and
// published on Redis so every other process drops its copy too.
import type { Redis } from "ioredis";

export type InvalidationTopic = "client" | "resource" | "delegation" | "policy";
type Handler = (key: string) => void;

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
  const deliver = (topic: string, key: string) => {
    for (const handler of handlers.get(topic) ?? []) handler(key);
  };
  subscriber.on("message", (received: string, message: string) => {
    if (received !== channel) return;
    const separator = message.indexOf(":");
    if (separator > 0) deliver(message.slice(0, separator), message.slice(separator + 1));
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
      // Never wait on a Redis that is gone: the subscriber connection is dropped either way.
      subscriber.disconnect();
    },
  };
}
