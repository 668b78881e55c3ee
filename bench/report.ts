// Results as data, as a markdown report, and as JSON. Each workload returns a Section; ratio
// columns compare a row with the graphile-worker rows of the same section.

export type Cell = number | string | null;

export interface Section {
  id: string;
  title: string;
  columns: string[];
  rows: { system: string; values: Cell[] }[];
  /** Index of the column the "× graphile" ratios are computed on; higher is better unless `lowerIsBetter`. */
  ratioColumn?: number;
  lowerIsBetter?: boolean;
  notes?: string[];
  /** pg_stat_statements of the aiki database, for profiling. */
  statements?: { system: string; rows: { query: string; calls: number; total_ms: number; mean_ms: number }[] }[];
}

export interface Target {
  name: string;
  goal: string;
  measured: string;
  pass: boolean;
  /** How far from the goal, as a sentence fragment (e.g. "1.8× the limit"). */
  gap?: string;
}

export interface Report {
  mode: "quick" | "full";
  startedAt: string;
  durationSeconds: number;
  commit: string;
  node: string;
  postgres: { version: string; settings: Record<string, string>; cpus: number };
  systems: { name: string; version: string; settings: string }[];
  sections: Section[];
  targets: Target[];
}

const GRAPHILE = "graphile-worker";
const GRAPHILE_BATCHED = "graphile-worker (batched)";

export function format(value: Cell): string {
  if (value === null || value === undefined) return "–";
  if (typeof value === "string") return value;
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (abs >= 1000) return Math.round(value).toLocaleString("en-US");
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function ratio(value: Cell, reference: Cell): string {
  if (typeof value !== "number" || typeof reference !== "number" || reference === 0) return "–";
  return `${(value / reference).toFixed(2)}×`;
}

export function sectionMarkdown(section: Section): string {
  const reference = (name: string) =>
    section.ratioColumn === undefined ? undefined : section.rows.find((r) => r.system === name)?.values[section.ratioColumn];
  const withRatios = section.ratioColumn !== undefined && reference(GRAPHILE) !== undefined;
  const ratioHeads = withRatios ? [`× ${GRAPHILE}`, ...(reference(GRAPHILE_BATCHED) !== undefined ? ["× batched"] : [])] : [];
  const head = ["system", ...section.columns, ...ratioHeads];
  const lines = [
    `### ${section.title}`,
    "",
    `| ${head.join(" | ")} |`,
    `| ${head.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`,
  ];
  for (const row of section.rows) {
    const ratios = withRatios
      ? ratioHeads.map((_, k) => ratio(row.values[section.ratioColumn!]!, reference(k === 0 ? GRAPHILE : GRAPHILE_BATCHED)!))
      : [];
    lines.push(`| ${[row.system, ...row.values.map(format), ...ratios].join(" | ")} |`);
  }
  if (withRatios) {
    lines.push("", `Ratios on "${section.columns[section.ratioColumn!]}"${section.lowerIsBetter ? " (lower is better)" : ""}.`);
  }
  for (const note of section.notes ?? []) lines.push("", note);
  return lines.join("\n");
}

export function targetsMarkdown(targets: Target[]): string {
  const lines = ["| target | goal | measured | verdict |", "| --- | --- | --- | --- |"];
  for (const t of targets) {
    lines.push(`| ${t.name} | ${t.goal} | ${t.measured} | ${t.pass ? "PASS" : `MISS${t.gap ? ` (${t.gap})` : ""}`} |`);
  }
  return lines.join("\n");
}

export function reportMarkdown(report: Report, chartFile?: string): string {
  const settings = Object.entries(report.postgres.settings).map(([k, v]) => `${k}=${v}`).join(", ");
  const parts = [
    `## ${report.mode} run, ${report.startedAt}`,
    "",
    `Engine commit \`${report.commit}\`; Node ${report.node}; ${report.postgres.version}; ${report.postgres.cpus} CPUs; ` +
      `run took ${Math.round(report.durationSeconds)} s.`,
    "",
    `Postgres settings: ${settings}.`,
    "",
    "| system | version | settings |",
    "| --- | --- | --- |",
    ...report.systems.map((s) => `| ${s.name} | ${s.version} | ${s.settings} |`),
    "",
    "### Targets",
    "",
    targetsMarkdown(report.targets),
    "",
    ...report.sections.flatMap((s) => [sectionMarkdown(s), ""]),
  ];
  if (chartFile) parts.push(`![throughput and latency](${chartFile})`, "");
  return parts.join("\n");
}

export function printTargets(targets: Target[]): string {
  return targets.map((t) => `${t.pass ? "PASS" : "MISS"}  ${t.name}: ${t.measured} (goal ${t.goal})${!t.pass && t.gap ? ` — ${t.gap}` : ""}`).join("\n");
}
