/** A comparison of several runs: their params and final metrics side by side (one column per
 * run, the params that differ highlighted) and their curves overlaid, each curve labelled by
 * what differs (`lr=0.01`) rather than by the run's number. */
import { chartBoxes, COLORS, formatNumber, ILine, renderChart } from './chart';
import { h, statusBadge } from './dom';
import { requestAPI } from './request';
import { PolledWidget } from './polled';
import { IMetrics, IRunDetail, TERMINAL } from './types';

const CHART_POINTS = 600;
const MAX_LABEL_PARAMS = 3;

export class ComparePanel extends PolledWidget {
  constructor(readonly runIds: string[]) {
    super('celltrain:compare', 3000);
    this.id = `celltrain-compare-${runIds.join('-')}`;
    this.addClass('ct-panel');
    this.addClass('ct-compare-panel');
    this.title.label = `Compare ${runIds.length} runs`;
    this.title.closable = true;
    this.node.append(h('div', { class: 'ct-panel-header' },
      h('span', { class: 'ct-panel-title', text: `Comparing ${runIds.length} runs` })),
    this.table, h('h3', { text: 'Metrics' }), this.charts);
  }

  async refresh(): Promise<void> {
    const all = await Promise.all(this.runIds.map(id => Promise.all([
      requestAPI<IRunDetail>(`runs/${encodeURIComponent(id)}`),
      requestAPI<IMetrics>(`runs/${encodeURIComponent(id)}/metrics?max_points=${CHART_POINTS}`)])));
    const runs = all.map(([run]) => run);
    const labels = curveLabels(runs);
    this.table.replaceChildren(compareTable(runs, labels));
    const names = [...new Set(all.flatMap(([, m]) => m.series.map(s => s.name)))].sort();
    const boxes = chartBoxes(this.charts, names);
    names.forEach((name, k) => {
      const lines: ILine[] = [];
      all.forEach(([, m], i) => {
        const s = m.series.find(x => x.name === name);
        if (s) {
          lines.push({ label: labels[i], color: COLORS[i % COLORS.length], x: s.x, y: s.y });
        }
      });
      renderChart(boxes[k], name, lines, 480, 240);
    });
    if (runs.every(run => TERMINAL.includes(run.status))) {
      this.poll.stop();
    }
  }

  private table = h('div', { class: 'ct-compare-table-box' });
  private charts = h('div', { class: 'ct-charts' });
}

/** A param's value as a person writes it: text bare, anything else as JSON. */
export function paramText(value: unknown): string {
  return value === undefined ? '–' : typeof value === 'string' ? value : JSON.stringify(value);
}

/** The params whose values are not the same in every run (missing counts as a value). */
export function differingParams(runs: IRunDetail[]): string[] {
  const keys = [...new Set(runs.flatMap(r => Object.keys(r.params)))].sort();
  return keys.filter(k => new Set(runs.map(r => paramText(r.params[k]))).size > 1);
}

/** Each run's curve label: the params that differ (`lr=0.01, batch=64`), else its name; a run
 * whose label another run shares gets its number too. */
export function curveLabels(runs: IRunDetail[]): string[] {
  const differ = differingParams(runs).slice(0, MAX_LABEL_PARAMS);
  const labels = runs.map(r => differ.length
    ? differ.map(k => `${k}=${paramText(r.params[k])}`).join(', ')
    : `${r.experiment} #${r.number}`);
  return labels.map((label, i) => labels.indexOf(label) !== labels.lastIndexOf(label)
    ? `${label} (${runs[i].experiment} #${runs[i].number})` : label);
}

function compareTable(runs: IRunDetail[], labels: string[]): HTMLElement {
  const differ = new Set(differingParams(runs));
  const params = [...new Set(runs.flatMap(r => Object.keys(r.params)))].sort();
  const metrics = [...new Set(runs.flatMap(r => Object.keys(r.metrics)))].sort();
  const head = h('tr', {}, h('th', {}),
    ...runs.map((r, i) => h('th', { 'data-run-id': r.id, title: r.id },
      h('div', { class: 'ct-compare-run', text: `${r.experiment} #${r.number}` }),
      statusBadge(r.status),
      h('div', { class: 'ct-compare-label', text: labels[i] }))));
  const section = (text: string) =>
    h('tr', { class: 'ct-compare-section' }, h('th', { colspan: runs.length + 1, text }));
  const rows: HTMLElement[] = [];
  if (params.length) {
    rows.push(section('params'));
  }
  for (const k of params) {
    rows.push(h('tr', { class: differ.has(k) ? 'ct-differs' : undefined, 'data-param': k,
      title: differ.has(k) ? 'differs between the runs' : undefined },
    h('th', { text: k }), ...runs.map(r => h('td', { text: paramText(r.params[k]) }))));
  }
  if (metrics.length) {
    rows.push(section('final metrics'));
  }
  for (const k of metrics) {
    rows.push(h('tr', { 'data-metric': k }, h('th', { text: k }),
      ...runs.map(r => h('td', { text: k in r.metrics ? formatNumber(r.metrics[k]) : '–' }))));
  }
  return h('table', { class: 'ct-table ct-compare-table' }, h('thead', {}, head),
    h('tbody', {}, ...rows));
}
