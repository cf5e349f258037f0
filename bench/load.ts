// Load generation for the benchmark: autocannon (closed loop, fixed concurrency, optionally rate-capped) and a
// small open-loop generator that spaces requests evenly in time. Both run on loopback only, for a bounded time.
import http from "node:http";
import { performance } from "node:perf_hooks";
import autocannon from "autocannon";

/** One HTTP request, sent over and over. */
export interface Target {
  /** The server's base URL, e.g. http://127.0.0.1:4000. */
  base: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

export interface LoadResult {
  /** Completed 2xx responses per second. */
  rps: number;
  ok: number;
  seconds: number;
  /** Latency of 2xx responses, ms (from our own timing, sub-millisecond resolution). */
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  statusCodes: Record<string, number>;
}

function loopbackOnly(base: string): URL {
  const url = new URL(base);
  if (url.hostname !== "127.0.0.1" && url.hostname !== "localhost" && url.hostname !== "[::1]")
    throw new Error(`the benchmark only sends load to loopback, not ${url.hostname}`);
  return url;
}

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] as number;
}

function summarise(latencies: number[], seconds: number, codes: Record<string, number>, errors: number) {
  const sorted = Float64Array.from(latencies).sort();
  let ok = 0;
  let non2xx = 0;
  for (const [code, count] of Object.entries(codes)) {
    if (code.startsWith("2")) ok += count;
    else non2xx += count;
  }
  return {
    rps: ok / seconds,
    ok,
    seconds,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    non2xx,
    errors,
    statusCodes: codes,
  };
}

function runAutocannon(
  target: Target,
  options: { connections: number; seconds: number; overallRate?: number },
): Promise<LoadResult> {
  loopbackOnly(target.base);
  const latencies: number[] = [];
  const codes: Record<string, number> = {};
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: new URL(target.path, target.base).href,
        method: "POST",
        headers: target.headers,
        body: target.body,
        connections: options.connections,
        duration: options.seconds,
        timeout: 10,
        ...(options.overallRate ? { overallRate: Math.max(1, Math.round(options.overallRate)) } : {}),
      },
      (error, result) => {
        if (error) return reject(error);
        resolve(summarise(latencies, result.duration, codes, result.errors + result.timeouts));
      },
    );
    instance.on("response", (_client, statusCode, _bytes, responseTime) => {
      codes[statusCode] = (codes[statusCode] ?? 0) + 1;
      if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime);
    });
  });
}

/**
 * Closed loop: `connections` keep-alive connections, each sending its next request when the previous one has
 * been answered, for `seconds`. With several targets the connections (and any rate) are split evenly between
 * them, all run at once, throughputs add up and the worse latency percentile is reported.
 */
export async function closedLoop(
  targets: Target[],
  options: { connections: number; seconds: number; overallRate?: number },
): Promise<LoadResult> {
  const share = Math.max(1, Math.floor(options.connections / targets.length));
  const results = await Promise.all(
    targets.map((target) =>
      runAutocannon(target, {
        connections: share,
        seconds: options.seconds,
        overallRate: options.overallRate ? options.overallRate / targets.length : undefined,
      }),
    ),
  );
  return combine(results);
}

export function combine(results: LoadResult[]): LoadResult {
  const codes: Record<string, number> = {};
  for (const result of results) {
    for (const [code, count] of Object.entries(result.statusCodes)) codes[code] = (codes[code] ?? 0) + count;
  }
  return {
    rps: results.reduce((sum, r) => sum + r.rps, 0),
    ok: results.reduce((sum, r) => sum + r.ok, 0),
    seconds: Math.max(...results.map((r) => r.seconds)),
    p50: Math.max(...results.map((r) => r.p50)),
    p99: Math.max(...results.map((r) => r.p99)),
    non2xx: results.reduce((sum, r) => sum + r.non2xx, 0),
    errors: results.reduce((sum, r) => sum + r.errors, 0),
    statusCodes: codes,
  };
}

/**
 * Open loop: requests start at evenly spaced instants (`rate` per second) whether or not earlier ones have
 * been answered, over at most `maxSockets` keep-alive connections. Latency runs from the moment a request is
 * handed to the HTTP client, so time spent waiting for a free connection counts.
 */
export async function openLoop(
  target: Target,
  options: { rate: number; seconds: number; maxSockets: number },
): Promise<LoadResult & { offered: number; perSecondP99: number[] }> {
  const url = loopbackOnly(target.base);
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.maxSockets });
  const body = Buffer.from(target.body);
  const headers = { ...target.headers, "content-length": String(body.length) };
  const latencies: number[] = [];
  const codes: Record<string, number> = {};
  let errors = 0;
  let inFlight = 0;
  const interval = 1000 / options.rate;
  const total = Math.floor(options.rate * options.seconds);
  let sent = 0;
  const perSecond: number[][] = [];
  const start = performance.now();

  await new Promise<void>((resolve) => {
    const finishIfDone = () => {
      if (sent >= total && inFlight === 0) resolve();
    };
    const send = () => {
      const began = performance.now();
      inFlight++;
      const request = http.request(
        { agent, host: url.hostname, port: url.port, path: target.path, method: "POST", headers },
        (response) => {
          response.resume();
          response.on("end", () => {
            const code = String(response.statusCode);
            codes[code] = (codes[code] ?? 0) + 1;
            if (code.startsWith("2")) {
              const ms = performance.now() - began;
              latencies.push(ms);
              const second = Math.floor((began - start) / 1000);
              const bucket = perSecond[second] ?? [];
              bucket.push(ms);
              perSecond[second] = bucket;
            }
            inFlight--;
            finishIfDone();
          });
        },
      );
      request.setTimeout(10_000, () => request.destroy(new Error("timeout")));
      request.on("error", () => {
        errors++;
        inFlight--;
        finishIfDone();
      });
      request.end(body);
    };
    const tick = () => {
      const due = Math.min(total, Math.floor((performance.now() - start) / interval) + 1);
      while (sent < due) {
        sent++;
        send();
      }
      if (sent < total) setTimeout(tick, Math.max(0, start + sent * interval - performance.now()));
      else finishIfDone();
    };
    tick();
  });
  agent.destroy();
  return {
    ...summarise(latencies, options.seconds, codes, errors),
    offered: options.rate,
    perSecondP99: Array.from(perSecond, (values) => percentile(Float64Array.from(values ?? []).sort(), 99)),
  };
}
