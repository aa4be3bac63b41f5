"""The widget's pieces of HTML: the log tail, the chart placeholder, the folded log and the CSS
that shows the static copy only where the live widget is gone."""
from __future__ import annotations

import html

from . import charts

LOG_LINES_SHORT = 6          # always visible


def tail_html(lines: list[str], fixed: bool = True) -> str:
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


def chart_placeholder() -> str:
    return (f'<div class="celltrain-chart-placeholder" style="height:{charts.HEIGHT}px;'
            f'width:{charts.WIDTH}px;display:flex;align-items:center;justify-content:center;'
            f'border:1px dashed var(--jp-border-color2, #ddd);box-sizing:border-box;'
            f'color:var(--jp-ui-font-color2, #777);font-size:12px">'
            f"charts appear here with the first log()</div>")


def pre_html(lines: list[str], height: str | None = None) -> str:
    style = "margin:0;font-size:11px;line-height:1.3;white-space:pre-wrap;word-break:break-all"
    if height:
        style += f";max-height:{height};overflow-y:auto"
    return f'<pre style="{style}">{html.escape(chr(10).join(lines))}</pre>'


def static_copy_css(token: str) -> str:
    """Next to the live widget the static copy hides; where the widget's model is gone (a
    reopened notebook, a new kernel) ipywidgets shows "Error displaying widget: model not found"
    in the widget's output, which then hides, so that only the static copy shows.  (That error
    output is the only widget output with the ``jupyter-widgets`` class on itself.)"""
    return (f"body:has(.celltrain-live-{token}) .celltrain-static-{token}{{display:none}}"
            f".jp-OutputArea-child:has(> .jp-OutputArea-output.jupyter-widgets)"
            f":has(+ .jp-OutputArea-child .celltrain-static-{token}){{display:none}}")
