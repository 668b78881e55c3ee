// Plain-text tables and values for the CLI's human output (`--json` prints the engine's JSON
// instead). Columns are padded to their widest cell; long cells are cut with an ellipsis so one
// row stays one line.
import { describePayloads } from "../codec/codec.js";

const MAX_CELL = 60;

/**
 * A cell as text: null/undefined as "-", objects as compact JSON, encoded payloads as what they
 * are ("encrypted (key k1)", not their ciphertext), cut to MAX_CELL characters.
 */
export function cell(value: unknown): string {
  const shown = describePayloads(value);
  const text = shown === null || shown === undefined ? "-"
    : typeof shown === "string" ? shown
    : typeof shown === "number" || typeof shown === "boolean" ? String(shown)
    : JSON.stringify(shown);
  const line = text.replace(/\s+/g, " ");
  return line.length > MAX_CELL ? `${line.slice(0, MAX_CELL - 1)}…` : line;
}

/** Rows under a header, columns separated by two spaces; "(none)" when there are no rows. */
export function table(headers: string[], rows: unknown[][]): string {
  if (rows.length === 0) return "(none)\n";
  const cells = rows.map((row) => row.map(cell));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((row) => row[i]!.length)));
  const line = (row: string[]) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(headers), ...cells.map(line)].join("\n") + "\n";
}

/** An ISO timestamp as `YYYY-MM-DD HH:MM:SS` UTC; null as "-". */
export function time(value: string | null | undefined): string {
  if (!value) return "-";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? value : date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

/** Milliseconds as a short duration: 850ms, 12.5s, 3m20s, 5h02m, 2d04h. */
export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return `${ms}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, "0")}h`;
}
