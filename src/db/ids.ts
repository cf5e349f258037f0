const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `value` can be a primary key of a UUID column (anything else would make PostgreSQL throw). */
export function isUuid(value: string): boolean {
  return UUID.test(value);
}
