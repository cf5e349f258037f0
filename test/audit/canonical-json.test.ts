// What the audit chain hashes, alone: canonical JSON (sorted keys at every level, no whitespace, undefined left
// out) and the fast path over an event's content fields, which must give exactly the same text.
import { describe, expect, it } from "vitest";
import { canonicalContent, canonicalJson, eventContent, eventHash } from "../../src/audit/audit-event.ts";

describe("canonical JSON of audit events", () => {
  it("sorts keys at every level, drops undefined, and writes dates, bigints and non-finite numbers one way", () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { f: 1, e: 2 }], c: undefined } })).toBe(
      '{"a":{"d":[3,{"e":2,"f":1}]},"b":1}',
    );
    expect(canonicalJson({ when: new Date("2026-12-01T00:00:00.000Z"), n: 10n, x: Number.NaN })).toBe(
      '{"n":10,"when":"2026-12-01T00:00:00.000Z","x":null}',
    );
    expect(canonicalJson("é\u2028")).toBe(JSON.stringify("é\u2028"));
  });

  it("gives the same text for an event whatever the order of its fields, on both paths", () => {
    const event = {
      seq: "7",
      id: "0b4f3c1e-4a5e-4a55-9d1c-2c9f8a7b6e5d",
      time: "2026-12-01T10:00:00.000Z",
      type: "exchange",
      action: "token.exchange",
      decision: "allow",
      actor: "agt_a",
      agent_chain: ["agt_b", "agt_a"],
      details: { token_ref: "r", z: 1, a: 2 },
      prev_hash: "should-not-count",
      hash: "should-not-count",
    };
    const shuffled = Object.fromEntries(Object.entries(event).reverse());
    expect(canonicalContent(shuffled)).toBe(canonicalContent(event));
    expect(canonicalContent(event)).toBe(canonicalJson(eventContent(event)));
    expect(canonicalContent(event)).not.toContain("should-not-count");
    expect(eventHash("prev", event)).toMatch(/^[0-9a-f]{64}$/);
    expect(eventHash("prev", event)).not.toBe(eventHash("other", event));
    expect(eventHash("prev", { ...event, details: { ...event.details, a: 3 } })).not.toBe(
      eventHash("prev", event),
    );
  });
});
