/**
 * Client-supplied text fit for an error_description: RFC 6749 §5.2 allows only %x20-21 / %x23-5B / %x5D-7E,
 * and a description should stay short whatever the request held.
 */
export function errorText(value: string, max = 120): string {
  const printable = value.replace(/[^\x20\x21\x23-\x5B\x5D-\x7E]/g, "?");
  return printable.length > max ? `${printable.slice(0, max)}...` : printable;
}
