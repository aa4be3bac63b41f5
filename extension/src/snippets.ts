/** Code cells that load a run or a model from the workspace the sidebar shows. */

function py(s: string): string {
  return JSON.stringify(s);
}

export function runSnippet(workspace: string, runId: string): string {
  return [
    'from celltrain import Workspace',
    '',
    `run = Workspace(${py(workspace)}).run(${py(runId)})`,
    'run.show()  # live status, curves, logs and Cancel'
  ].join('\n');
}

export function modelSnippet(workspace: string, name: string, version: number | null,
  alias?: string): string {
  const which = alias ? `alias=${py(alias)}` : version !== null ? `version=${version}` : '';
  return [
    'from celltrain import Workspace',
    '',
    `model = Workspace(${py(workspace)}).model(${py(name)}${which ? ', ' + which : ''})`,
    'weights = model.load()  # model.load(model=YourNet()) gives the module in eval mode'
  ].join('\n');
}
