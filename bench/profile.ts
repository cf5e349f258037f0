// Reads a V8 CPU profile (`node --cpu-prof`) of a server process and says where its time went during one
// window of wall-clock time: the top self-time functions, which Deputy code (src/) they were called from, self
// time per package, and inclusive time per Deputy function.
import { readFileSync } from "node:fs";
import path from "node:path";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const ROOT = path.resolve(import.meta.dirname, "..");
const IDLE = new Set(["(idle)"]);

function where(frame: CallFrame): string {
  const { url, lineNumber } = frame;
  if (!url) return "";
  let file = url.replace(/^file:\/\//, "");
  if (file.startsWith(ROOT)) file = path.relative(ROOT, file);
  file = file.replace(/^.*node_modules\//, "");
  // Deputy's TypeScript runs through tsx: positions are in its output, so only the file is meaningful.
  return file.endsWith(".ts") ? file : `${file}:${lineNumber + 1}`;
}

function label(frame: CallFrame): string {
  const name = frame.functionName || "(anonymous)";
  const at = where(frame);
  return at ? `${name} ${at}` : name;
}

/** The package (or src/, node:, wasm, V8 pseudo-frame) a frame belongs to. */
function category(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (!url) return functionName.startsWith("(") ? functionName : "(native/V8)";
  if (url.startsWith("node:")) return "node: internals";
  if (url.startsWith("wasm://")) return "wasm";
  const match = url.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/g);
  if (match) return (match[match.length - 1] as string).replace("node_modules/", "");
  if (url.includes(`${ROOT}/src/`)) return "deputy src/";
  return "other";
}

function isDeputy(frame: CallFrame): boolean {
  return frame.url.includes(`${ROOT}/src/`) && !frame.url.includes("/src/generated/");
}

export interface ProfileWindow {
  /** Wall-clock time (ms since epoch) at which the profiled process was spawned: the profile starts then. */
  spawnedAt: number;
  from: number;
  to: number;
}

export interface ProfileSummary {
  windowMs: number;
  busyMs: number;
  self: {
    fn: string;
    ms: number;
    share: number;
    /** The most frequent chain of callers above the function (up to three distinct frames). */
    chain: string;
    /** The nearest Deputy (src/) frame on the synchronous stack, by share of the function's time. */
    callers: { fn: string; share: number }[];
  }[];
  categories: { name: string; ms: number; share: number }[];
  deputyInclusive: { fn: string; ms: number; share: number }[];
}

export function summariseProfile(file: string, window: ProfileWindow, top = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const stackOf = (id: number): ProfileNode[] => {
    const stack: ProfileNode[] = [];
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const node = byId.get(at);
      if (node) stack.push(node);
    }
    return stack; // leaf first
  };

  const self = new Map<string, number>();
  const callers = new Map<string, Map<string, number>>();
  const chains = new Map<string, Map<string, number>>();
  const categories = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let busy = 0;
  let windowMs = 0;
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    const wall = window.spawnedAt + (t - profile.startTime) / 1000;
    if (wall < window.from || wall > window.to) continue;
    const ms = (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0) / 1000;
    windowMs += ms;
    const stack = stackOf(profile.samples[i] as number);
    const leaf = stack[0];
    if (!leaf || IDLE.has(leaf.callFrame.functionName)) continue;
    busy += ms;
    const fn = label(leaf.callFrame);
    self.set(fn, (self.get(fn) ?? 0) + ms);
    const cat = category(leaf.callFrame);
    categories.set(cat, (categories.get(cat) ?? 0) + ms);
    const deputyFrame = stack.find((node) => isDeputy(node.callFrame));
    const caller = deputyFrame ? label(deputyFrame.callFrame) : "(no Deputy frame on the stack)";
    const above: string[] = [];
    for (const node of stack.slice(1)) {
      const name = label(node.callFrame);
      if (name !== fn && name !== above[above.length - 1] && !name.startsWith("(root)")) above.push(name);
      if (above.length === 3) break;
    }
    const chain = above.join(" ← ") || "(top of stack)";
    const perChain = chains.get(fn) ?? new Map<string, number>();
    perChain.set(chain, (perChain.get(chain) ?? 0) + ms);
    chains.set(fn, perChain);
    const perCaller = callers.get(fn) ?? new Map<string, number>();
    perCaller.set(caller, (perCaller.get(caller) ?? 0) + ms);
    callers.set(fn, perCaller);
    const seen = new Set<string>();
    for (const node of stack) {
      if (!isDeputy(node.callFrame)) continue;
      const key = label(node.callFrame);
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + ms);
    }
  }
  const ranked = (map: Map<string, number>) => [...map.entries()].sort((a, b) => b[1] - a[1]);
  return {
    windowMs,
    busyMs: busy,
    self: ranked(self)
      .slice(0, top)
      .map(([fn, ms]) => ({
        fn,
        ms,
        share: ms / busy,
        chain: ranked(chains.get(fn) ?? new Map())[0]?.[0] ?? "",
        callers: ranked(callers.get(fn) ?? new Map())
          .slice(0, 2)
          .map(([caller, callerMs]) => ({ fn: caller, share: callerMs / ms })),
      })),
    categories: ranked(categories)
      .slice(0, top)
      .map(([name, ms]) => ({ name, ms, share: ms / busy })),
    deputyInclusive: ranked(inclusive)
      .slice(0, top)
      .map(([fn, ms]) => ({ fn, ms, share: ms / busy })),
  };
}

const pct = (share: number) => `${(share * 100).toFixed(1)}%`;

export function formatProfile(title: string, summary: ProfileSummary): string {
  const lines = [
    `### ${title}`,
    "",
    `Window ${(summary.windowMs / 1000).toFixed(1)} s, server busy ${pct(summary.busyMs / summary.windowMs)} of one core.`,
    "",
    "| self time | function | usual callers (nearest first) | nearest Deputy frame on the synchronous stack |",
    "|---:|---|---|---|",
    ...summary.self.map(
      (row) =>
        `| ${pct(row.share)} | \`${row.fn}\` | ${row.chain} | ${row.callers.map((c) => `\`${c.fn}\` (${pct(c.share)})`).join("; ")} |`,
    ),
    "",
    "| self time by package | share |",
    "|---|---:|",
    ...summary.categories.map((row) => `| ${row.name} | ${pct(row.share)} |`),
    "",
    "| inclusive time by Deputy function | share |",
    "|---|---:|",
    ...summary.deputyInclusive.map((row) => `| \`${row.fn}\` | ${pct(row.share)} |`),
    "",
  ];
  return lines.join("\n");
}
