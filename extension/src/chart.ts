/** Line charts drawn by uPlot (canvas): one or more series over steps, gaps where a value is
 * null.  Around the plot, in the DOM: the title, a smoothing control and an Enlarge button,
 * the axis labels, and uPlot's legend below the plot, which reads out the values under the
 * pointer.  A chart lives on its node: drawing into the same node again updates the data and
 * keeps the reader's smoothing, size and pointer.  Colours come from JupyterLab's theme. */
import uPlot from 'uplot';

export interface ILine {
  label: string;
  color: string;
  x: number[];
  y: (number | null)[];
}

export interface IChartOptions {
  /** The x axis: "step" unless told (e.g. "epoch"). */
  xlabel?: string;
  /** The y axis: the chart's title unless told. */
  ylabel?: string;
}

export const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b',
  '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const FONT = '11px sans-serif';
const INTEGER_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5,
  2e5, 5e5, 1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8, 2e8, 5e8, 1e9];

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

/** TensorBoard's smoothing: an exponential moving average, debiased at the start; nulls stay
 * null and do not enter the average. */
export function ema(values: (number | null | undefined)[], weight: number)
  : (number | null | undefined)[] {
  if (!(weight > 0 && weight < 1)) {
    return values.slice();
  }
  let last = 0;
  let count = 0;
  return values.map(v => {
    if (v === null || v === undefined || !isFinite(v)) {
      return v;
    }
    last = last * weight + (1 - weight) * v;
    count += 1;
    return last / (1 - Math.pow(weight, count));
  });
}

function themeColour(name: string, fallback: string): string {
  return getComputedStyle(document.body).getPropertyValue(name).trim() || fallback;
}

/** A colour at an opacity, for the raw series under a smoothed one. */
function faint(color: string): string {
  return /^#[0-9a-f]{6}$/i.test(color) ? `${color}40` : color;
}

class Chart {
  constructor(readonly node: HTMLElement, private width: number, private height: number) {
    node.classList.add('ct-chart');
    this.head.append(this.title, this.controls);
    const smoothingLabel = document.createElement('label');
    smoothingLabel.className = 'ct-smoothing-label';
    smoothingLabel.append('smoothing ', this.smoothing, this.smoothingValue);
    this.smoothing.type = 'range';
    this.smoothing.className = 'ct-smoothing';
    this.smoothing.min = '0';
    this.smoothing.max = '0.99';
    this.smoothing.step = '0.01';
    this.smoothing.value = '0';
    this.smoothing.title = 'EMA weight (as TensorBoard); the raw values show faint';
    this.smoothing.oninput = () => this.draw();
    this.enlarge.className = 'ct-enlarge jp-mod-styled';
    this.enlarge.textContent = 'Enlarge';
    this.enlarge.title = 'Show this chart full width';
    this.enlarge.onclick = () => this.toggleSize();
    this.controls.className = 'ct-chart-controls';
    this.controls.append(smoothingLabel, this.enlarge);
    this.head.className = 'ct-chart-head';
    this.title.className = 'ct-chart-title';
    this.ylabel.className = 'ct-axis-label ct-y-label';
    this.xlabel.className = 'ct-axis-label ct-x-label';
    this.plot.className = 'ct-chart-plot';
    this.body.className = 'ct-chart-body';
    this.body.append(this.ylabel, this.plot);
    node.append(this.head, this.body, this.xlabel);
  }

  update(title: string, lines: ILine[], options: IChartOptions): void {
    this.title.textContent = title;
    this.xlabel.textContent = options.xlabel ?? 'step';
    this.ylabel.textContent = options.ylabel ?? title;
    this.lines = lines;
    this.draw();
  }

  private get size(): { width: number; height: number } {
    if (!this.large) {
      return { width: this.width, height: this.height };
    }
    const room = (this.node.parentElement?.clientWidth ?? 0) - 40;
    return { width: Math.max(room, this.width * 2), height: this.height * 2 };
  }

  private toggleSize(): void {
    this.large = !this.large;
    this.node.classList.toggle('ct-chart-large', this.large);
    this.enlarge.textContent = this.large ? 'Shrink' : 'Enlarge';
    this.plotter?.setSize(this.size);
  }

  private draw(): void {
    const weight = Number(this.smoothing.value);
    this.smoothingValue.textContent = weight.toFixed(2);
    const shown = this.lines.filter(l => l.x.length);
    this.node.classList.toggle('ct-chart-empty', !shown.length);
    if (!shown.length) {
      this.plotter?.destroy();
      this.plotter = null;
      this.plot.textContent = 'no values yet';
      return;
    }
    const data = uPlot.join(shown.map(l => [l.x, l.y.map(v => v ?? null)] as uPlot.AlignedData));
    const smooth = weight > 0;
    const ys = data.slice(1) as (number | null | undefined)[][];
    const columns = smooth ? ys.flatMap(y => [y, ema(y, weight)]) : ys;
    const aligned = [data[0], ...columns] as uPlot.AlignedData;
    const ink = themeColour('--jp-ui-font-color1', '#222');
    const grid = themeColour('--jp-border-color2', '#e0e0e0');
    const integer = (data[0] as number[]).every(x => Number.isInteger(x));
    const shape = JSON.stringify([shown.map(l => [l.label, l.color]), smooth, ink, grid, integer]);
    if (this.plotter && shape === this.shape) {
      this.plotter.setData(aligned);
      return;
    }
    this.shape = shape;
    this.plotter?.destroy();
    this.plot.textContent = '';
    const series: uPlot.Series[] = [{ label: this.xlabel.textContent ?? 'step',
      value: (_u, v) => formatNumber(v) }];
    for (const line of shown) {
      const value = (_u: uPlot, v: number | null) => formatNumber(v);
      series.push({ label: smooth ? `${line.label} (raw)` : line.label, value, width: 1.5,
        stroke: smooth ? faint(line.color) : line.color });
      if (smooth) {
        series.push({ label: line.label, value, stroke: line.color, width: 1.5 });
      }
    }
    const axis = { stroke: ink, font: FONT, grid: { stroke: grid, width: 0.5 },
      ticks: { stroke: grid, width: 0.5 } };
    this.plotter = new uPlot({
      ...this.size,
      scales: { x: { time: false,
        range: (_u, lo, hi) => lo === hi ? [lo - 0.5, hi + 0.5] : [lo, hi] } },
      axes: [{ ...axis, ...(integer ? { incrs: INTEGER_STEPS } : {}),
        values: (_u, splits) => {
          const labels = splits.map(v => formatNumber(v));
          this.node.dataset.xTicks = labels.join(' ');   // what the x axis shows, for a reader
          return labels;
        } },
        { ...axis, size: 56 }],
      series,
      legend: { live: true },
      cursor: { drag: { x: true, y: false } }
    }, aligned, this.plot);
    // The legend's rows name the drawn series (the first row is the x value).
    const rows = this.plotter.root.querySelectorAll<HTMLElement>('.u-legend .u-series');
    rows.forEach((row, i) => {
      if (i > 0) {
        row.classList.add('ct-line');
        row.dataset.label = series[i].label as string;
      }
    });
  }

  private head = document.createElement('div');
  private title = document.createElement('div');
  private controls = document.createElement('div');
  private smoothing = document.createElement('input');
  private smoothingValue = document.createElement('span');
  private enlarge = document.createElement('button');
  private body = document.createElement('div');
  private plot = document.createElement('div');
  private xlabel = document.createElement('div');
  private ylabel = document.createElement('div');
  private lines: ILine[] = [];
  private large = false;
  private shape = '';
  private plotter: uPlot | null = null;
}

const CHARTS = new WeakMap<HTMLElement, Chart>();

/** Draw ``lines`` into ``node``: a new chart the first time, after that the same chart with
 * new data (the reader's smoothing, size and pointer kept). */
export function renderChart(node: HTMLElement, title: string, lines: ILine[],
  width = 360, height = 200, options: IChartOptions = {}): void {
  let chart = CHARTS.get(node);
  if (!chart) {
    chart = new Chart(node, width, height);
    CHARTS.set(node, chart);
  }
  chart.update(title, lines, options);
}

/** The chart boxes (``.ct-chart-box[data-metric=key]``) of ``container`` for ``keys``, in that
 * order: the ones there are kept (and their charts' state), the missing made, others removed. */
export function chartBoxes(container: HTMLElement, keys: string[]): HTMLElement[] {
  const old = new Map<string, HTMLElement>();
  for (const child of [...container.children] as HTMLElement[]) {
    const key = child.classList.contains('ct-chart-box') ? child.dataset.metric : undefined;
    if (key !== undefined && keys.includes(key) && !old.has(key)) {
      old.set(key, child);
    } else {
      child.remove();
    }
  }
  return keys.map((key, i) => {
    let box = old.get(key);
    if (!box) {
      box = document.createElement('div');
      box.className = 'ct-chart-box';
      box.dataset.metric = key;
    }
    if (container.children[i] !== box) {
      container.insertBefore(box, container.children[i] ?? null);
    }
    return box;
  });
}
