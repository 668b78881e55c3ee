import { DefinitionError } from "../errors.js";
import type { Schema } from "../schema.js";

/** A named event a workflow can wait for; the name is its key in the workflow's `events`. */
export interface EventDefinition<T> {
  readonly schema: Schema<T> | undefined;
  /** Type-only marker carrying T. */
  readonly __data?: T;
}

export type EventMap = Record<string, EventDefinition<any>>;
export type EventData<E> = E extends EventDefinition<infer T> ? T : never;

/** `event<{ eta: number }>()` for a typed event, or `event(zodSchema)` to validate it on send. */
export function event<T = unknown>(schema?: Schema<T>): EventDefinition<T> {
  if (schema !== undefined && typeof (schema as { safeParse?: unknown } | null)?.safeParse !== "function") {
    throw new DefinitionError("definition", "event(schema) takes a schema with safeParse (e.g. a zod schema), or nothing");
  }
  return { schema };
}

export type EventWaitResult<T> = { timeout: false; data: T } | { timeout: true };
