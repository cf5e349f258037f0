// The lifetime cap of the issuance tail, alone: the earliest of the parent token, the delegation, the resource's
// lifetime and the server's cap.
import { describe, expect, it } from "vitest";
import { OAuthError } from "../../src/http/oauth-error.ts";
import type { Grounds } from "../../src/issuance/issuance-state.ts";
import { capLifetime } from "../../src/issuance/steps/cap-lifetime.ts";

const now = () => Math.floor(Date.now() / 1000);

function grounds(limits: { parent: number; delegation: number; resource: number; cap: number }): Grounds {
  return {
    parent: { exp: now() + limits.parent },
    delegation: { endsAt: new Date((now() + limits.delegation) * 1000) },
    resource: { tokenTtlSeconds: limits.resource },
    deps: { tokenTtlCap: limits.cap },
  } as never;
}

describe("capLifetime", () => {
  it("is the least of the four limits", () => {
    const all = { parent: 900, delegation: 800, resource: 700, cap: 600 };
    expect(capLifetime(grounds(all))).toBe(600);
    expect(capLifetime(grounds({ ...all, resource: 300 }))).toBe(300);
    expect(capLifetime(grounds({ ...all, delegation: 200 }))).toBe(200);
    expect(capLifetime(grounds({ ...all, parent: 100 }))).toBe(100);
  });

  it("refuses when the parent token or the delegation has no time left", () => {
    const ended = () => capLifetime(grounds({ parent: 0, delegation: 800, resource: 700, cap: 600 }));
    expect(ended).toThrow(OAuthError);
    expect(ended).toThrow("subject_token or its delegation expires too soon to exchange");
    expect(() => capLifetime(grounds({ parent: 900, delegation: -5, resource: 700, cap: 600 }))).toThrow(
      OAuthError,
    );
  });
});
