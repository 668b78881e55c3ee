// Optional runtime schemas. Anything with zod's `safeParse` works (zod 3 or 4, or a hand-rolled
// validator); data is validated where it enters the engine.
import { SchemaValidationError } from "./errors.js";

export interface Schema<T> {
  safeParse(data: unknown): { success: true; data: T } | { success: false; error: { message: string } };
}

export function validate<T>(schema: Schema<T> | undefined, data: unknown, what: string): T {
  if (!schema) return data as T;
  const result = schema.safeParse(data);
  if (!result.success) throw new SchemaValidationError("schema_validation", `${what} does not match its schema: ${result.error.message}`);
  return result.data;
}
