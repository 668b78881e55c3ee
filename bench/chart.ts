// The report's chart as hand-written SVG: throughput on the left (linear), start-to-first-task
// latency on the right (logarithmic), one group of horizontal bars per system.
import { format, type Report, type Section } from "./report.js";

interface Series {
  name: string;
  color: string;
}

interface Group {
  label: string;
  values: (number | null)[];
}

interface Panel {
  title: string;
  series: Series[];
  groups: Group[];
  log: boolean;
}

const escape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const bar = 11;
const gap = 10;
const labelWidth = 190;
const plotWidth = 300;

function panelHeight(p: Panel): number {
  return 60 + p.groups.length * (p.series.length * bar + gap) + 20;
}

/** Round tick values covering 0..max: steps of 1, 2 or 5 times a power of ten. */
function linearTicks(max: number): number[] {
  const raw = max / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw)!;
  return Array.from({ length: Math.ceil(max / step) + 1 }, (_, k) => k * step);
}

function drawPanel(p: Panel, x0: number): string {
  const values = p.groups.flatMap((g) => g.values).filter((v): v is number => typeof v === "number" && v > 0);
  const lo = p.log ? Math.floor(Math.log10(Math.min(...values, 1))) : 0;
  const ticks = p.log
    ? Array.from({ length: Math.ceil(Math.log10(Math.max(...values, 10))) - lo + 1 }, (_, k) => 10 ** (lo + k))
    : linearTicks(Math.max(...values, 1));
  const top = ticks[ticks.length - 1]!;
  const scale = (v: number) =>
    p.log ? ((Math.log10(v) - lo) / (Math.log10(top) - lo)) * plotWidth : (v / top) * plotWidth;
  const px = (n: number) => n.toFixed(1);
  const out: string[] = [`<text x="${x0}" y="20" class="title">${escape(p.title)}</text>`];
  p.series.forEach((s, i) => {
    out.push(`<rect x="${x0 + i * 150}" y="30" width="10" height="10" fill="${s.color}"/>`,
      `<text x="${x0 + i * 150 + 14}" y="39">${escape(s.name)}</text>`);
  });
  const y0 = 55;
  const bottom = y0 + p.groups.length * (p.series.length * bar + gap);
  for (const t of ticks) {
    const tx = px(x0 + labelWidth + scale(t));
    out.push(`<line x1="${tx}" y1="${y0 - 4}" x2="${tx}" y2="${bottom}" class="grid"/>`,
      `<text x="${tx}" y="${bottom + 12}" text-anchor="middle" class="value">${Number.isInteger(t) ? t.toLocaleString("en-US") : format(t)}</text>`);
  }
  let y = y0;
  for (const group of p.groups) {
    out.push(`<text x="${x0 + labelWidth - 6}" y="${y + (p.series.length * bar) / 2 + 4}" text-anchor="end">${escape(group.label)}</text>`);
    group.values.forEach((v, i) => {
      if (typeof v === "number" && v > 0) {
        const w = Math.max(1, scale(v));
        out.push(`<rect x="${x0 + labelWidth}" y="${y}" width="${px(w)}" height="${bar - 2}" fill="${p.series[i]!.color}"/>`,
          `<text x="${px(x0 + labelWidth + w + 4)}" y="${y + bar - 3}" class="value">${format(v)}</text>`);
      }
      y += bar;
    });
    y += gap;
  }
  return out.join("\n");
}

const sectionById = (r: Report, id: string): Section | undefined => r.sections.find((s) => s.id === id);

export function chartSvg(report: Report): string {
  const burn = sectionById(report, "burn-down");
  const three = sectionById(report, "three-task");
  const latency = sectionById(report, "start-latency");
  const names = [...new Set([...(burn?.rows ?? []), ...(three?.rows ?? [])].map((r) => r.system))];
  const num = (v: unknown) => (typeof v === "number" ? v : null);
  const throughput: Panel = {
    title: "Throughput (higher is better)",
    series: [{ name: "one-task runs/s", color: "#2b6cb0" }, { name: "three-task steps/s", color: "#68d391" }],
    groups: names.map((name) => ({
      label: name,
      values: [num(burn?.rows.find((r) => r.system === name)?.values[0]), num(three?.rows.find((r) => r.system === name)?.values[1])],
    })),
    log: false,
  };
  const latencyPanel: Panel = {
    title: "Start-to-first-task latency, ms, log scale (lower is better)",
    series: [{ name: "serial p50", color: "#2b6cb0" }, { name: "serial p99", color: "#90cdf4" }, { name: "under load p99", color: "#ed8936" }],
    groups: (latency?.rows ?? []).map((r) => ({ label: r.system, values: [num(r.values[0]), num(r.values[2]), num(r.values[6])] })),
    log: true,
  };
  const panelWidth = labelWidth + plotWidth + 80;
  const height = Math.max(panelHeight(throughput), panelHeight(latencyPanel)) + 30;
  const width = panelWidth * 2 + 30;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    "<style>.title{font-size:13px;font-weight:bold}.value{fill:#444;font-size:10px}.grid{stroke:#ddd;stroke-width:1}</style>",
    `<rect width="${width}" height="${height}" fill="white"/>`,
    drawPanel(throughput, 10),
    drawPanel(latencyPanel, panelWidth + 20),
    `<text x="10" y="${height - 8}" class="value">${escape(`aiki bench, ${report.mode} mode, ${report.startedAt}, ${report.postgres.version}, commit ${report.commit.slice(0, 12)}`)}</text>`,
    "</svg>",
  ].join("\n");
}
