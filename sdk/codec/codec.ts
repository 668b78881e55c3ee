// Payload codecs: what the SDK does to user payloads on their way into Postgres and back.
//
// A codec turns a JSON value into another JSON value (encode) and back (decode), e.g. encrypts
// it (aesGcmCodec, aes-gcm.ts). The client takes one (`client({ codec })`); everything that
// client writes, and every worker spawned with it, encodes user payloads before they reach the
// engine and decodes them after (payloads.ts says which payloads and where).
//
// Envelopes. An encoded payload is an object with a `$aiki` member naming its format, and
// `key` naming the key it was made with: `{"$aiki": "enc:v1", "key": "k1", …}`. The worker
// without a codec, the CLI and the dashboard recognise a payload as encoded by that member
// alone, so a run is never handed an envelope as if it were its data, and operators see
// "encrypted (key k1)" instead of ciphertext. `$aiki` is therefore reserved as a top-level key of
// payloads.
//
// Context. Every call names the payload it is for (PayloadContext): the codec may bind the
// ciphertext to it (aesGcmCodec does, as authenticated data), so an envelope copied into another
// run, field or step fails to decode instead of passing for that one's data.

/**
 * What a payload is, and what it belongs to. A workflow input is bound to its workflow only: the
 * engine makes the run id at the insert, after the input was encoded.
 */
export type PayloadContext =
  | { kind: "workflow.input"; workflow: string }
  | { kind: "workflow.output" | "workflow.error"; runId: string }
  | { kind: "task.output" | "task.error" | "task.heartbeat"; runId: string; stepKey: string }
  | { kind: "event.data"; runId: string; event: string };

export interface Codec {
  /** Returns the stored form of `value` (a JSON value): an envelope `{ "$aiki": format, key?, … }`. */
  encode(value: unknown, context: PayloadContext): unknown;
  /**
   * Returns the value `encode` was given, from its stored form. A value that is not an envelope
   * (stored before the codec was set, or written from SQL or the CLI) should come back as is.
   * Throws CodecError when it cannot (a key it lacks, a payload that fails authentication).
   */
  decode(value: unknown, context: PayloadContext): unknown;
}

export interface Envelope {
  $aiki: string;
  key?: unknown;
  [member: string]: unknown;
}

/** Whether `value` is an encoded payload (see "Envelopes"). Cheap: one look at one member. */
export function isEnvelope(value: unknown): value is Envelope {
  return typeof value === "object" && value !== null && typeof (value as { $aiki?: unknown }).$aiki === "string";
}

/** "encrypted (key k1)" for an aesGcmCodec envelope; "encoded (format)" for another codec's. */
export function describeEnvelope(envelope: Envelope): string {
  if (envelope.$aiki.startsWith("enc:")) {
    return typeof envelope.key === "string" ? `encrypted (key ${envelope.key})` : "encrypted";
  }
  return `encoded (${envelope.$aiki.slice(0, 40)})`;
}

/**
 * `value` with every envelope inside it replaced by its description (describeEnvelope), for
 * display: the CLI and the dashboard show what is encrypted, not the ciphertext. Values with no
 * envelope come back unchanged (the same object).
 */
export function describePayloads(value: unknown): unknown {
  if (isEnvelope(value)) return describeEnvelope(value);
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) {
    const items = value.map(describePayloads);
    return items.some((item, i) => item !== value[i]) ? items : value;
  }
  let changed = false;
  const entries = Object.entries(value).map(([k, v]) => {
    const shown = describePayloads(v);
    if (shown !== v) changed = true;
    return [k, shown] as const;
  });
  return changed ? Object.fromEntries(entries) : value;
}
