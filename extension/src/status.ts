/** The kernel's status in the status bar stays Busy while a cell runs.
 *
 * JupyterLab 4.6 sends widget messages (``comm_msg``) to a kernel subshell of its own, asking
 * the kernel for one (``create_subshell_request``, on the control channel) when the first
 * widget appears; celltrain's widget clicks go to a subshell too.  The kernel publishes
 * busy/idle around each, and JupyterLab takes every status message as the whole kernel's
 * unless the request's type is "untracked": so a ``%%train`` cell read Idle from its widget's
 * first moments.  Untracking these requests keeps the status that of the cells; their own
 * replies and "idle" still reach whoever waits for them.  What it costs: a long widget
 * callback on a kernel without subshells no longer shows Busy. */
import { PageConfig } from '@jupyterlab/coreutils';

export const UNTRACKED = ['comm_msg', 'create_subshell_request', 'delete_subshell_request'];

/** Add ``UNTRACKED`` to the page's ``untracked_message_types`` (the server's list). */
export function untrackWidgetRequests(): string[] {
  let types: string[] = [];
  try {
    types = JSON.parse(PageConfig.getOption('untracked_message_types') || '[]');
  } catch {
    types = [];
  }
  const all = [...new Set([...types, ...UNTRACKED])];
  PageConfig.setOption('untracked_message_types', JSON.stringify(all));
  return all;
}
