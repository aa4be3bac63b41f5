/** The left sidebar: Runs (live status, search, filters, metric columns, select several to
 * compare) and Models. */
import { Clipboard } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';

import { formatNumber } from './chart';
import { age, duration, h, statusBadge } from './dom';
import { MissingServerExtension, requestAPI } from './request';
import { PolledWidget } from './polled';
import { deploymentsSection, fetchDeployments } from './deployments';
import { ColumnPicker, metricSpan } from './columns';
import { modelSnippet } from './snippets';
import { IExperiment, IModel, IRunPage, IRunSummary, IWorkspaceInfo, TERMINAL } from './types';

const PAGE = 100;

export interface ISidebarActions {
  openRun(id: string): void;
  compare(ids: string[]): void;
}

export class CelltrainSidebar extends PolledWidget {
  constructor(private actions: ISidebarActions) {
    super('celltrain:sidebar', 2000);
    this.id = 'celltrain-sidebar';
    this.addClass('ct-sidebar');
    this.title.caption = 'celltrain: runs and models';
    this.buildSkeleton();
  }

  /** Fetch what the current tab shows; a rejection makes the poll back off. */
  async refresh(): Promise<void> {
    try {
      this.info = await requestAPI<IWorkspaceInfo>('workspace');
    } catch (error) {
      this.showError(error);
      if (error instanceof MissingServerExtension) {
        this.runsView.hidden = this.modelsView.hidden = true;
        return; // nothing will change until JupyterLab restarts: no point retrying fast
      }
      throw error;
    }
    this.error.hidden = true;
    this.workspaceLine.textContent = this.info.path;
    this.workspaceLine.title = `${this.info.path}\nchosen by: ${this.info.source}`;
    this.notice.hidden = this.info.exists;
    this.notice.textContent = this.info.message ?? '';
    if (this.tab === 'runs') {
      await this.refreshRuns();
    } else {
      await this.refreshModels();
    }
  }

  // -- layout -----------------------------------------------------------------------------------
  private buildSkeleton(): void {
    const runsTab = h('button', { class: 'ct-tab ct-active', 'data-tab': 'runs', text: 'Runs' });
    const modelsTab = h('button', { class: 'ct-tab', 'data-tab': 'models', text: 'Models' });
    for (const tab of [runsTab, modelsTab]) {
      tab.onclick = () => {
        this.tab = tab.dataset.tab as 'runs' | 'models';
        runsTab.classList.toggle('ct-active', this.tab === 'runs');
        modelsTab.classList.toggle('ct-active', this.tab === 'models');
        this.runsView.hidden = this.tab !== 'runs';
        this.modelsView.hidden = this.tab !== 'models';
        void this.poll.refresh();
      };
    }
    this.experimentSelect.onchange = this.statusSelect.onchange = () => {
      this.offset = 0;
      void this.poll.refresh();
    };
    this.searchInput.oninput = () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = window.setTimeout(() => {
        this.offset = 0;
        void this.poll.refresh();
      }, 300);
    };
    this.compareButton.onclick = () => this.actions.compare([...this.selected]);
    this.prevButton.onclick = () => {
      this.offset = Math.max(0, this.offset - PAGE);
      void this.poll.refresh();
    };
    this.nextButton.onclick = () => {
      this.offset += PAGE;
      void this.poll.refresh();
    };
    this.runsView.append(
      h('div', { class: 'ct-search-row' }, this.searchInput, this.columnPicker.node),
      this.searchError,
      h('div', { class: 'ct-filters' },
        h('label', {}, 'Experiment ', this.experimentSelect),
        h('label', {}, 'Status ', this.statusSelect)),
      h('div', { class: 'ct-toolbar' }, this.compareButton, this.pageLabel, this.prevButton,
        this.nextButton),
      this.runList);
    this.modelsView.hidden = true;
    this.node.append(
      h('div', { class: 'ct-header' }, h('span', { class: 'ct-title', text: 'celltrain' }),
        this.workspaceLine),
      h('div', { class: 'ct-tabs' }, runsTab, modelsTab),
      this.error, this.notice, this.runsView, this.modelsView);
    this.error.hidden = true;
    this.notice.hidden = true;
    this.searchError.hidden = true;
    this.statusSelect.append(h('option', { value: '', text: 'all' }),
      h('option', { value: 'active', text: 'active' }));
    for (const s of ['Queued', 'Preparing', 'Starting', 'Running', 'Finalizing', 'Completed',
      'Failed', 'Canceled']) {
      this.statusSelect.append(h('option', { value: s, text: s }));
    }
  }

  private showError(error: unknown): void {
    this.error.hidden = false;
    this.error.textContent = error instanceof Error ? error.message : String(error);
  }

  // -- runs ---------------------------------------------------------------------------------------
  private async refreshRuns(): Promise<void> {
    const { experiments } = await requestAPI<{ experiments: IExperiment[] }>('experiments');
    this.fillExperiments(experiments);
    const params = new URLSearchParams({ limit: String(PAGE), offset: String(this.offset),
      metrics: '1' });
    const search = this.searchInput.value.trim();
    if (search) {
      params.set('search', search);
    }
    if (this.experimentSelect.value) {
      params.set('experiment', this.experimentSelect.value);
    }
    const status = this.statusSelect.value === 'active'
      ? this.info!.active_states.join(',') : this.statusSelect.value;
    if (status) {
      params.set('status', status);
    }
    let page: IRunPage;
    try {
      page = await requestAPI<IRunPage>(`runs?${params}`);
    } catch (error) {
      if (search && error instanceof ServerConnection.ResponseError &&
        error.response.status === 400) {
        this.searchError.hidden = false; // a search that cannot be read: say why, by the box
        this.searchError.textContent = error.message;
        this.searchInput.classList.add('ct-invalid');
        return;
      }
      throw error;
    }
    this.searchError.hidden = true;
    this.searchInput.classList.remove('ct-invalid');
    this.columnPicker.update(page);
    this.renderRuns(page);
  }

  private fillExperiments(experiments: IExperiment[]): void {
    const names = experiments.map(e => e.name);
    const key = names.join('\n');
    if (key === this.experimentKey) {
      return;
    }
    this.experimentKey = key;
    const current = this.experimentSelect.value;
    this.experimentSelect.textContent = '';
    this.experimentSelect.append(h('option', { value: '', text: 'all' }));
    for (const e of experiments) {
      this.experimentSelect.append(h('option', { value: e.name, text: `${e.name} (${e.runs})` }));
    }
    this.experimentSelect.value = names.includes(current) ? current : '';
  }

  private renderRuns(page: IRunPage): void {
    const search = this.searchInput.value.trim();
    const last = Math.min(page.offset + page.runs.length, page.total);
    this.pageLabel.textContent = page.total
      ? `${page.offset + 1}–${last} of ${page.total}` : '';
    this.prevButton.disabled = page.offset === 0;
    this.nextButton.disabled = last >= page.total;
    // Rows are kept while their run is unchanged, so a click never lands on a replaced row.
    const rows = new Map<string, { key: string; row: HTMLElement }>();
    this.onPage = new Set(page.runs.map(r => r.id));
    const children: HTMLElement[] = [];
    for (const run of groupTrials(page.runs)) {
      const key = JSON.stringify([run, this.columnPicker.columns]) +
        String(this.onPage.has(run.parent_id ?? ''));
      let entry = this.rows.get(run.id);
      if (!entry || entry.key !== key) {
        entry = { key, row: this.runRow(run) };
      } else {
        entry.row.querySelector('.ct-run-age')!.textContent = age(run.created);
      }
      rows.set(run.id, entry);
      children.push(entry.row);
    }
    this.rows = rows;
    if (!page.runs.length) {
      children.push(h('li', { class: 'ct-empty', text: !this.info?.exists
        ? 'No runs yet: %%train or Experiment.submit starts one.' : search
          ? `No runs match "${search}".` : 'No runs match.' }));
    }
    const current = [...this.runList.children];
    if (current.length !== children.length || current.some((c, i) => c !== children[i])) {
      this.runList.replaceChildren(...children);
    }
    this.updateCompare();
  }

  private runRow(run: IRunSummary): HTMLElement {
    const check = h('input', { type: 'checkbox', class: 'ct-select', title: 'select to compare',
      checked: this.selected.has(run.id) });
    check.onclick = event => {
      event.stopPropagation();
      if (check.checked) {
        this.selected.add(run.id);
      } else {
        this.selected.delete(run.id);
      }
      this.updateCompare();
    };
    const kind = run.parent_id && this.onPage.has(run.parent_id) ? ' ct-trial'
      : run.kind === 'sweep' ? ' ct-sweep' : '';
    const row = h('li', { class: `ct-run${kind}`, 'data-run-id': run.id, title: run.reason ?? run.id },
      check,
      h('div', { class: 'ct-run-main' },
        h('div', { class: 'ct-run-line' }, statusBadge(run.status),
          h('span', { class: 'ct-run-name', text: `${run.experiment} #${run.number}` }),
          h('span', { class: 'ct-run-age', text: age(run.created) })),
        h('div', { class: 'ct-run-line' },
          h('span', { class: 'ct-run-id', text: run.id, title: run.id }),
          metricSpan(run, this.columnPicker.columns),
          run.started ? h('span', { class: 'ct-run-duration', title: 'ran for',
            text: duration(run.started, run.ended) }) : null),
        progressLine(run)));
    row.onclick = () => this.actions.openRun(run.id);
    return row;
  }

  private updateCompare(): void {
    this.compareButton.disabled = this.selected.size < 2;
    this.compareButton.textContent = `Compare (${this.selected.size})`;
  }

  // -- models ------------------------------------------------------------------------------------
  private async refreshModels(): Promise<void> {
    const { models } = await requestAPI<{ models: IModel[] }>('models');
    const deployments = await fetchDeployments();
    const key = JSON.stringify([models, deployments]);
    if (key === this.modelsKey) {
      return; // re-rendering would close what the user opened
    }
    this.modelsKey = key;
    this.modelsView.textContent = '';
    if (!models.length) {
      this.modelsView.append(h('div', { class: 'ct-empty',
        text: 'No models yet: run.register_model("name", path="outputs/model.pt") adds one.' }));
    }
    for (const model of models) {
      this.modelsView.append(this.modelCard(model));
    }
    this.modelsView.append(deploymentsSection(deployments, () => void this.poll.refresh()));
  }

  private modelCard(model: IModel): HTMLElement {
    const workspace = this.info!.path;
    const aliases = Object.entries(model.aliases);
    const snippet = modelSnippet(workspace, model.name, model.latest);
    const copy = h('button', { class: 'ct-copy', text: 'Copy load snippet' });
    copy.onclick = () => {
      Clipboard.copyToSystem(snippet);
      copy.textContent = 'Copied';
      setTimeout(() => (copy.textContent = 'Copy load snippet'), 1500);
    };
    const versions = h('ul', { class: 'ct-versions' });
    for (const v of model.versions) {
      const metrics = Object.entries(v.metrics).slice(0, 3)
        .map(([k, x]) => `${k}=${formatNumber(x)}`).join(' ');
      versions.append(h('li', { class: 'ct-version', 'data-version': v.version },
        h('b', { text: `v${v.version}` }),
        ...v.aliases.map(a => h('span', { class: 'ct-alias', text: a })),
        v.archived ? h('span', { class: 'ct-archived', text: 'archived' }) : null,
        ...Object.entries(v.artifacts ?? {}).map(([format, info]) => h('span', {
          class: 'ct-artifact', 'data-format': format, text: format.toUpperCase(),
          title: `${format} artifact${info.opset ? `, opset ${info.opset}` : ''}: ` +
            `${String(info.path ?? '')}` })),
        h('span', { class: 'ct-version-meta', text: `${age(v.created)} ${metrics}` }),
        v.run_id ? h('a', { class: 'ct-link', text: v.run_id, title: 'open the run' }) : null));
      const link = versions.lastElementChild!.querySelector('a');
      if (link && v.run_id) {
        const id = v.run_id;
        link.onclick = () => this.actions.openRun(id);
      }
    }
    return h('details', { class: 'ct-model', 'data-model': model.name, open: true },
      h('summary', {}, h('b', { text: model.name }),
        h('span', { class: 'ct-version-meta',
          text: ` ${model.versions.length} version${model.versions.length === 1 ? '' : 's'}` +
            (model.latest !== null ? `, latest v${model.latest}` : '') }),
        ...aliases.map(([a, v]) => h('span', { class: 'ct-alias', text: `${a} → v${v}` }))),
      versions,
      h('pre', { class: 'ct-snippet', text: snippet }),
      copy);
  }

  private info: IWorkspaceInfo | null = null;
  private tab: 'runs' | 'models' = 'runs';
  private offset = 0;
  private selected = new Set<string>();
  private experimentKey = '';
  private rows = new Map<string, { key: string; row: HTMLElement }>();
  private onPage = new Set<string>();
  private modelsKey = '';
  private workspaceLine = h('div', { class: 'ct-workspace' });
  private error = h('div', { class: 'ct-error' });
  private notice = h('div', { class: 'ct-notice' });
  private runsView = h('div', { class: 'ct-runs' });
  private modelsView = h('div', { class: 'ct-models' });
  private searchInput = h('input', { type: 'search', class: 'ct-search',
    placeholder: 'Search: name, tag, lr=0.01, lr<0.1',
    title: 'Runs matching every word: text in the name, id, params or tags; NAME=VALUE, ' +
      'NAME!=VALUE, NAME<N, NAME>=N compare a param or tag' });
  private searchTimer = 0;
  private searchError = h('div', { class: 'ct-search-error' });
  private columnPicker = new ColumnPicker(() => void this.poll.refresh());
  private experimentSelect = h('select', { class: 'ct-experiment-filter' });
  private statusSelect = h('select', { class: 'ct-status-filter' });
  private compareButton = h('button', { class: 'ct-compare', disabled: true, text: 'Compare (0)' });
  private pageLabel = h('span', { class: 'ct-page' });
  private prevButton = h('button', { class: 'ct-prev', text: '‹' });
  private nextButton = h('button', { class: 'ct-next', text: '›' });
  private runList = h('ul', { class: 'ct-run-list' });
}

/** Runs in page order, each sweep's trials right under it (when the sweep is on the page). */
export function groupTrials(runs: IRunSummary[]): IRunSummary[] {
  const ids = new Set(runs.map(r => r.id));
  const trials = new Map<string, IRunSummary[]>();
  for (const run of runs) {
    if (run.parent_id && ids.has(run.parent_id)) {
      trials.set(run.parent_id, [...(trials.get(run.parent_id) ?? []), run]);
    }
  }
  const out: IRunSummary[] = [];
  for (const run of runs) {
    if (!(run.parent_id && ids.has(run.parent_id))) {
      out.push(run, ...(trials.get(run.id) ?? []).sort((a, b) => a.number - b.number));
    }
  }
  return out;
}

export function progressLine(run: IRunSummary): HTMLElement | null {
  const p = run.progress;
  if (!p || p.n === undefined) {
    return null;
  }
  const fraction = p.total ? Math.min(1, p.n / p.total) : null;
  // The ETA counts down from its report; once a step overruns it there is none until the next.
  const left = p.eta && p.t ? p.eta - (Date.now() / 1000 - p.t) : p.eta;
  const text = `${p.desc ? p.desc + ' ' : ''}${p.n}${p.total ? '/' + p.total : ''}` +
    (left && left > 0 && !p.done && !TERMINAL.includes(run.status) ? ` eta ${Math.round(left)}s` : '');
  return h('div', { class: 'ct-progress', title: text },
    h('div', { class: 'ct-progress-bar', style: `width:${fraction === null ? 100 : fraction * 100}%` }),
    h('span', { text }));
}
