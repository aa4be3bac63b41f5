/** The run list's metric: what a row shows next to its duration (its primary or last-logged
 * metric, or the columns the user chose), and the picker that chooses those columns.  The
 * choice is kept in the workspace (PUT /celltrain/settings), so `celltrain runs` and
 * `%train list` show the same columns. */
import { formatNumber } from './chart';
import { h } from './dom';
import { requestAPI } from './request';
import { IRunPage, IRunSummary, ISettings } from './types';

/** The row's metric text: `val_loss 0.31 · acc 0.9` for chosen columns, else its primary or
 * last-logged metric, `acc 0.9`. */
export function metricText(run: IRunSummary, columns: string[]): string {
  if (columns.length) {
    return columns.map(c => `${c} ${formatNumber(run.metrics?.[c])}`).join(' · ');
  }
  return run.metric ? `${run.metric.name} ${formatNumber(run.metric.value)}` : '';
}

export function metricSpan(run: IRunSummary, columns: string[]): HTMLElement | null {
  const text = metricText(run, columns);
  return text ? h('span', { class: 'ct-run-metric', title: text, text }) : null;
}

/** A "Columns" drop-down of checkboxes, one per metric the listed runs logged. */
export class ColumnPicker {
  readonly node = h('details', { class: 'ct-columns-picker' },
    h('summary', { text: 'Columns', title: 'metrics shown in each row (kept in the workspace)' }));

  constructor(private changed: () => void) {
    this.node.append(this.list);
  }

  /** Update the choices from a page (rebuilt only when they change: a click is never lost). */
  update(page: IRunPage): void {
    this.columns = page.columns ?? [];
    const names = [...new Set([...this.columns, ...(page.metric_names ?? [])])];
    const key = JSON.stringify([names, this.columns]);
    if (key === this.key) {
      return;
    }
    this.key = key;
    this.list.textContent = '';
    if (!names.length) {
      this.list.append(h('div', { class: 'ct-empty', text: 'No metrics logged yet.' }));
    }
    for (const name of names) {
      const box = h('input', { type: 'checkbox', value: name,
        checked: this.columns.includes(name) });
      box.onchange = () => void this.save(name, box.checked);
      this.list.append(h('label', { class: 'ct-column', 'data-column': name }, box, name));
    }
    this.list.append(h('div', { class: 'ct-version-meta',
      text: 'None ticked: each run shows its primary metric (a sweep\'s objective) or the ' +
        'one it logged last.' }));
  }

  columns: string[] = [];

  private async save(name: string, on: boolean): Promise<void> {
    const columns = on ? [...this.columns.filter(c => c !== name), name]
      : this.columns.filter(c => c !== name);
    const saved = await requestAPI<ISettings>('settings',
      { method: 'PUT', body: JSON.stringify({ run_columns: columns }) });
    this.columns = saved.run_columns;
    this.changed();
  }

  private key = '';
  private list = h('div', { class: 'ct-columns-list' });
}
