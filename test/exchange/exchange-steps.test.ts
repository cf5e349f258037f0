// The exchange's pure steps, alone: the request's shape, scope narrowing and depth. Fast, no server: the
// behaviour over HTTP is in exchange.test.ts and the malformed corpus.
import { describe, expect, it } from "vitest";
import { validateParameters } from "../../src/exchange/exchange-request.ts";
import { checkDepth } from "../../src/exchange/steps/check-depth.ts";
import { narrowScope } from "../../src/exchange/steps/narrow-scope.ts";
import { ACCESS_TOKEN_TYPE } from "../../src/http/oauth-constants.ts";
import { OAuthError } from "../../src/http/oauth-error.ts";

const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (error) {
    if (error instanceof OAuthError)
      return { error: error.error, description: error.message, scope: error.scope };
    throw error;
  }
  throw new Error("not refused");
};

describe("validateParameters (RFC 8693 §2.1)", () => {
  const valid = { subject_token: "abc", subject_token_type: ACCESS_TOKEN_TYPE };

  it("reads a well-formed request: targets from resource and audience once each, scopes once each", () => {
    expect(
      validateParameters({
        ...valid,
        resource: ["https://a.example", "https://b.example"],
        audience: "https://a.example",
        scope: "x y  x",
        reasoning: "why",
      }),
    ).toEqual({
      subjectToken: "abc",
      actor: undefined,
      targets: ["https://a.example", "https://b.example"],
      scopes: ["x", "y"],
      reasoning: "why",
    });
    expect(validateParameters(valid)).toMatchObject({ targets: [], scopes: undefined });
  });

  it("refuses what the RFC requires or forbids, with a description that says what to fix", () => {
    expect(refusal(() => validateParameters({ subject_token_type: ACCESS_TOKEN_TYPE }))).toMatchObject({
      error: "invalid_request",
      description: "missing required parameter 'subject_token'",
    });
    expect(refusal(() => validateParameters({ subject_token: "abc" })).description).toMatch(
      /subject_token_type/,
    );
    expect(refusal(() => validateParameters({ ...valid, subject_token_type: "urn:x" })).error).toBe(
      "invalid_request",
    );
    expect(refusal(() => validateParameters({ ...valid, subject_token: "a".repeat(8193) })).description).toBe(
      "subject_token is too long",
    );
    expect(refusal(() => validateParameters({ ...valid, requested_token_type: "urn:x" })).error).toBe(
      "invalid_request",
    );
    expect(refusal(() => validateParameters({ ...valid, actor_token: "t" })).description).toBe(
      "actor_token requires actor_token_type",
    );
    expect(
      refusal(() => validateParameters({ ...valid, actor_token_type: ACCESS_TOKEN_TYPE })).description,
    ).toBe("actor_token_type was sent without an actor_token");
    expect(
      refusal(() => validateParameters({ ...valid, actor_token: "t", actor_token_type: "urn:x" }))
        .description,
    ).toMatch(/actor_token_type must be/);
    expect(refusal(() => validateParameters({ ...valid, scope: "  " }))).toMatchObject({
      error: "invalid_scope",
      scope: "",
    });
  });
});

describe("narrowScope: never wider than the subject token, the caller's grants and the resource", () => {
  const caller = { clientId: "agt_a", grants: { "https://mail.example": ["mail.read", "mail.send"] } };
  const resource = {
    uri: "https://mail.example",
    scopes: [{ name: "mail.read" }, { name: "mail.send" }, { name: "mail.admin" }],
  } as never;
  const delegationScopes = ["mail.read", "mail.send", "mail.admin"];

  it("gives the whole intersection when no scope is asked, and exactly what is asked within it", () => {
    const subjectScopes = ["mail.read", "mail.send", "mail.admin", "files.read"];
    expect(narrowScope({ caller, subjectScopes, delegationScopes, resource, requested: undefined })).toEqual([
      "mail.read",
      "mail.send",
    ]);
    expect(
      narrowScope({ caller, subjectScopes, delegationScopes, resource, requested: ["mail.send"] }),
    ).toEqual(["mail.send"]);
    // The delegation narrowed since the token was minted: what it lost is no longer available.
    expect(
      narrowScope({ caller, subjectScopes, delegationScopes: ["mail.read"], resource, requested: undefined }),
    ).toEqual(["mail.read"]);
  });

  it("refuses a wider ask, and a token with nothing usable here, as invalid_scope", () => {
    expect(
      refusal(() =>
        narrowScope({
          caller,
          subjectScopes: ["mail.read"],
          delegationScopes,
          resource,
          requested: ["mail.send"],
        }),
      ),
    ).toMatchObject({ error: "invalid_scope", scope: "mail.send" });
    expect(
      refusal(() =>
        narrowScope({
          caller,
          subjectScopes: ["mail.admin"],
          delegationScopes,
          resource,
          requested: undefined,
        }),
      ),
    ).toMatchObject({ error: "invalid_scope", scope: "mail.admin" });
  });
});

describe("checkDepth: the least of the token's, the delegation's and the server's limits", () => {
  const limits = { tokenLimit: 3, delegationLimit: 4, serverLimit: 5, chainAgents: [] };

  it("allows a chain within the least limit and says how long chains from the new token may grow", () => {
    expect(checkDepth({ ...limits, chainLength: 2, callerMaxDepth: 1 })).toBe(2);
    expect(checkDepth({ ...limits, chainLength: 2, callerMaxDepth: 5 })).toBe(3);
    expect(checkDepth({ ...limits, serverLimit: 2, chainLength: 1, callerMaxDepth: 5 })).toBe(2);
  });

  it("holds the chain to what every agent in it allows now (a lowered max_depth reaches live tokens)", () => {
    // planner (max_depth 3 when it delegated) now lowered to 1: a chain of 2 under it is one too many.
    const chainAgents = [{ clientId: "agt_planner", maxDepth: 1 }];
    expect(
      refusal(() => checkDepth({ ...limits, chainLength: 2, callerMaxDepth: 1, chainAgents })),
    ).toMatchObject({
      error: "invalid_request",
      description:
        "delegation chain would be 2 agents long; agt_planner in it (max_depth 1) allows at most 1",
    });
    expect(
      checkDepth({
        ...limits,
        chainLength: 2,
        callerMaxDepth: 3,
        chainAgents: [{ clientId: "p", maxDepth: 2 }],
      }),
    ).toBe(2);
  });

  it("refuses a chain longer than any one limit", () => {
    for (const over of [{ tokenLimit: 1 }, { delegationLimit: 1 }, { serverLimit: 1 }]) {
      expect(
        refusal(() => checkDepth({ ...limits, ...over, chainLength: 2, callerMaxDepth: 3 })),
      ).toMatchObject({
        error: "invalid_request",
        description: "delegation chain would be 2 agents long; this delegation allows at most 1",
      });
    }
  });
});
