import { setTimeout as sleep } from "node:timers/promises";

/**
 * Polls `probe` until it gives a value (anything but undefined, null or false), or fails naming what it waited
 * for. For what happens asynchronously on purpose (jobs, pub/sub, other processes), never to wait out a race.
 */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false>,
  timeoutMs = 20_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== null && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}
