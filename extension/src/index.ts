/** celltrain for JupyterLab: a left sidebar with the workspace's runs and models, a panel per
 * run, and "insert code" into the active notebook.  All data comes from the server extension
 * (``/celltrain/...``), which reads the same workspace store the kernels write. */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Clipboard, MainAreaWidget, Notification, WidgetTracker } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import { ComparePanel } from './compare';
import { RunPanel } from './panels';
import { CelltrainSidebar } from './sidebar';
import { untrackWidgetRequests } from './status';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
<path class="jp-icon3" fill="#616161" d="M3 20h18v2H3zM4 18l4-7 4 4 5-9 3 5v7z"/></svg>`;

export const celltrainIcon = new LabIcon({ name: 'celltrain:icon', svgstr: ICON_SVG });

namespace CommandIDs {
  export const openRun = 'celltrain:open-run';
  export const compare = 'celltrain:compare';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'celltrain:plugin',
  description: 'Runs and models of the celltrain workspace, live, in a sidebar.',
  autoStart: true,
  requires: [],
  optional: [ILayoutRestorer, INotebookTracker],
  activate: (app: JupyterFrontEnd, restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null) => {
    untrackWidgetRequests();     // the status bar: Busy while a cell runs (status.ts)
    const tracker = new WidgetTracker<MainAreaWidget<RunPanel>>({ namespace: 'celltrain-run' });

    const insertCode = (code: string) => {
      const panel = notebooks?.currentWidget;
      if (!panel) {
        Clipboard.copyToSystem(code);
        Notification.warning('No notebook is open: the code was copied to the clipboard.',
          { autoClose: 5000 });
        return;
      }
      const notebook = panel.content;
      NotebookActions.insertBelow(notebook);
      notebook.activeCell?.model.sharedModel.setSource(code);
      app.shell.activateById(panel.id);
    };

    app.commands.addCommand(CommandIDs.openRun, {
      label: args => `celltrain run ${args.id ?? ''}`,
      execute: args => {
        const id = String(args.id);
        const open = tracker.find(w => w.content.runId === id);
        if (open) {
          app.shell.activateById(open.id);
          return open;
        }
        const widget = new MainAreaWidget({ content: new RunPanel(id, { insertCode }) });
        widget.id = `celltrain-run-${id}`;
        widget.title.icon = celltrainIcon;
        widget.title.closable = true;
        void tracker.add(widget);
        app.shell.add(widget, 'main');
        app.shell.activateById(widget.id);
        return widget;
      }
    });

    app.commands.addCommand(CommandIDs.compare, {
      label: 'Compare celltrain runs',
      execute: args => {
        const ids = (args.ids as string[]) ?? [];
        const widget = new MainAreaWidget({ content: new ComparePanel(ids) });
        widget.title.icon = celltrainIcon;
        app.shell.add(widget, 'main');
        app.shell.activateById(widget.id);
        return widget;
      }
    });

    const sidebar = new CelltrainSidebar({
      openRun: id => void app.commands.execute(CommandIDs.openRun, { id }),
      compare: ids => void app.commands.execute(CommandIDs.compare, { ids })
    });
    sidebar.title.icon = celltrainIcon;
    app.shell.add(sidebar, 'left', { rank: 450 });

    if (restorer) {
      restorer.add(sidebar, 'celltrain-sidebar');
      void restorer.restore(tracker, {
        command: CommandIDs.openRun,
        args: w => ({ id: w.content.runId }),
        name: w => w.content.runId
      });
    }
  }
};

export default plugin;
