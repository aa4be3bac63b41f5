/** Line charts in plain SVG: one or more series over steps, gaps where a value is null. */

export interface ILine {
  label: string;
  color: string;
  x: number[];
  y: (number | null)[];
}

const SVG = 'http://www.w3.org/2000/svg';
export const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b',
  '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

function el(name: string, attrs: Record<string, string | number>, parent?: Element): SVGElement {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, String(v));
  }
  parent?.appendChild(node);
  return node;
}

function ticks(lo: number, hi: number, count = 4): number[] {
  if (!(hi > lo)) {
    return [lo];
  }
  const raw = (hi - lo) / count;
  const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * magnitude).find(s => s >= raw) ?? raw;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    out.push(t);
  }
  return out;
}

export function formatNumber(v: number | null | undefined): string {
  if (v === null || v === undefined || !isFinite(v)) {
    return '–';
  }
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) {
    return v.toExponential(2);
  }
  return String(Number(v.toPrecision(4)));
}

/** Draw ``lines`` into a new SVG element (replacing the node's content). */
export function renderChart(node: HTMLElement, title: string, lines: ILine[],
  width = 360, height = 200): void {
  node.textContent = '';
  const heading = document.createElement('div');
  heading.className = 'ct-chart-title';
  heading.textContent = title;
  node.appendChild(heading);
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const line of lines) {
    line.x.forEach((x, i) => {
      const y = line.y[i];
      if (y === null || !isFinite(y)) {
        return;
      }
      x0 = Math.min(x0, x); x1 = Math.max(x1, x);
      y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    });
  }
  const svg = el('svg', { width, height, viewBox: `0 0 ${width} ${height}`, class: 'ct-chart' });
  node.appendChild(svg);
  if (!isFinite(x0)) {
    el('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'ct-axis' }, svg)
      .textContent = 'no values yet';
    return;
  }
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  if (x1 === x0) { x1 = x0 + 1; }
  const m = { left: 48, right: 8, top: 8, bottom: 22 };
  const sx = (x: number) => m.left + (x - x0) / (x1 - x0) * (width - m.left - m.right);
  const sy = (y: number) => height - m.bottom - (y - y0) / (y1 - y0) * (height - m.top - m.bottom);
  for (const t of ticks(y0, y1)) {
    el('line', { x1: m.left, x2: width - m.right, y1: sy(t), y2: sy(t), class: 'ct-grid' }, svg);
    el('text', { x: m.left - 4, y: sy(t) + 3, 'text-anchor': 'end', class: 'ct-axis' }, svg)
      .textContent = formatNumber(t);
  }
  for (const t of ticks(x0, x1)) {
    el('text', { x: sx(t), y: height - 6, 'text-anchor': 'middle', class: 'ct-axis' }, svg)
      .textContent = formatNumber(t);
  }
  for (const line of lines) {
    let d = '';
    let pen = false;
    line.x.forEach((x, i) => {
      const y = line.y[i];
      if (y === null || !isFinite(y)) {
        pen = false;
        return;
      }
      d += `${pen ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
      pen = true;
    });
    const path = el('path', { d, stroke: line.color, fill: 'none', 'stroke-width': 1.5,
      class: 'ct-line' }, svg);
    path.setAttribute('data-label', line.label);
  }
  if (lines.length > 1) {
    const legend = document.createElement('div');
    legend.className = 'ct-legend';
    for (const line of lines) {
      const item = document.createElement('span');
      item.innerHTML = `<i style="background:${line.color}"></i>`;
      item.appendChild(document.createTextNode(line.label));
      legend.appendChild(item);
    }
    node.appendChild(legend);
  }
}
