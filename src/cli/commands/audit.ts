import { once } from "node:events";
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { createGunzip } from "node:zlib";
import { type Command, Option } from "commander";
import { CliError } from "../admin-client.ts";
import { type Cli, positiveInt, reasonOption, segments } from "../cli-context.ts";

const FILTERS = [
  ["--delegated-by <email>", "delegated_by", "the person agents acted for"],
  ["--agent <client-id>", "agent", "an agent anywhere in the chain"],
  [
    "--resource <pattern>",
    "resource",
    "resource URI; * is a wildcard; without a scheme it matches after scheme://",
  ],
  ["--action <pattern>", "action", "action, e.g. token.exchange or 'token.*'"],
  ["--decision <decision>", "decision", "allow or deny"],
  ["--delegation <id>", "delegation_id", "events under this delegation"],
  ["--task <id>", "task_id", "events for this task"],
  ["--type <types>", "type", "event types, comma-separated (exchange, consent, admin_change, …)"],
  ["--from <date>", "from", "YYYY-MM-DD (UTC day) or ISO 8601 date-time with a zone"],
  ["--to <date>", "to", "YYYY-MM-DD (through that day, UTC) or ISO 8601 date-time with a zone"],
] as const;

function withFilters(command: Command): Command {
  for (const [flags, , description] of FILTERS) command.option(flags, description);
  return command;
}

/** The filters given on the command line, as the admin API's query parameters. */
function filterParams(options: Record<string, unknown>): URLSearchParams {
  const params = new URLSearchParams();
  for (const [flags, name] of FILTERS) {
    const key = flags
      .slice(2)
      .split(" ")[0]
      ?.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()) as string;
    const value = options[key];
    if (typeof value === "string") params.set(name, value);
  }
  return params;
}

interface EventLine {
  seq: number;
  time: string;
  type: string;
  action: string;
  decision: string | null;
  delegated_by: string | null;
  agent_chain: string[];
  resource: string | null;
  scopes_granted: string[];
  reason: string | null;
  actor: string | null;
}

function eventLine(event: EventLine): string {
  const who = event.agent_chain.length ? event.agent_chain.join(" < ") : (event.actor ?? "-");
  return [
    event.time,
    (event.decision ?? "-").padEnd(5),
    event.action,
    who,
    event.delegated_by ? `for ${event.delegated_by}` : "",
    event.resource ?? "",
    event.scopes_granted.join(" "),
    event.decision === "deny" && event.reason ? `(${event.reason})` : "",
    `#${event.seq}`,
  ]
    .filter(Boolean)
    .join("  ");
}

export function registerAudit(program: Command, cli: Cli): Command {
  const audit = program
    .command("audit")
    .description("the audit trail: query, export, verify, retention and legal holds");

  withFilters(audit.command("query"))
    .description("events matching the filters, oldest first (or counts with --stats-by)")
    .option(
      "--stats-by <dimensions>",
      "count events grouped by agent,action,resource,type,decision,delegated_by,actor",
    )
    .option("--limit <n>", "print at most this many events", positiveInt, 1000)
    .addOption(new Option("--order <order>", "asc (oldest first) or desc").choices(["asc", "desc"]))
    .action(async (options) => {
      const params = filterParams(options);
      const json = Boolean(program.opts().json);
      if (options.statsBy) {
        params.set("stats_by", options.statsBy);
        const stats = await cli.admin().request<{
          groups: Record<string, unknown>[];
          total: number;
          truncated: boolean;
          stats_by: string[];
        }>("GET", `/audit?${params}`);
        if (json) return cli.print(stats);
        const columns = [...stats.stats_by, "count"];
        const rows = stats.groups.map((group) => columns.map((c) => String(group[c] ?? "-")));
        const widths = columns.map((c, i) => Math.max(c.length, ...rows.map((r) => (r[i] ?? "").length)));
        const format = (cells: string[]) =>
          cells
            .map((cell, i) => cell.padEnd(widths[i] ?? 0))
            .join("  ")
            .trimEnd();
        const lines = [
          format(columns),
          ...rows.map(format),
          `total: ${stats.total} events${stats.truncated ? " (only the largest 1000 groups shown)" : ""}`,
        ];
        process.stdout.write(`${lines.join("\n")}\n`);
        return;
      }
      if (options.order) params.set("order", options.order);
      const events: EventLine[] = [];
      let cursor: string | null = null;
      do {
        params.set("limit", String(Math.min(1000, options.limit - events.length)));
        if (cursor) params.set("cursor", cursor);
        const page: { events: EventLine[]; next_cursor: string | null } = await cli
          .admin()
          .request("GET", `/audit?${params}`);
        events.push(...page.events);
        cursor = page.next_cursor;
      } while (cursor && events.length < options.limit);
      if (json) return cli.print({ events, more: Boolean(cursor) });
      const lines = events.map(eventLine);
      lines.push(
        `${events.length} events${cursor ? ` (more match: raise --limit, or use deputy audit export)` : ""}`,
      );
      process.stdout.write(`${lines.join("\n")}\n`);
    });

  withFilters(audit.command("export"))
    .description("stream matching events to standard output (NDJSON or CSV), oldest first")
    .addOption(new Option("--format <format>", "ndjson or csv").choices(["ndjson", "csv"]).default("ndjson"))
    .action(async (options) => {
      const params = filterParams(options);
      params.set("format", options.format);
      const response = await cli.admin().stream(`/audit/export?${params}`);
      if (!response.body) throw new CliError("the server sent no export");
      try {
        for await (const chunk of Readable.fromWeb(response.body as WebReadableStream<Uint8Array>)) {
          if (!process.stdout.write(chunk)) await once(process.stdout, "drain");
        }
      } catch {
        throw new CliError("the export was interrupted: the output is incomplete");
      }
    });

  audit
    .command("verify")
    .description("check the hash chain of the whole trail (archives and database), or of an exported file")
    .option("--anchor <seq:hash>", "a head noted from an earlier verify, which must still be there")
    .option("--file <path>", "verify an NDJSON export (or .gz archive file) here, without a server")
    .action(async (options) => {
      let report: {
        ok: boolean;
        first_bad?: { seq: number | null; id: string | null; location: string; problem: string };
      };
      if (options.file) {
        const { verifyEventLines } = await import("../../audit/audit-verify.ts");
        const file = String(options.file);
        const input = file.endsWith(".gz")
          ? createReadStream(file).pipe(createGunzip())
          : createReadStream(file);
        input.on("error", () => {});
        try {
          report = await verifyEventLines(createInterface({ input, crlfDelay: Infinity }), file);
        } catch (error) {
          throw new CliError(`cannot read ${file}: ${(error as Error).message}`);
        }
      } else {
        const params = new URLSearchParams();
        if (options.anchor) params.set("anchor", options.anchor);
        report = await cli.admin().request("GET", `/audit/verify${params.size ? `?${params}` : ""}`);
      }
      cli.print(report);
      if (!report.ok) {
        const bad = report.first_bad;
        throw new CliError(
          `verification FAILED at seq ${bad?.seq ?? "?"}${bad?.id ? ` (id ${bad.id})` : ""} in ${bad?.location}: ${bad?.problem}`,
        );
      }
    });

  audit
    .command("archive")
    .description(
      "archive events older than the hot window now (DEPUTY_AUDIT_HOT_DAYS), unless a legal hold is active",
    )
    .action(async () => cli.print(await cli.admin().request("POST", "/audit/archive")));
  audit
    .command("archives")
    .description("archive files and their chain hashes")
    .action(async () => cli.print(await cli.admin().request("GET", "/audit/archives")));

  audit
    .command("hold")
    .description("place a legal hold: no audit event is removed while it is active")
    .addOption(reasonOption())
    .action(async (options) =>
      cli.print(await cli.admin().request("POST", "/audit/holds", { reason: options.reason })),
    );
  audit
    .command("release <id>")
    .description("release a legal hold")
    .action(async (id: string) =>
      cli.print(await cli.admin().request("POST", `/audit/holds/${segments(id)}/release`)),
    );
  audit
    .command("holds")
    .description("legal holds, active and released")
    .action(async () => cli.print(await cli.admin().request("GET", "/audit/holds")));
  return audit;
}
