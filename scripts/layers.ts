// The layering rule of src/ (ARCHITECTURE.md, "Layers"): every import goes down. A file may import from its own
// folder and from folders on lower layers; never from a sibling on its own layer, never from above. Only oauth/
// and what sits above it may import oidc-provider. `npm run layers` prints the violations; a test runs it.
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import ts from "typescript";

/** Bottom first. Each entry is one layer: top-level folders of src/, or files directly under src/. */
export const LAYERS: readonly (readonly string[])[] = [
  ["generated", "types"],
  ["config.ts", "logger.ts"],
  ["security", "cache", "http"],
  ["db", "redis"],
  ["jobs"],
  ["audit"],
  ["delegation"],
  ["registry"],
  ["revocation"],
  ["policy"],
  ["issuance"],
  ["exchange"],
  ["oauth"],
  ["pages", "admin", "authzen"],
  ["app.ts", "worker.ts"],
  ["main.ts", "cli"],
];

/** The lowest layer whose modules may import oidc-provider. */
const PROVIDER_FLOOR = "oauth";

export interface Import {
  /** Importing file, relative to src/. */
  from: string;
  /** Imported module: a path relative to src/ for relative imports, else the package specifier. */
  to: string;
}

/** The top-level node of a path relative to src/: its folder, or the file itself when it is at the root. */
export const nodeOf = (file: string): string => file.split("/")[0] as string;

export function layerOf(node: string): number {
  return LAYERS.findIndex((layer) => layer.includes(node));
}

/** Every violation of the rule in `imports`, as sentences. */
export function violations(imports: Import[]): string[] {
  const found: string[] = [];
  const floor = layerOf(PROVIDER_FLOOR);
  for (const { from, to } of imports) {
    const source = nodeOf(from);
    const sourceLayer = layerOf(source);
    if (sourceLayer < 0) {
      found.push(`${from}: src/${source} is on no layer (add it to LAYERS in scripts/layers.ts)`);
      continue;
    }
    if (to === "oidc-provider" || to.startsWith("oidc-provider/")) {
      if (sourceLayer < floor && source !== "types")
        found.push(`${from} imports ${to}: only ${PROVIDER_FLOOR}/ and the layers above it may`);
      continue;
    }
    if (!to.startsWith(".")) continue;
    const target = nodeOf(to.slice(2));
    if (target === source) continue;
    const targetLayer = layerOf(target);
    if (targetLayer < 0) found.push(`${from} imports ${to.slice(2)}: src/${target} is on no layer`);
    else if (targetLayer === sourceLayer)
      found.push(`${from} imports ${to.slice(2)}: ${source} and ${target} are siblings on one layer`);
    else if (targetLayer > sourceLayer)
      found.push(`${from} imports ${to.slice(2)}: ${target} is above ${source}`);
  }
  return found;
}

/** The imports of every TypeScript module under `srcDir` (relative targets as "./<path under src>"). */
export function importsUnder(srcDir: string): Import[] {
  const imports: Import[] = [];
  for (const file of walk(srcDir)) {
    const from = path.relative(srcDir, file).split(path.sep).join("/");
    if (nodeOf(from) === "generated") continue;
    const info = ts.preProcessFile(readFileSync(file, "utf8"), true, true);
    for (const { fileName } of info.importedFiles) {
      if (fileName.startsWith(".")) {
        const resolved = path.relative(srcDir, path.resolve(path.dirname(file), fileName));
        imports.push({ from, to: `./${resolved.split(path.sep).join("/")}` });
      } else {
        imports.push({ from, to: fileName });
      }
    }
  }
  return imports;
}

function* walk(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) yield* walk(full);
    else if (/\.(ts|mts)$/.test(name)) yield full;
  }
}

if (import.meta.filename === process.argv[1]) {
  const found = violations(importsUnder(path.resolve(import.meta.dirname, "../src")));
  for (const line of found) console.log(line);
  console.log(`layer violations: ${found.length}`);
  process.exit(found.length ? 1 : 0);
}
