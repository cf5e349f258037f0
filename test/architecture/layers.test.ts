// The layering rule (ARCHITECTURE.md, "Layers"): every import in src/ goes down, never to a sibling or above,
// and only oauth/ and what sits above it know oidc-provider. A folder cycle is impossible while this holds.
import path from "node:path";
import { describe, expect, it } from "vitest";
import { importsUnder, LAYERS, layerOf, violations } from "../../scripts/layers.ts";

const SRC = path.resolve(import.meta.dirname, "../../src");

describe("the layers of src/", () => {
  it("has no import that goes up, sideways, or to oidc-provider below oauth/", () => {
    expect(violations(importsUnder(SRC))).toEqual([]);
  });

  it("reads every kind of import: static, type-only, re-export and dynamic", () => {
    const imports = importsUnder(SRC);
    expect(imports.length).toBeGreaterThan(300);
    // main.ts loads app.ts dynamically (after the settings are checked): the reader must see it.
    expect(imports).toContainEqual({ from: "main.ts", to: "./app.ts" });
    expect(imports.some(({ from, to }) => from.startsWith("oauth/") && to === "oidc-provider")).toBe(true);
  });

  it("puts every folder of src/ on a layer, app.ts at the top but for the entry points", () => {
    const nodes = new Set(importsUnder(SRC).map(({ from }) => from.split("/")[0] as string));
    for (const node of nodes) expect(layerOf(node), node).toBeGreaterThanOrEqual(0);
    expect(layerOf("app.ts")).toBe(LAYERS.length - 2);
  });

  it("refuses an upward import, a sibling's, oidc-provider below oauth/ and a folder on no layer", () => {
    expect(
      violations([
        { from: "registry/agents.ts", to: "./revocation/revocations.ts" },
        { from: "pages/web.ts", to: "./admin/schemas.ts" },
        { from: "exchange/steps/mint.ts", to: "oidc-provider" },
        { from: "delegation/x.ts", to: "oidc-provider/lib/helpers/errors.js" },
        { from: "extras/thing.ts", to: "./db/connect.ts" },
        { from: "audit/audit-log.ts", to: "./extras/thing.ts" },
      ]),
    ).toEqual([
      "registry/agents.ts imports revocation/revocations.ts: revocation is above registry",
      "pages/web.ts imports admin/schemas.ts: pages and admin are siblings on one layer",
      "exchange/steps/mint.ts imports oidc-provider: only oauth/ and the layers above it may",
      "delegation/x.ts imports oidc-provider/lib/helpers/errors.js: only oauth/ and the layers above it may",
      "extras/thing.ts: src/extras is on no layer (add it to LAYERS in scripts/layers.ts)",
      "audit/audit-log.ts imports extras/thing.ts: src/extras is on no layer",
    ]);
  });

  it("allows imports within a folder and down the layers", () => {
    expect(
      violations([
        { from: "oauth/provider.ts", to: "./oauth/provider-hooks.ts" },
        { from: "pages/provider-hooks.ts", to: "./oauth/provider-hooks.ts" },
        { from: "revocation/revocations.ts", to: "./registry/revoker.ts" },
        { from: "app.ts", to: "./pages/index.ts" },
        { from: "oauth/provider.ts", to: "oidc-provider" },
        { from: "db/connect.ts", to: "pg" },
      ]),
    ).toEqual([]);
  });
});
