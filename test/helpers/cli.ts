// The `deputy` CLI as people run it: `node bin/deputy.js …` in a child process, from the repository root.
import { spawn } from "node:child_process";
import path from "node:path";
import { ADMIN_SECRET } from "./server.ts";

const REPO = path.resolve(import.meta.dirname, "../..");
const SPAWN_TIMEOUT_MS = 20_000;

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `deputy …args` against the server at `url` with a minimal environment — PATH, HOME, DEPUTY_URL and the
 * bootstrap admin secret — then `env` on top (a value of `undefined` removes a variable). Resolves with the exit
 * code and the whole output once the process has closed; rejects if it has not finished within 20 s.
 */
export function runDeputy(
  url: string,
  args: string[],
  env: Record<string, string | undefined> = {},
): Promise<CliRun> {
  const childEnv: Record<string, string> = {};
  const base: Record<string, string | undefined> = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    DEPUTY_URL: url,
    DEPUTY_BOOTSTRAP_ADMIN_SECRET: ADMIN_SECRET,
    ...env,
  };
  for (const [key, value] of Object.entries(base)) if (value !== undefined) childEnv[key] = value;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["bin/deputy.js", ...args], {
      cwd: REPO,
      env: childEnv,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
    });
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`deputy ${args.join(" ")} did not finish within ${SPAWN_TIMEOUT_MS} ms`));
    }, SPAWN_TIMEOUT_MS);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
