// Charts drawn as inline SVG: bars with 95% error bars for releases, step lines for budgets.
// Labels go in as text nodes (see dom.js), so group keys cannot inject markup.

import { num, s } from "./dom.js";

const W = 760;
const H = 340;
const M = { top: 24, right: 24, bottom: 92, left: 72 };

function ticks(lo, hi, count = 5) {
  if (hi <= lo) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((st) => st >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function yAxis(svg, lo, hi, y, label) {
  for (const t of ticks(lo, hi)) {
    svg.append(
      s("line", { class: "grid", x1: M.left, x2: W - M.right, y1: y(t), y2: y(t) }),
      s("text", { class: "tick", x: M.left - 8, y: y(t) + 4, "text-anchor": "end" }, num(t)),
    );
  }
  svg.append(
    s("text", { class: "axis-label", transform: `translate(16 ${M.top + (H - M.top - M.bottom) / 2}) rotate(-90)`, "text-anchor": "middle" }, label),
  );
}

/**
 * Bars with error bars. bars: [{label, value, lo, hi}] (value null = suppressed).
 * Returns an <svg> element with role="img" and a title for screen readers.
 */
export function barChart(bars, { title, unit = "" }) {
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart bar-chart", role: "img" }, s("title", {}, title));
  const shown = bars.filter((b) => b.value !== null && b.value !== undefined);
  const lows = shown.map((b) => Math.min(b.value, b.lo ?? b.value));
  const highs = shown.map((b) => Math.max(b.value, b.hi ?? b.value));
  const lo = Math.min(0, ...lows);
  const hi = Math.max(0, ...highs) || 1;
  const plotH = H - M.top - M.bottom;
  const y = (v) => M.top + plotH - ((v - lo) / (hi - lo)) * plotH;
  yAxis(svg, lo, hi, y, unit);
  const slot = (W - M.left - M.right) / Math.max(bars.length, 1);
  const barW = Math.max(2, Math.min(48, slot * 0.6));
  bars.forEach((b, i) => {
    const cx = M.left + slot * (i + 0.5);
    const group = s("g", { class: "bar" });
    if (b.value === null || b.value === undefined) {
      group.append(s("text", { class: "suppressed", x: cx + 4, y: y(0) - 6, "text-anchor": "start", transform: `rotate(-90 ${cx + 4} ${y(0) - 6})` }, "suppressed"));
    } else {
      const top = y(Math.max(b.value, 0));
      const bottom = y(Math.min(b.value, 0));
      group.append(
        s("rect", { x: cx - barW / 2, y: top, width: barW, height: Math.max(bottom - top, 0.5) }, s("title", {}, `${b.label}: ${num(b.value)}`)),
      );
      if (b.lo !== null && b.lo !== undefined && b.hi !== null && b.hi !== undefined) {
        const cap = Math.min(10, barW / 2);
        group.append(
          s("line", { class: "error-bar", x1: cx, x2: cx, y1: y(b.lo), y2: y(b.hi) }),
          s("line", { class: "error-bar", x1: cx - cap, x2: cx + cap, y1: y(b.lo), y2: y(b.lo) }),
          s("line", { class: "error-bar", x1: cx - cap, x2: cx + cap, y1: y(b.hi), y2: y(b.hi) }),
        );
      }
    }
    group.append(
      s("text", { class: "tick x-label", x: cx, y: H - M.bottom + 14, "text-anchor": "end", transform: `rotate(-35 ${cx} ${H - M.bottom + 14})` }, b.label),
    );
    svg.append(group);
  });
  svg.append(s("line", { class: "axis", x1: M.left, x2: W - M.right, y1: y(0), y2: y(0) }));
  return svg;
}

/**
 * Step lines over time. series: [{name, points: [[Date, value]], limit}], one colour each.
 * A dashed line marks each series' limit (its budget).
 */
export function stepChart(series, { title, unit = "", from, to }) {
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart step-chart", role: "img" }, s("title", {}, title));
  const t0 = from.getTime();
  const end = Math.max(to.getTime(), t0 + 60_000);
  const t1 = end + (end - t0) * 0.04; // a margin, so that a spend made just now is visible
  const hi = Math.max(1e-9, ...series.flatMap((sr) => [sr.limit || 0, ...sr.points.map((p) => p[1])])) * 1.05;
  const plotH = H - M.top - M.bottom;
  const x = (t) => M.left + ((t - t0) / (t1 - t0)) * (W - M.left - M.right);
  const y = (v) => M.top + plotH - (v / hi) * plotH;
  yAxis(svg, 0, hi, y, unit);
  for (const frac of [0, 0.5, 1]) {
    const t = new Date(t0 + frac * (end - t0));
    svg.append(
      s("text", { class: "tick", x: x(t.getTime()), y: H - M.bottom + 18, "text-anchor": frac === 0 ? "start" : frac === 1 ? "end" : "middle" }, t.toISOString().slice(0, 16).replace("T", " ")),
    );
  }
  series.forEach((sr, i) => {
    const cls = `series-${i % 6}`;
    let d = `M ${x(t0)} ${y(0)}`;
    let last = 0;
    const marks = [];
    for (const [t, v] of sr.points) {
      d += ` H ${x(t.getTime())} V ${y(v)}`;
      marks.push(s("circle", { class: `mark ${cls}`, cx: x(t.getTime()), cy: y(v), r: 3 }, s("title", {}, `${sr.name}: ${num(v, 6)} ${unit} at ${t.toISOString().slice(0, 19).replace("T", " ")}`)));
      last = v;
    }
    d += ` H ${x(end)}`;
    svg.append(s("path", { class: `line ${cls}`, d, "data-series": sr.name }), ...marks);
    if (sr.limit) svg.append(s("line", { class: `limit ${cls}`, x1: M.left, x2: W - M.right, y1: y(sr.limit), y2: y(sr.limit) }));
    const lx = M.left + (i % 3) * 220;
    const ly = H - M.bottom + 44 + Math.floor(i / 3) * 16;
    svg.append(
      s("rect", { class: `swatch ${cls}`, x: lx, y: ly - 9, width: 10, height: 10 }),
      s("text", { class: "legend", x: lx + 16, y: ly, "data-series": sr.name }, `${sr.name}: ${num(last, 6)} of ${num(sr.limit, 6)} ${unit}`),
    );
  });
  svg.append(s("line", { class: "axis", x1: M.left, x2: W - M.right, y1: y(0), y2: y(0) }));
  return svg;
}
