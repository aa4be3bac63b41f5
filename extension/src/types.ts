/** What the REST API answers (see magics/celltrain/server/routes.py). */

export interface IWorkspaceInfo {
  path: string;
  source: string;
  exists: boolean;
  version: string;
  states: string[];
  active_states: string[];
  runs: number;
  experiments: number;
  message?: string;
}

export interface IExperiment {
  id: number;
  name: string;
  created: number;
  runs: number;
  last_run: number | null;
}

export interface IProgress {
  n?: number;
  total?: number | null;
  desc?: string | null;
  rate?: number | null;
  elapsed?: number | null;
  eta?: number | null;
  /** when the run reported it (seconds since the epoch): the ETA counts down from there */
  t?: number | null;
  done?: boolean;
}

export interface IRunSummary {
  id: string;
  experiment: string;
  number: number;
  status: string;
  target: string;
  created: number;
  started: number | null;
  ended: number | null;
  script: string | null;
  reason: string | null;
  exit_code: number | null;
  progress: IProgress | null;
  params: Record<string, unknown>;
  tags: Record<string, string>;
  cancel_requested: number;
  kind?: string; // "run", "sweep" (its trials have it as parent_id), "trial"
  parent_id?: string | null;
  /** with ?metrics=1: the metric logged last and its latest value */
  metric?: { name: string; value: number | null } | null;
  /** with ?metrics=1: the latest value of each chosen column (null: none logged) */
  metrics?: Record<string, number | null>;
}

export interface IRunPage {
  runs: IRunSummary[];
  total: number;
  limit: number;
  offset: number;
  /** with ?metrics=1: the metric columns shown (the workspace's choice) */
  columns?: string[];
  /** with ?metrics=1: every metric the page's runs logged */
  metric_names?: string[];
}

/** GET/PUT settings: what the user chose for the views, kept in the workspace. */
export interface ISettings {
  run_columns: string[];
}

export interface IRunDetail extends IRunSummary {
  args: string[];
  image: string | null;
  image_digest: string | null;
  terminal: boolean;
  history: { status: string; time: number; detail: string | null }[];
  metrics: Record<string, number | null>;
  metric_names: string[];
  models: { name: string; version: number }[];
  images: { name: string; path: string; step: number | null; time: number }[];
  /** what the host could not take from the run (bad values, skipped links), with counts */
  warnings: string[];
  folder: string;
  workspace: string;
  /** a distributed run's ranks, from their records; empty for one process */
  ranks?: IRank[];
  /** what ran: a %%train cell's source and notebook, or a script's command line */
  code?: IRunCode;
  /** the last system sample (sys/cpu_percent, sys/mem_bytes, ...) */
  system?: Record<string, number | null>;
}

export interface IRunCode {
  kind: 'cell' | 'script';
  source: string | null;
  notebook: string | null;
  cell: string | null;
  command: string | null;
}

export interface ISystemSeries {
  id: string;
  series: Record<string, { t: number[]; v: (number | null)[] }>;
  latest: Record<string, number | null>;
}

export interface IRank {
  rank: number;
  node: number | null;
  local_rank: number | null;
  state: string | null;
  exit_code: number | null;
  last_line: string | null;
}

export interface ISeries {
  name: string;
  count: number;
  downsampled: boolean;
  x: number[];
  y: (number | null)[];
}

export interface IMetrics {
  id: string;
  series: ISeries[];
}

export interface ILogChunk {
  text: string;
  start: number;
  offset: number;
  size: number;
  reset: boolean;
  truncated: boolean;
}

export interface IRunFile {
  path: string;
  /** null for a link: its target's size is never reported */
  size: number | null;
  modified: number;
  /** the link's target, for a symbolic link (links are listed, never served) */
  link?: string;
}

export interface IModelVersion {
  version: number;
  run_id: string | null;
  created: number;
  description: string | null;
  tags: Record<string, string>;
  metrics: Record<string, number>;
  archived: boolean;
  aliases: string[];
  sha256: string;
  /** exported forms by format, e.g. {"onnx": {"path": ..., "opset": 18}} */
  artifacts?: Record<string, Record<string, unknown>>;
}

export interface IModel {
  name: string;
  latest: number | null;
  aliases: Record<string, number>;
  versions: IModelVersion[];
}

export const TERMINAL = ['Completed', 'Failed', 'Canceled'];

export interface IDeployment {
  name: string;
  state: string;
  url: string;
  model: string;
  run: string;
  started: number | null;
  requests: number;
  errors: number;
  latency_p50_ms: number;
  latency_p95_ms: number;
  reason: string | null;
}
