"""What the views share: durations, values, status badges, log lines, tracebacks, chart panels.

Pure helpers of the run widget and the runs table: how a duration, a metric value or a status
shows, lines as a terminal shows them, the last traceback of a log, which chart panel a metric
goes in and its best value.
"""
from __future__ import annotations

import html
import math
import re

from .. import states

MAX_DISPLAY_POINTS = 1000    # per series, for the charts (about 3 per pixel)
MAX_PANELS = 12

STATUS_COLORS = {
    states.QUEUED: "#6b7280", states.PREPARING: "#b45309", states.STARTING: "#b45309",
    states.RUNNING: "#1d4ed8", states.FINALIZING: "#0f766e", states.COMPLETED: "#15803d",
    states.FAILED: "#b91c1c", states.CANCELED: "#4b5563",
}
SPLIT_WORDS = "train|training|val|valid|validation|test|eval"
_SPLIT_PREFIX = re.compile(rf"^({SPLIT_WORDS})[_/.\-](.+)$", re.IGNORECASE)
_SPLIT_SUFFIX = re.compile(rf"^(.+)[_/.\-]({SPLIT_WORDS})$", re.IGNORECASE)
_LOWER_IS_BETTER = re.compile(r"loss|err|mse|mae|rmse|perplex|ppl|nll|wer|cer|dist",
                              re.IGNORECASE)
_HIGHER_IS_BETTER = re.compile(r"acc|f1|auc|prec|recall|iou|map|score|r2|bleu|rouge",
                               re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# The line that says why, in order of preference: pip's, apt's, then any "ERROR:" line.
_CAUSES = (re.compile(r"No matching distribution found for .+|Could not find a version that "
                      r"satisfies the requirement .+"),
           re.compile(r"E: (Unable to locate package|Package .+ has no installation) .*"),
           re.compile(r"^(ERROR|Error|error): .+"))
_TRACEBACK = "Traceback (most recent call last):"


# -- pure helpers (also used by the runs table) ------------------------------------------------
def panel_key(name: str) -> str:
    """The chart panel a metric goes in: train/val variants of one quantity share a panel."""
    m = _SPLIT_PREFIX.match(name)
    if m:
        return m.group(2)
    m = _SPLIT_SUFFIX.match(name)
    return m.group(1) if m else name


def group_panels(names) -> dict[str, list[str]]:
    """{panel: [metric names]} in first-seen order."""
    panels: dict[str, list[str]] = {}
    for name in names:
        panels.setdefault(panel_key(name), []).append(name)
    return panels


def best_value(name: str, values) -> float | None:
    """The best value of a loss-like (lowest) or accuracy-like (highest) metric, else None."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return None
    if _LOWER_IS_BETTER.search(name):
        return min(finite)
    if _HIGHER_IS_BETTER.search(name):
        return max(finite)
    return None


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or math.isnan(seconds) or math.isinf(seconds):
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_rate(rate: float, unit: str = "it") -> str:
    """``12.5 it/s``, or for slow steps the time per step: ``37 s/it`` reads better than
    ``0.027 it/s``."""
    if 0 < rate < 1:
        return f"{1 / rate:.3g} s/{unit}"
    return f"{rate:.3g} {unit}/s"


def format_value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def terminal_lines(text: str) -> list[str]:
    """Lines as a terminal shows them: ANSI codes gone, each line the text after its last \\r."""
    text = _ANSI.sub("", text)
    return [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]


def last_traceback(text: str) -> str | None:
    """The last Python traceback in a log, up to the exception line."""
    start = text.rfind(_TRACEBACK)
    if start < 0:
        return None
    lines = text[start:].splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        out.append(line)
        if line and not line.startswith((" ", "\t")):   # the "ValueError: ..." line
            break
    return "\n".join(out)


def failure_cause(reason: str | None, traceback: str | None = None) -> str | None:
    """The one line that says why a run failed: pip's "No matching distribution found for x"
    out of a build log, the exception line of a traceback, else the reason's first line."""
    lines = [line.strip() for line in terminal_lines(reason or "") if line.strip()]
    for pattern in _CAUSES:
        for line in reversed(lines):
            found = pattern.search(line)
            if found:
                return found.group(0)
    for text in (traceback, last_traceback(reason or "")):
        if text:
            return text.rstrip().splitlines()[-1].strip()
    return lines[0] if lines else None


def badge(status: str) -> str:
    color = STATUS_COLORS.get(status, "#6b7280")
    return (f'<span style="background:{color};color:white;border-radius:9px;'
            f'padding:1px 9px;font-size:12px;font-weight:600">{html.escape(status)}</span>')


def warnings_badge(warnings: list[str]) -> str:
    """A compact "⚠ N warnings" for the header; the lines themselves in its tooltip."""
    if not warnings:
        return ""
    count = f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''}"
    return (f'<span style="color:var(--jp-warn-color0, #b45309);overflow:hidden;'
            f'text-overflow:ellipsis;white-space:nowrap;min-width:6em;flex:0 1000 auto" '
            f'title="{html.escape(chr(10).join(warnings))}">'
            f"⚠ {count}: {html.escape(warnings[0][:80])}"
            f"{'…' if len(warnings[0]) > 80 or len(warnings) > 1 else ''}</span>")


def rank_strip(ranks: list[dict]) -> str:
    """One pill per rank of a distributed run: rank, node, state and, once ended, exit code;
    the rank's last output line in its tooltip.  Empty for a run of one process."""
    if len(ranks) < 2:
        return ""
    pills = []
    for r in ranks:
        state = str(r.get("state") or "unknown")
        color = STATUS_COLORS.get(state.capitalize(), "#6b7280")
        text = f"rank {r['rank']}" + (f" · node {r['node']}" if r.get("node") is not None else "")
        text += f" · {state}" + (f" ({r['exit_code']})" if r.get("exit_code") is not None else "")
        last = html.escape(str(r.get("last_line") or ""))
        pills.append(f'<span data-rank="{r["rank"]}" title="{last}" style="border:1px solid '
                     f'{color};color:{color};border-radius:9px;padding:0 7px;font-size:11px;'
                     f'white-space:nowrap">{html.escape(text)}</span>')
    return ('<div class="celltrain-ranks" style="display:flex;gap:4px;flex-wrap:wrap">'
            + "".join(pills) + "</div>")
