/** The main-area panel of one run: charts, log tail, params, files, Cancel, insert code (a
 * comparison of several runs is compare.ts). */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';

import { chartBoxes, COLORS, formatNumber, renderChart } from './chart';
import { age, duration, h, statusBadge } from './dom';
import { apiUrl, requestAPI } from './request';
import { progressLine } from './sidebar';
import { PolledWidget } from './polled';
import { CodeSection, SystemSection } from './runextras';
import { modelSnippet, runSnippet } from './snippets';
import { ILogChunk, IMetrics, IRunDetail, IRunFile } from './types';

const MAX_LOG_CHARS = 200_000;
const CHART_POINTS = 600;

export interface IPanelActions {
  insertCode(code: string): void;
}

export class RunPanel extends PolledWidget {
  constructor(readonly runId: string, private actions: IPanelActions) {
    super(`celltrain:run:${runId}`, 1500);
    this.id = `celltrain-run-panel-${runId}`;
    this.addClass('ct-panel');
    this.title.label = runId;
    this.title.closable = true;
    this.cancelButton.onclick = () => void this.cancel();
    this.rankPicker.onchange = () => {
      this.rank = Number(this.rankPicker.value);
      void this.refreshMetrics();
    };
    this.insertButton.onclick = () => {
      if (this.detail) {
        this.actions.insertCode(runSnippet(this.detail.workspace, this.runId));
      }
    };
    this.insertModelButton.onclick = () => {
      const m = this.detail?.models[this.detail.models.length - 1];
      if (m && this.detail) {
        this.actions.insertCode(modelSnippet(this.detail.workspace, m.name, m.version));
      }
    };
    this.node.append(
      h('div', { class: 'ct-panel-header' }, this.heading,
        h('div', { class: 'ct-panel-buttons' }, this.cancelButton, this.insertButton,
          this.insertModelButton)),
      this.summary,
      this.sweepHeading, this.sweepView,
      h('h3', { text: 'Metrics' }), this.ranksRow, this.charts,
      this.imagesHeading, this.images,
      h('h3', { text: 'Log' }), this.log,
      h('h3', { text: 'System' }), this.system.node,
      h('h3', { text: 'Code' }), this.code.node,
      h('div', { class: 'ct-columns' },
        h('div', {}, h('h3', { text: 'Params and tags' }), this.params),
        h('div', {}, h('h3', { text: 'History' }), this.history)),
      h('h3', { text: 'Files' }), this.files);
  }

  async refresh(): Promise<void> {
    let detail: IRunDetail;
    try {
      detail = await requestAPI<IRunDetail>(`runs/${encodeURIComponent(this.runId)}`);
    } catch (error) {
      this.summary.textContent = error instanceof Error ? error.message : String(error);
      throw error;
    }
    const wasTerminal = this.detail?.terminal;
    this.detail = detail;
    this.renderHeader(detail);
    this.code.render(detail.code);
    await Promise.all([this.refreshMetrics(), this.refreshLog(), this.refreshFiles(),
      this.refreshSweep(detail), this.system.refresh(this.runId)]);
    if (detail.terminal && wasTerminal) {
      this.poll.stop(); // ended, and the last refresh after the end is done: nothing changes now
    }
  }

  private renderHeader(d: IRunDetail): void {
    this.node.dataset.status = d.status;
    this.title.label = `${d.experiment} #${d.number}`;
    this.title.caption = d.id;
    this.heading.textContent = '';
    this.heading.append(statusBadge(d.status),
      h('span', { class: 'ct-panel-title', text: `${d.experiment} #${d.number}` }),
      h('code', { text: d.id }));
    this.cancelButton.hidden = d.terminal;
    this.cancelButton.disabled = d.terminal || !!d.cancel_requested;
    this.cancelButton.textContent = d.cancel_requested && !d.terminal ? 'Canceling…' : 'Cancel';
    this.insertModelButton.hidden = !d.models.length;
    this.summary.textContent = '';
    this.summary.append(...[
      h('span', { class: 'ct-source', text: runSource(d),
        title: `${d.tags.notebook ?? ''} (${d.target} · ${d.script ?? ''})` }),
      h('span', { text: `created ${age(d.created)}` }),
      d.started ? h('span', { text: `ran ${duration(d.started, d.ended)}` }) : null,
      d.exit_code !== null ? h('span', { text: `exit code ${d.exit_code}` }) : null,
      d.image ? h('span', { class: 'ct-image', text: d.image, title: d.image_digest ?? '' }) : null,
      progressLine(d),
      d.reason ? h('div', { class: 'ct-reason', text: d.reason }) : null,
      warningList(d.warnings)]
      .filter((x): x is HTMLElement => x !== null));
    this.renderImages(d);
    this.renderRanks(d);
    this.params.textContent = '';
    const rows = [...Object.entries(d.params).map(([k, v]) => ['param', k, JSON.stringify(v)]),
      ...Object.entries(d.tags).map(([k, v]) => ['tag', k, v]),
      ...Object.entries(d.metrics).map(([k, v]) => ['metric', k, formatNumber(v)])];
    this.params.append(table(['', 'name', 'value'], rows));
    this.history.textContent = '';
    this.history.append(table(['status', 'time', 'detail'], d.history.map(e =>
      [e.status, new Date(e.time * 1000).toLocaleTimeString(), e.detail ?? ''])));
  }

  private renderRanks(d: IRunDetail): void {
    const ranks = d.ranks ?? [];
    this.ranksRow.hidden = ranks.length < 2;
    this.ranksStrip.textContent = '';
    for (const r of ranks) {
      const state = r.state ?? 'unknown';
      const text = `rank ${r.rank}${r.node !== null ? ` · node ${r.node}` : ''} · ${state}` +
        (r.exit_code !== null ? ` (${r.exit_code})` : '');
      this.ranksStrip.append(h('span', { class: `ct-rank ct-rank-${state}`,
        'data-rank': String(r.rank), title: r.last_line ?? '', text }));
    }
    const options = ranks.map(r => String(r.rank));
    if (options.join(',') !== Array.from(this.rankPicker.options, o => o.value).join(',')) {
      this.rankPicker.textContent = '';
      for (const value of options) {
        this.rankPicker.append(h('option', { value, text: `rank ${value}` }));
      }
      this.rankPicker.value = String(this.rank);
    }
  }

  /** Images given to log_image, newest last; each is fetched once. */
  private renderImages(d: IRunDetail): void {
    this.imagesHeading.hidden = this.images.hidden = !d.images.length;
    for (const image of d.images.slice(this.images.childElementCount)) {
      const src = apiUrl('runs', encodeURIComponent(this.runId), 'files',
        ...image.path.split('/').map(encodeURIComponent)) + '?inline=1';
      this.images.append(h('figure', { class: 'ct-image-box' },
        h('img', { src, alt: image.name, loading: 'lazy' }),
        h('figcaption', { text: image.step === null ? image.name : `${image.name} (step ${image.step})` })));
    }
  }

  /** A sweep's trials table and charts: the server's HTML of the notebook's sweep view. */
  private async refreshSweep(d: IRunDetail): Promise<void> {
    this.sweepHeading.hidden = this.sweepView.hidden = d.kind !== 'sweep';
    if (d.kind !== 'sweep') {
      return;
    }
    const sweep = await requestAPI<{ html: string }>(`runs/${encodeURIComponent(this.runId)}/sweep`);
    this.sweepView.innerHTML = sweep.html; // built by celltrain.views.sweep_view, every value escaped
  }

  private async refreshMetrics(): Promise<void> {
    const m = await requestAPI<IMetrics>(
      `runs/${encodeURIComponent(this.runId)}/metrics?max_points=${CHART_POINTS}&rank=${this.rank}`);
    if (!m.series.length) {
      this.charts.replaceChildren(h('div', { class: 'ct-empty', text: 'No metrics logged yet.' }));
    }
    // train/val variants of one quantity share a chart, as in the notebook's widget.
    const panels = new Map<string, typeof m.series>();
    for (const s of m.series) {
      const key = panelKey(s.name);
      panels.set(key, [...(panels.get(key) ?? []), s]);
    }
    const boxes = m.series.length ? chartBoxes(this.charts, [...panels.keys()]) : [];
    [...panels.values()].forEach((series, i) => {
      const key = boxes[i].dataset.metric ?? '';
      const cut = series.filter(s => s.downsampled)
        .map(s => ` (${s.name}: ${s.count} points, shown ${s.x.length})`).join('');
      renderChart(boxes[i], `${key}${cut}`, series.map((s, j) => ({ label: s.name,
        color: COLORS[j % COLORS.length], x: s.x, y: s.y })), 420, 240, { ylabel: key });
    });
  }

  private async refreshLog(): Promise<void> {
    const query = this.logOffset === null ? '' : `?offset=${this.logOffset}`;
    const chunk = await requestAPI<ILogChunk>(
      `runs/${encodeURIComponent(this.runId)}/logs${query}`);
    if (this.logOffset === null || chunk.reset) {
      this.log.textContent = chunk.truncated ? '… (earlier output omitted)\n' : '';
    }
    if (chunk.text) {
      const atBottom = this.log.scrollTop + this.log.clientHeight >= this.log.scrollHeight - 4;
      let text = (this.log.textContent ?? '') + chunk.text;
      if (text.length > MAX_LOG_CHARS) {
        text = '… ' + text.slice(-MAX_LOG_CHARS);
      }
      this.log.textContent = text;
      if (atBottom) {
        this.log.scrollTop = this.log.scrollHeight;
      }
    }
    this.logOffset = chunk.offset;
  }

  private async refreshFiles(): Promise<void> {
    const { files } = await requestAPI<{ files: IRunFile[] }>(
      `runs/${encodeURIComponent(this.runId)}/files`);
    this.files.textContent = '';
    if (!files.length) {
      this.files.append(h('li', { class: 'ct-empty', text: 'No files yet.' }));
    }
    for (const f of files.filter(f => !f.path.startsWith('telemetry/'))) { // celltrain's own
      if (f.link !== undefined || f.size === null) { // links are listed, never followed
        this.files.append(h('li', { class: 'ct-file-link' }, h('span', { text: f.path }),
          h('span', { class: 'ct-version-meta', text: ` → ${f.link ?? '?'} (link)` })));
        continue;
      }
      const href = apiUrl('runs', encodeURIComponent(this.runId), 'files',
        ...f.path.split('/').map(encodeURIComponent));
      this.files.append(h('li', {}, h('a', { href, download: f.path.split('/').pop(),
        text: f.path }), h('span', { class: 'ct-version-meta', text: ` ${size(f.size)}` })));
    }
  }

  private async cancel(): Promise<void> {
    const answer = await showDialog({
      title: 'Cancel run',
      body: `Stop ${this.runId}? It gets SIGTERM, then SIGKILL after 10 seconds.`,
      buttons: [Dialog.cancelButton({ label: 'Keep running' }),
        Dialog.warnButton({ label: 'Cancel run' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await requestAPI(`runs/${encodeURIComponent(this.runId)}/cancel`,
        { method: 'POST', body: JSON.stringify({ grace: 10 }) });
    } catch (error) {
      await showErrorMessage('Could not cancel the run', error as Error);
    }
    void this.poll.refresh();
  }

  private detail: IRunDetail | null = null;
  private logOffset: number | null = null;
  private heading = h('div', { class: 'ct-panel-heading' });
  private cancelButton = h('button', { class: 'ct-cancel jp-mod-styled jp-mod-warn', text: 'Cancel' });
  private insertButton = h('button', { class: 'ct-insert jp-mod-styled jp-mod-accept',
    text: 'Insert code', title: 'Add a cell that loads this run to the active notebook' });
  private insertModelButton = h('button', { class: 'ct-insert-model jp-mod-styled',
    text: 'Insert model code', title: 'Add a cell that loads the model registered from this run' });
  private summary = h('div', { class: 'ct-summary' });
  private charts = h('div', { class: 'ct-charts' });
  /** A distributed run: one pill per rank (node, state, exit code) and whose charts show. */
  private rank = 0;
  private ranksStrip = h('div', { class: 'ct-ranks' });
  private rankPicker = h('select', { class: 'ct-rank-picker jp-mod-styled',
    title: 'whose metrics the charts show' }) as HTMLSelectElement;
  private ranksRow = h('div', { class: 'ct-ranks-row' }, this.rankPicker, this.ranksStrip);
  private sweepHeading = h('h3', { text: 'Trials' });
  private sweepView = h('div', { class: 'ct-sweep-view' });
  private log = h('pre', { class: 'ct-log' });
  private imagesHeading = h('h3', { text: 'Images' });
  private images = h('div', { class: 'ct-images' });
  private params = h('div', { class: 'ct-params' });
  private history = h('div', { class: 'ct-history' });
  private files = h('ul', { class: 'ct-files' });
  private system = new SystemSection();
  private code = new CodeSection();
}

function table(header: string[], rows: string[][]): HTMLElement {
  return h('table', { class: 'ct-table' },
    h('thead', {}, h('tr', {}, ...header.map(x => h('th', { text: x })))),
    h('tbody', {}, ...rows.map(r => h('tr', {}, ...r.map(x => h('td', { text: x }))))));
}

/** The run's warnings (skipped links, bad values), one line each; nothing when there are none. */
function warningList(warnings: string[] | undefined): HTMLElement | null {
  if (!warnings || !warnings.length) {
    return null;
  }
  return h('ul', { class: 'ct-warnings', title: 'The run went on despite these' },
    ...warnings.map(w => h('li', { text: w })));
}

function size(n: number): string {
  return n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB`
    : `${(n / (1 << 20)).toFixed(1)} MiB`;
}

const SPLIT = 'train|training|val|valid|validation|test|eval';
const SPLIT_PREFIX = new RegExp(`^(${SPLIT})[_/.\\-](.+)$`, 'i');
const SPLIT_SUFFIX = new RegExp(`^(.+)[_/.\\-](${SPLIT})$`, 'i');

/** The chart a metric goes in: train/val variants of one quantity share one (as
 * celltrain.views.format.panel_key does for the widget). */
export function panelKey(name: string): string {
  const prefix = SPLIT_PREFIX.exec(name);
  if (prefix) {
    return prefix[2];
  }
  const suffix = SPLIT_SUFFIX.exec(name);
  return suffix ? suffix[1] : name;
}

/** Where a run came from: a %%train cell's notebook and cell, else its target and script. */
export function runSource(d: IRunDetail): string {
  if (d.tags.notebook || d.tags.cell) {
    return [d.tags.notebook?.split('/').pop(), d.tags.cell].filter(Boolean).join(' · ');
  }
  return `${d.target} · ${d.script ?? ''} ${(d.args || []).join(' ')}`.trim();
}
