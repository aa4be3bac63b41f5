/** The run panel's Code and System sections: what ran (a %%train cell's source and notebook, or
 * a script's command line) and the CPU, memory and GPU use the host sampled
 * (GET runs/<id>/system; README "System metrics"). */
import { COLORS, renderChart } from './chart';
import { h } from './dom';
import { requestAPI } from './request';
import { IRunCode, ISystemSeries } from './types';

/** "sys/gpu0_util" -> "GPU 0 utilisation", as celltrain.views.system_view.label. */
export function systemLabel(name: string): string {
  const gpu = /^sys\/gpu(\d+)_(util|mem_bytes)$/.exec(name);
  if (gpu) {
    return `GPU ${gpu[1]} ${gpu[2] === 'util' ? 'utilisation' : 'memory'}`;
  }
  const known: Record<string, string> = { 'sys/cpu_percent': 'CPU', 'sys/mem_bytes': 'memory',
    'sys/mem_percent': 'memory of the limit' };
  return known[name] ?? name.replace(/^sys\//, '');
}

export function formatSystem(name: string, v: number | null | undefined): string {
  if (v === null || v === undefined) {
    return '–';
  }
  if (name.endsWith('_bytes')) {
    const units: [string, number][] = [['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]];
    const unit = units.find(([, size]) => Math.abs(v) >= size);
    return unit ? `${(v / unit[1]).toFixed(1)} ${unit[0]}` : `${v} B`;
  }
  return `${v.toFixed(1)} %`;
}

/** The Code section: the notebook and cell, or the command, and the cell's source. */
export class CodeSection {
  readonly node = h('div', { class: 'ct-code-section' });

  render(code: IRunCode | undefined): void {
    this.node.textContent = '';
    if (!code) {
      return;
    }
    const rows: HTMLElement[] = [];
    if (code.kind === 'cell') {
      rows.push(h('div', { class: 'ct-code-notebook' }, h('b', { text: 'notebook ' }),
        h('code', { text: code.notebook ?? '– (not started from a Jupyter notebook)' }),
        code.cell ? h('span', { text: ` · ${code.cell}` }) : null));
    }
    if (code.command) {
      rows.push(h('div', { class: 'ct-code-command' }, h('b', { text: 'command ' }),
        h('code', { text: code.command })));
    }
    if (code.source) {
      rows.push(h('pre', { class: 'ct-code', text: code.source }));
    }
    this.node.append(...rows);
  }
}

/** The System section: the last sample in words and a chart per quantity. */
export class SystemSection {
  readonly node = h('div', { class: 'ct-system' });

  async refresh(runId: string): Promise<void> {
    const answer = await requestAPI<ISystemSeries>(
      `runs/${encodeURIComponent(runId)}/system?max_points=400`);
    const names = Object.keys(answer.series).filter(n => n !== 'sys/mem_percent')
      .sort((a, b) => Number(a.startsWith('sys/gpu')) - Number(b.startsWith('sys/gpu')) ||
        a.localeCompare(b));
    if (!names.length) {
      this.node.replaceChildren(h('div', { class: 'ct-empty', text: 'No system samples yet (the ' +
        'host samples CPU, memory and GPUs every few seconds while the run runs).' }));
      return;
    }
    const latest = h('div', { class: 'ct-system-latest' },
      ...Object.entries(answer.latest).map(([name, v]) => h('span', {
        'data-name': name }, h('b', { text: `${systemLabel(name)} ` }), formatSystem(name, v))));
    // The chart boxes are kept across polls, so each chart keeps its state (and one uPlot).
    const boxes = names.map(name => {
      let box = this.boxes.get(name);
      if (!box) {
        box = h('div', { class: 'ct-system-chart', 'data-system': name });  // not a metric's
        this.boxes.set(name, box);
      }
      return box;
    });
    this.charts.replaceChildren(...boxes);
    this.node.replaceChildren(latest, this.charts);
    names.forEach((name, i) => {
      const s = answer.series[name];
      const bytes = name.endsWith('_bytes');
      renderChart(boxes[i], `${systemLabel(name)} (${bytes ? 'MiB' : '%'}) over seconds`, [{
        label: systemLabel(name), color: COLORS[i % COLORS.length], x: s.t,
        y: s.v.map(v => v === null ? null : bytes ? v / 2 ** 20 : v) }]);
    });
  }

  private charts = h('div', { class: 'ct-charts' });
  private boxes = new Map<string, HTMLElement>();
}
