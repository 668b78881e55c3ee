// aesGcmCodec: AES-256-GCM (node:crypto) for every user payload, with named keys so they rotate.
//
// Envelope: {"$aiki": "enc:v1", "key": "<key id>", "iv": <base64, 12 bytes>, "tag": <base64,
// 16 bytes>, "data": <base64 ciphertext of the payload's JSON text>}. A fresh random 96-bit IV per
// payload (a key may seal about 2^32 payloads before IV collisions become a concern, NIST SP
// 800-38D). Encoding uses the `current` key; decoding uses whichever key the envelope names, so
// adding a key, making it current and keeping the old ones for as long as runs hold payloads
// made with them rotates keys without touching stored data.
//
// Authenticated data: the envelope's format and key id, and the payload's context (its kind and
// the run and step or event it belongs to; a workflow input, its workflow: see PayloadContext).
// Ciphertext moved to another run, step, event or field, or another key put under the same id,
// fails authentication (CodecError codec_auth_failed) instead of decoding as that one's data.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { CodecError, DefinitionError, InvalidInputError } from "../errors.js";
import { isEnvelope, type Codec, type PayloadContext } from "./codec.js";

const FORMAT = "enc:v1";

export interface AesGcmCodecOptions {
  /**
   * Keys by id: 32 bytes each, as a Buffer (or Uint8Array), or a string of 64 hex digits or of
   * base64 (`openssl rand -base64 32`). Ids: 1-64 characters of A-Z a-z 0-9 _ . : -.
   */
  keys: Record<string, Buffer | Uint8Array | string>;
  /** The id of the key new payloads are encrypted with. */
  current: string;
}

/** AES-256-GCM with key rotation; see the file header. Throws AK003 for a key that is not 32 bytes. */
export function aesGcmCodec(options: AesGcmCodecOptions): Codec {
  if (typeof options !== "object" || options === null || typeof options.keys !== "object" || options.keys === null) {
    throw new DefinitionError("definition", "aesGcmCodec({ keys, current }) needs `keys`: an object of 32-byte keys by id");
  }
  const unknown = Object.keys(options).find((k) => k !== "keys" && k !== "current");
  if (unknown !== undefined) throw new DefinitionError("definition", `unknown aesGcmCodec option \`${unknown}\` (options: keys, current)`);
  const keys = new Map<string, Buffer>();
  for (const [id, key] of Object.entries(options.keys)) {
    if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(id)) {
      throw new InvalidInputError("AK003", `invalid aesGcmCodec key id ${JSON.stringify(id.slice(0, 80))}: use 1-64 characters of A-Z a-z 0-9 _ . : -`);
    }
    keys.set(id, keyBytes(id, key));
  }
  if (typeof options.current !== "string" || !keys.has(options.current)) {
    throw new InvalidInputError("AK003",
      `aesGcmCodec \`current\` must name one of its keys (${[...keys.keys()].join(", ") || "none given"}), got ${JSON.stringify(options.current)}`);
  }
  const current = options.current;
  const currentKey = keys.get(current)!;
  return {
    encode(value, context) {
      const iv = randomBytes(12);
      const cipher = createCipheriv("aes-256-gcm", currentKey, iv);
      cipher.setAAD(authenticatedData(current, context));
      const data = Buffer.concat([cipher.update(JSON.stringify(value ?? null), "utf8"), cipher.final()]);
      return { $aiki: FORMAT, key: current, iv: iv.toString("base64"), tag: cipher.getAuthTag().toString("base64"), data: data.toString("base64") };
    },
    decode(value, context) {
      if (!isEnvelope(value)) return value;
      if (value.$aiki !== FORMAT) {
        throw new CodecError("codec_failed", `the payload is in format ${JSON.stringify(value.$aiki)}, not aesGcmCodec's ${FORMAT}`);
      }
      const id = String(value.key);
      const key = keys.get(id);
      if (!key) {
        throw new CodecError("codec_key_missing",
          `the payload is encrypted with key ${id}, which this codec does not have (it has ${[...keys.keys()].join(", ")}): ` +
          `add key ${id} to aesGcmCodec({ keys })`, { keyId: id });
      }
      try {
        const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(String(value.iv), "base64"));
        decipher.setAAD(authenticatedData(id, context));
        decipher.setAuthTag(Buffer.from(String(value.tag), "base64"));
        const text = Buffer.concat([decipher.update(Buffer.from(String(value.data), "base64")), decipher.final()]).toString("utf8");
        return JSON.parse(text);
      } catch (error) {
        throw new CodecError("codec_auth_failed",
          `the payload fails authentication with key ${id}: key ${id} is not the key it was encrypted with, ` +
          "or the payload was altered or moved from another run, step or field", { cause: error, keyId: id });
      }
    },
  };
}

function authenticatedData(keyId: string, context: PayloadContext): Buffer {
  const parts: string[] = [FORMAT, keyId, context.kind];
  if (context.kind === "workflow.input") parts.push(context.workflow);
  else parts.push(context.runId, "stepKey" in context ? context.stepKey : "event" in context ? context.event : "");
  return Buffer.from(JSON.stringify(parts), "utf8");
}

function keyBytes(id: string, key: unknown): Buffer {
  let bytes: Buffer;
  if (Buffer.isBuffer(key)) bytes = key;
  else if (key instanceof Uint8Array) bytes = Buffer.from(key);
  // Hex digits only, in pairs: hex (32 bytes in base64 are 43 or 44 characters, never pairs of hex digits only).
  else if (typeof key === "string" && /^(?:[0-9a-f]{2})+$/i.test(key)) bytes = Buffer.from(key, "hex");
  else if (typeof key === "string" && /^[A-Za-z0-9+/_-]*={0,2}$/.test(key.trim())) bytes = Buffer.from(key.trim(), "base64");
  else throw new InvalidInputError("AK003", `aesGcmCodec key ${id} must be a Buffer or a base64 or hex string, got ${key === null ? "null" : typeof key}`);
  if (bytes.length !== 32) {
    // The message never shows the key, only its length.
    throw new InvalidInputError("AK003", `aesGcmCodec key ${id} is ${bytes.length} bytes: AES-256-GCM needs 32 (e.g. \`openssl rand -base64 32\`)`);
  }
  return Buffer.from(bytes);
}
