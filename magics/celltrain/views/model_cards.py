"""Model cards and model lists: the HTML and text a notebook and the CLI show of the registry."""
from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from ..registry.names import LATEST, latest_version
from .tables import format_table

if TYPE_CHECKING:
    from ..registry.version import ModelVersion
    from ..workspace import Workspace


def version_card_html(model: "ModelVersion", record: dict | None) -> str:
    """``ModelVersion._repr_html_``: a card with the version's lineage, metrics, tags, files,
    artifacts and the line that loads it; ``record`` is its row (None once deleted)."""
    r = record
    if r is None:
        return f"<i>{html.escape(model.name)}:{model.version} was deleted</i>"
    e = html.escape
    chips = "".join(
        f"<span style='border:1px solid var(--jp-border-color1, #888);border-radius:8px;padding:0 6px;"
        f"margin-left:4px;font-size:85%'>{e(a)}</span>" for a in r["aliases"])
    if r["archived"]:
        chips += "<span style='color:var(--jp-warn-color0, #a60);margin-left:6px'>archived</span>"
    metrics = ", ".join(f"{e(k)} = {v:.4g}" for k, v in r["metrics"].items()
                        if v is not None) or "-"
    tags = ", ".join(f"{e(k)}={e(v)}" for k, v in r["tags"].items()) or "-"
    files = model.files()
    shown = ", ".join(e(f) for f in files[:6]) + (" ..." if len(files) > 6 else "")
    arts = ", ".join(
        f"{e(fmt)} ({e(a.get('path', ''))}"
        + (f", opset {a['opset']}, max |diff| {a['max_abs_diff']:.2g}" if fmt == "onnx"
           else "") + ")" for fmt, a in r["artifacts"].items()) or "-"
    run = (f"{e(r['run_id'])} ({e(r['experiment'] or '?')} #{r['run_number']})"
           if r["run_id"] else "-")
    rows = [("run", run), ("metrics", metrics), ("tags", tags),
            ("description", e(r["description"] or "-")), ("files", shown or "-"),
            ("artifacts", arts), ("image", e((r["image_digest"] or "-")[:19])),
            ("sha256", e(r["sha256"][:16]) + "..."),
            ("registered", time.strftime("%Y-%m-%d %H:%M:%S",
                                         time.localtime(r["created"]))),
            ("load", f"<code>{e(model.load_hint())}</code>")]
    body = "".join(f"<tr><td style='text-align:left;color:var(--jp-ui-font-color2, #666);padding-right:12px'>{k}</td>"
                   f"<td style='text-align:left'>{v}</td></tr>" for k, v in rows)
    return (f"<div class='celltrain-model' style='border:1px solid var(--jp-border-color2, #ccc);border-radius:6px;"
            f"padding:8px 12px;display:inline-block'><div style='font-weight:bold'>"
            f"{e(model.name)} <span style='color:var(--jp-ui-font-color2, #666)'>v{model.version}</span>{chips}</div>"
            f"<table style='margin-top:4px'>{body}</table></div>")


def models_html(models: list[dict]) -> str:
    """``ModelList._repr_html_``: one row per model."""
    head = "".join(f"<th style='text-align:left'>{h}</th>"
                   for h in ("model", "latest", "versions", "aliases", "archived"))
    rows = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(c))}</td>"
                         for c in _cells(m)) + "</tr>" for m in models)
    return (f"<table class='celltrain-models'><thead><tr>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table>" if models else "<i>no models registered</i>")


def _cells(m: dict) -> list[str]:
    return [m["name"], f"v{m['latest']}" if m["latest"] else "-",
            ", ".join(str(v) for v in m["versions"]) or "-",
            ", ".join(f"{a}->v{v}" for a, v in m["aliases"].items()) or "-",
            ", ".join(str(v) for v in m["archived"]) or "-"]


def models_text(models: list[dict]) -> str:
    """``repr(ws.models())``: the same table as text."""
    if not models:
        return "no models registered"
    return format_table([_cells(m) for m in models],
                        ["MODEL", "LATEST", "VERSIONS", "ALIASES", "ARCHIVED"])


def format_models(ws: "Workspace") -> str:
    """``celltrain models``: every version of every model with its lineage."""
    rows = []
    for name in ws.store.model_names():
        latest = latest_version(ws.store.model_versions(name))
        for version, _ in reversed(ws.store.model_versions(name)):
            r = ws.store.model_version(name, version)
            marks = r["aliases"] + ([LATEST] if version == latest else [])
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in list(r["metrics"].items())[:3]
                                if v is not None)
            rows.append([name, version, ",".join(marks) or "-",
                         "archived" if r["archived"] else "",
                         r["run_id"] or "-", time.strftime("%Y-%m-%d %H:%M",
                                                           time.localtime(r["created"])),
                         r["sha256"][:12], ",".join(r["artifacts"]) or "-", metrics])
    if not rows:
        return (f"no models registered in {ws.path} "
                "(run.register_model(name, 'outputs/model.pt') registers one)")
    return format_table(rows, ["MODEL", "VERSION", "ALIASES", "STATE", "RUN", "REGISTERED",
                               "SHA256", "ARTIFACTS", "METRICS"])
