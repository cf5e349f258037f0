// What every CLI command module gets: the admin API client (created on first use) and the printer.
import { InvalidArgumentError, Option } from "commander";
import type { AdminClient } from "./admin-client.ts";

export interface Cli {
  admin(): AdminClient;
  print(value: unknown): void;
}

export const words = (value: string) => value.split(/[\s,]+/).filter(Boolean);
export const collect = (value: string, previous: string[] = []) => [...previous, value];
export const positiveInt = (value: string) => {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError("must be a whole number");
  return Number(value);
};
export const reasonOption = () =>
  new Option("--reason <reason>", "why (recorded in the audit trail)").makeOptionMandatory();
/** Path segments, each URL-encoded. */
export const segments = (...parts: string[]) => parts.map(encodeURIComponent).join("/");
