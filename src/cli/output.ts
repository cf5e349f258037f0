// Prints CLI results: JSON with --json, otherwise readable `key: value` lines.
export function printResult(value: unknown, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
    return;
  }
  process.stdout.write(`${render(value, "").join("\n")}\n`);
}

function render(value: unknown, indent: string): string[] {
  if (Array.isArray(value)) {
    if (value.length === 0) return [`${indent}(none)`];
    return value.flatMap((item, index) => [
      ...(index > 0 && typeof item === "object" ? [""] : []),
      ...render(item, indent).map((line, i) => (i === 0 ? line.replace(indent, `${indent}- `) : `  ${line}`)),
    ]);
  }
  if (value && typeof value === "object") {
    return Object.entries(value).flatMap(([key, inner]) => {
      if (
        inner &&
        typeof inner === "object" &&
        !(Array.isArray(inner) && inner.every((x) => typeof x !== "object"))
      ) {
        return [`${indent}${key}:`, ...render(inner, `${indent}  `)];
      }
      const shown = Array.isArray(inner) ? inner.join(" ") || "(none)" : String(inner);
      return [`${indent}${key}: ${shown}`];
    });
  }
  return [`${indent}${String(value)}`];
}
