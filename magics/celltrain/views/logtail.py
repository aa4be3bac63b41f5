"""The widget's log as HTML: the tail of a few lines always shown, and the longer log."""
from __future__ import annotations

import html

LOG_LINES_SHORT = 6          # always visible


def log_tail(lines: list[str], fixed: bool = True) -> str:
    """The log's last lines in a box of a fixed height: one line each, cut at the right edge
    (the whole log is in the accordion below), so the widget does not move as lines come.
    Once the run ended (``fixed=False``) the box is as high as its lines."""
    line = ("white-space:pre;overflow:hidden;text-overflow:ellipsis;height:1.3em")
    rows = "".join(f'<div style="{line}">{html.escape(text) or " "}</div>'
                   for text in lines[-LOG_LINES_SHORT:])
    return (f'<div class="celltrain-log-tail" style="font-family:var(--jp-code-font-family, '
            f'monospace);font-size:11px;line-height:1.3;'
            f'height:{1.3 * (LOG_LINES_SHORT if fixed else len(lines[-LOG_LINES_SHORT:])):.1f}em;'
            f'overflow:hidden">{rows}</div>')


def log_pre(lines: list[str], height: str | None = None) -> str:
    style = "margin:0;font-size:11px;line-height:1.3;white-space:pre-wrap;word-break:break-all"
    if height:
        style += f";max-height:{height};overflow-y:auto"
    return f'<pre style="{style}">{html.escape(chr(10).join(lines))}</pre>'
