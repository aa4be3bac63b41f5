"""A run's final summary as HTML and text: values, files, models, reason, traceback."""
from __future__ import annotations

import html

from .. import states
from ..registry import load_hint
from .format import format_duration, format_value


def summary_html(summary: dict) -> str:
    parts = []
    if summary["metrics"]:
        cell = "padding:1px 16px 1px 0;text-align:{}"
        left, right = cell.format("left"), cell.format("right")
        rows = "".join(
            f"<tr><td style='{left}'>{html.escape(n)}</td>"
            f"<td style='{right}'>{format_value(m['final'])}</td>"
            f"<td style='{right}'>{format_value(m['best'])}</td>"
            f"<td style='{right}'>{m['points']}</td></tr>"
            for n, m in summary["metrics"].items())
        parts.append('<table class="celltrain-summary" style="border-collapse:collapse;'
                     'font-size:12px;margin:4px 0">'
                     f"<tr><th style='{left}'>metric</th><th style='{right}'>final</th>"
                     f"<th style='{right}'>best</th><th style='{right}'>points</th></tr>"
                     f"{rows}</table>")
    if summary["models"]:
        parts.append("<div><b>Registered model:</b> " + ", ".join(
            f"{html.escape(n)} v{v}: <code>{html.escape(load_hint(n, v))}</code>"
            for n, v in summary["models"]) + "</div>")
    if summary["files"]:
        shown = summary["files"][:20]
        more = len(summary["files"]) - len(shown)
        parts.append("<div><b>Output files:</b> " + ", ".join(
            f"<code>{html.escape(f)}</code>" for f in shown)
            + (f" and {more} more" if more > 0 else "") + "</div>")
    if summary.get("warnings"):
        parts.append("<div><b>Warnings:</b><ul style='margin:2px 0'>" + "".join(
            f"<li>{html.escape(line)}</li>" for line in summary["warnings"]) + "</ul></div>")
    parts.append(failure_details(summary))
    return "".join(parts)


def failure_details(summary: dict) -> str:
    """The whole reason and the traceback, one click away: the cause itself is in the header,
    once (a build failure's reason holds 25 lines of build log)."""
    pre = "<pre style='white-space:pre-wrap;font-size:11px;margin:2px 0'>{}</pre>"
    reason = summary["reason"] if summary["status"] == states.FAILED else None
    traceback = summary["traceback"]
    if traceback and reason and traceback.strip() in reason:
        traceback = None                  # the reason is stderr's tail, traceback included
    shown = [text for text in (reason, traceback)
             if text and text.strip() != (summary.get("cause") or "")]
    if not shown:
        return ""
    what = " and ".join(w for w, text in (("the full reason", reason),
                                          ("the traceback", traceback)) if text)
    return ("<details class='celltrain-failure-details'><summary>Details: "
            f"{what}</summary>" + "".join(pre.format(html.escape(t)) for t in shown)
            + "</details>")


def summary_text(summary: dict) -> str:
    lines = [f"run {summary['run']}: {summary['status']} after "
             f"{format_duration(summary['elapsed'])}"]
    for name, m in summary["metrics"].items():
        lines.append(f"  {name}: final {format_value(m['final'])}, "
                     f"best {format_value(m['best'])} ({m['points']} points)")
    if summary["models"]:
        lines.append("  registered model: " + ", ".join(f"{n} v{v} ({load_hint(n, v)})"
                                                        for n, v in summary["models"]))
    if summary["files"]:
        lines.append("  output files: " + ", ".join(summary["files"][:20]))
    for line in summary.get("warnings", ()):
        lines.append("  warning: " + line)
    if summary["reason"] and summary["status"] != states.COMPLETED:
        lines.append("  reason: " + summary["reason"])
    if summary["traceback"]:
        lines.append(summary["traceback"])
    return "\n".join(lines)
