// Cedar's input slicing, alone: which policies can apply to an action on a resource, and which context attributes
// and entity data they can observe — so a decision is handed only those (ARCHITECTURE.md, "Cedar sees only what
// the policies read"). Anything the walk does not know counts as reading everything.
import { describe, expect, it } from "vitest";
import { type CompiledPolicySet, compile, inputsFor, sliceFor } from "../../src/policy/cedar.ts";

function compiled(text: string): CompiledPolicySet {
  const result = compile(text);
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.set;
}

const SET = compiled(`
@id("read-anything")
permit (principal, action == Action::"mail.read", resource);

@id("send-in-hours")
forbid (principal, action == Action::"mail.send", resource == ResourceServer::"https://mail.example")
when { context.hour < 8 || context has night_shift };

@id("owner-check")
forbid (principal, action, resource) unless { principal.owner == "someone" };
`);

describe("Cedar input slicing", () => {
  it("keeps for an action and resource only the policies whose scope can match", () => {
    expect(sliceFor(SET, "mail.read", "https://mail.example").sort()).toEqual([
      "owner-check",
      "read-anything",
    ]);
    expect(sliceFor(SET, "mail.send", "https://mail.example").sort()).toEqual([
      "owner-check",
      "send-in-hours",
    ]);
    expect(sliceFor(SET, "mail.send", "https://other.example")).toEqual(["owner-check"]);
  });

  it("names the context attributes a slice reads, and whether it reads entity data", () => {
    expect(inputsFor(SET, ["read-anything"])).toEqual({ context: [], entities: false });
    expect(inputsFor(SET, ["send-in-hours"])).toEqual({ context: ["hour", "night_shift"], entities: false });
    expect(inputsFor(SET, ["read-anything", "owner-check"])).toEqual({ context: [], entities: true });
  });

  it("counts a policy it cannot read as reading everything", () => {
    expect(inputsFor(SET, ["no-such-policy"])).toEqual({ context: "all", entities: true });
    const dynamic = compiled(`permit (principal, action, resource) when { context["hour"] > 1 };`);
    const [id] = Object.keys(dynamic.policies) as [string];
    expect(inputsFor(dynamic, [id]).context).not.toEqual([]);
  });
});
