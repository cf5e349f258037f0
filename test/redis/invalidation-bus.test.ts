// Cache invalidation when a process's subscriber connection to Redis drops: what is published meanwhile never
// reaches it, so it must drop its caches rather than serve what it loaded before. A second "process" (its own
// bus and client store, on the test server's database and Redis prefix) has its subscriber killed with
// CLIENT KILL from another connection, by client id.
import { once } from "node:events";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClientStore } from "../../src/oauth/client-store.ts";
import { ALL, createInvalidationBus, type InvalidationTopic } from "../../src/redis/invalidation-bus.ts";
import { createAgent, createPerson } from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";
import { until } from "../helpers/until.ts";

const TOPICS: InvalidationTopic[] = ["client", "resource", "delegation", "policy"];
/** Long enough to act while the subscriber is down, and to check that it still is. */
const RECONNECT_DELAY_MS = 1_500;

describe("invalidation bus: a subscriber that loses its connection", () => {
  let server: TestServer;
  const connections: Redis[] = [];
  const connect = (options: { retryStrategy?: () => number } = {}) => {
    const connection = new Redis(server.deputy.config.redisUrl, options);
    connections.push(connection);
    return connection;
  };

  beforeAll(async () => {
    server = await startServer();
  });
  afterAll(async () => {
    for (const connection of connections) connection.disconnect();
    await server?.close();
  });

  it("drops every cache when the connection goes and again once it is subscribed again", async () => {
    const person = await createPerson(server);
    const agent = await createAgent(server, person.email, []);
    const { prisma } = server.deputy.db;

    const subscriber = connect({ retryStrategy: () => RECONNECT_DELAY_MS });
    const subscriberId = String(await subscriber.client("ID"));
    const bus = await createInvalidationBus(connect(), subscriber, server.deputy.config.redisPrefix);
    const clients = new ClientStore(prisma, bus);
    const dropped = new Set<string>();
    for (const topic of TOPICS) bus.on(topic, (key) => key === ALL && dropped.add(topic));
    const name = async () => (await clients.find(agent.client_id))?.client_name;
    const before = await name();
    expect(before).toBeDefined();

    // A change whose message this process misses: seen as soon as the connection is known to be gone.
    await prisma.agent.update({ where: { clientId: agent.client_id }, data: { name: "Renamed" } });
    const closed = once(subscriber, "close");
    await connect().client("KILL", "ID", subscriberId);
    await closed;
    expect([...dropped].sort()).toEqual([...TOPICS].sort());
    expect(await name()).toBe("Renamed");

    // While it is down, the suspension is published (and lost) after this process cached the agent again.
    dropped.clear();
    await prisma.agent.update({ where: { clientId: agent.client_id }, data: { status: "suspended" } });
    await server.deputy.bus.publish("client", agent.client_id);
    expect(subscriber.status).not.toBe("ready");
    expect(await name()).toBe("Renamed");

    await until(
      "the cache to be dropped after the reconnection",
      async () => (await name()) === undefined,
      5_000,
    );
    expect(subscriber.status).toBe("ready");
    expect([...dropped].sort()).toEqual([...TOPICS].sort());

    // Subscribed again: messages arrive as before.
    await prisma.agent.update({ where: { clientId: agent.client_id }, data: { status: "active" } });
    expect(await name()).toBeUndefined();
    await server.deputy.bus.publish("client", agent.client_id);
    await until("the reactivation to arrive", async () => (await name()) === "Renamed", 5_000);
    await bus.close();
  });
});
