import { readFileSync } from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { createTwoFilesPatch } from "diff";
import { CliError } from "../admin-client.ts";
import { type Cli, positiveInt, segments } from "../cli-context.ts";

interface Problem {
  policy?: string;
  location?: string;
  message: string;
}

function readSources(files: string[]): { name: string; text: string }[] {
  return files.map((file) => {
    try {
      return { name: path.basename(file), text: readFileSync(file, "utf8") };
    } catch {
      throw new CliError(`cannot read ${file}`);
    }
  });
}

const line = (p: Problem) =>
  `${[p.location, p.policy ? `policy ${p.policy}` : undefined].filter(Boolean).join(" ")}: ${p.message}`;

function versionArg(value: string): string {
  positiveInt(value);
  return value;
}

export function registerPolicy(program: Command, cli: Cli): Command {
  const json = () => Boolean(program.opts().json);
  const policy = program.command("policy").description("Cedar policies (versioned) and velocity rules");
  policy
    .command("validate <files...>")
    .description("check policy files against the server's schema without applying them")
    .action(async (files: string[]) => {
      const report = await cli.admin().request<{
        valid: boolean;
        policies: string[];
        errors: Problem[];
        warnings: Problem[];
      }>("POST", "/policies/validate", { sources: readSources(files) });
      if (json()) {
        cli.print(report);
      } else {
        for (const problem of report.errors) process.stdout.write(`error ${line(problem)}\n`);
        for (const problem of report.warnings) process.stdout.write(`warning ${line(problem)}\n`);
        if (report.valid) {
          process.stdout.write(`valid: ${report.policies.length} policies (${report.policies.join(", ")})\n`);
        }
      }
      if (!report.valid) throw new CliError(`the policy set is invalid (${report.errors.length} errors)`);
    });
  policy
    .command("apply <files...>")
    .description("validate the files together and make them the next policy version, in force at once")
    .action(async (files: string[]) =>
      cli.print(await cli.admin().request("POST", "/policies", { sources: readSources(files) })),
    );
  policy
    .command("show [version]")
    .description("print a policy version (default: the one in force)")
    .action(async (version?: string) => {
      const shown = await cli
        .admin()
        .request<{ text: string }>("GET", `/policies/${version ? segments(versionArg(version)) : "current"}`);
      if (json()) cli.print(shown);
      else process.stdout.write(shown.text.endsWith("\n") ? shown.text : `${shown.text}\n`);
    });
  policy.command("list").action(async () => cli.print(await cli.admin().request("GET", "/policies")));
  policy
    .command("diff <from> <to>")
    .description("line diff between two policy versions")
    .action(async (from: string, to: string) => {
      const [a, b] = await Promise.all(
        [from, to].map((v) =>
          cli
            .admin()
            .request<{ version: number; text: string }>("GET", `/policies/${segments(versionArg(v))}`),
        ),
      );
      process.stdout.write(
        createTwoFilesPatch(`version ${a?.version}`, `version ${b?.version}`, a?.text ?? "", b?.text ?? ""),
      );
    });

  const velocity = policy
    .command("velocity")
    .description("velocity rules: uses per (person, agent) in a window");
  velocity
    .command("add")
    .requiredOption("--name <name>")
    .requiredOption("--resource <uri>", "a resource server URI, or * for any")
    .requiredOption("--action <scope>", "an action (scope) name, or * for any")
    .requiredOption("--limit <n>", "uses allowed within the window", positiveInt)
    .requiredOption("--window <seconds>", "the sliding window", positiveInt)
    .option("--shadow", "never refuse: record a would-deny audit event instead")
    .option("--contain", "suspend the agent when it breaches the rule")
    .action(async (o) =>
      cli.print(
        await cli.admin().request("POST", "/velocity-rules", {
          name: o.name,
          resource: o.resource,
          action: o.action,
          limit: o.limit,
          window_seconds: o.window,
          shadow: Boolean(o.shadow),
          contain_on_breach: Boolean(o.contain),
        }),
      ),
    );
  velocity.command("list").action(async () => cli.print(await cli.admin().request("GET", "/velocity-rules")));
  velocity
    .command("remove <name>")
    .action(async (name: string) =>
      cli.print(await cli.admin().request("DELETE", `/velocity-rules/${segments(name)}`)),
    );
  return policy;
}
