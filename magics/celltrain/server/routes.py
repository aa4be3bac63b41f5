"""The REST API under ``<base_url>/celltrain/``: thin handlers over ``CelltrainManager``.

    GET  workspace                        which workspace the server shows, and why that one
    GET  experiments                      experiments with run counts
    GET  runs?experiment=&status=&sort=&order=&limit=&offset=&search=&metrics=1&columns=
                                          search: "lr=0.01 birds" (store/search.py);
                                          metrics=1 adds each run's metrics (server/runlist.py)
    GET  runs/<id>                        params, tags, status history, latest metrics
    GET  runs/<id>/metrics?name=&max_points=&rank=   one rank's series, downsampled
    GET  runs/<id>/system?max_points=     CPU, memory, GPU series (sys/...), seconds since start
    GET  runs/<id>/logs?file=&offset=&tail=     log text from a byte offset
    GET  runs/<id>/files                  the run's files
    GET  runs/<id>/files/<path>           one file (only inside the run's folder)
    POST runs/<id>/cancel                 {"grace": seconds}
    GET  models, models/<name>            versions and aliases
    GET  deployments                      served models: state, URL, requests, latency
    GET, PUT settings                     {"run_columns": [...]}: the run list's metric columns

Every verb requires Jupyter's authentication.  Each handler parses the request, calls one manager
method in a worker thread (SQLite reads of a big series must not stall the server) and writes
JSON.  Errors: 400 echoes the bad value, 403 a path outside the run, 404 names the id, 409 a
conflict such as cancelling a finished run.
"""
from __future__ import annotations

import asyncio
import json
import mimetypes
from urllib.parse import quote

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from .manager import CelltrainManager, ManagerError
from .runlist import add_metrics, save_settings, settings

CHUNK = 1024 * 1024
INLINE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "text/plain"}


class CelltrainHandler(APIHandler):
    @property
    def manager(self) -> CelltrainManager:
        return self.settings["celltrain_manager"]

    async def call(self, method, *args, **kwargs):
        try:
            return await asyncio.to_thread(method, *args, **kwargs)
        except ManagerError as e:
            raise tornado.web.HTTPError(e.status, str(e), reason=type(e).__name__) from None

    def send(self, data, status: int = 200) -> None:
        """Write ``data`` as JSON (a ``str`` is JSON text already)."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(data if isinstance(data, str) else json.dumps(data))

    # -- query arguments: a bad one is a 400 that echoes it ---------------------------------------
    def int_arg(self, name: str, default: int | None) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:   # also a number of more than 4300 digits
            shown = raw if len(raw) <= 100 else raw[:100] + "..."
            raise tornado.web.HTTPError(400, f"{name} takes a whole number, not {shown!r}",
                                        reason="BadRequest") from None

    def list_arg(self, name: str) -> list[str] | None:
        values = [v for raw in self.get_query_arguments(name) for v in raw.split(",") if v]
        return values or None


class WorkspaceHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self):
        self.send(await self.call(self.manager.info))


class ExperimentsHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self):
        self.send({"experiments": await self.call(self.manager.experiments)})


class RunsHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self):
        order = self.get_query_argument("order", "desc")
        if order not in ("asc", "desc"):
            raise tornado.web.HTTPError(400, f"order takes asc or desc, not {order!r}",
                                        reason="BadRequest")
        page = await self.call(
            self.manager.list_runs_json, experiment=self.get_query_argument("experiment", None) or None,
            status=self.list_arg("status"), sort=self.get_query_argument("sort", "created"),
            descending=order == "desc", limit=self.int_arg("limit", 100),
            offset=self.int_arg("offset", 0), search=self.get_query_argument("search", None))
        if self.get_query_argument("metrics", "") in ("1", "true"):
            page = await self.call(add_metrics, self.manager, json.loads(page),
                                   self.get_query_argument("columns", None))
        self.send(page)


class SettingsHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self):
        self.send(await self.call(settings, self.manager))

    @tornado.web.authenticated
    async def put(self):
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(
                400, f"settings take a JSON object, not {self.request.body[:200]!r}",
                reason="BadRequest") from None
        self.send(await self.call(save_settings, self.manager, body))


class RunHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str):
        self.send(await self.call(self.manager.run, run_id))


class MetricsHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str):
        self.send(await self.call(self.manager.metrics, run_id, names=self.list_arg("name"),
                                  max_points=self.int_arg("max_points", 1000),
                                  rank=self.int_arg("rank", 0)))


class SystemHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str):
        from .system import system_series
        self.send(await self.call(system_series, self.manager, run_id,
                                  max_points=self.int_arg("max_points", 500)))


class LogsHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str):
        self.send(await self.call(self.manager.logs, run_id,
                                  file=self.get_query_argument("file", "output"),
                                  offset=self.int_arg("offset", None),
                                  tail=self.int_arg("tail", 64 * 1024)))


class SweepHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str):
        self.send(await self.call(self.manager.sweep, run_id))


class FilesHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str):
        self.send(await self.call(self.manager.files, run_id))


class FileHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str, rel: str):
        f, name, size = await self.call(self.manager.open_file, run_id, rel)
        with f:
            await self._send_file(f, name, size)

    async def _send_file(self, f, name: str, size: int) -> None:
        kind, encoding = mimetypes.guess_type(name)
        kind = kind if kind and not encoding else "application/octet-stream"
        self.set_header("Content-Type", kind)
        # Only images and plain text are shown in the page: a run's HTML or SVG rendered on
        # Jupyter's origin could script it, so anything else is always a download.
        inline = self.get_query_argument("inline", "") == "1" and kind in INLINE_TYPES
        disposition = "inline" if inline else "attachment"
        self.set_header("Content-Disposition",
                        f"{disposition}; filename*=UTF-8''{quote(name)}")
        self.set_header("Content-Length", str(size))
        left = size                  # the size when opened: a growing log is cut there
        while left > 0 and (chunk := f.read(min(CHUNK, left))):
            left -= len(chunk)
            self.write(chunk)
            await self.flush()
        self.finish()


class CancelHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def post(self, run_id: str):
        body = self.request.body.strip() or b"{}"
        try:
            grace = float(json.loads(body).get("grace", 10.0))
        except (ValueError, TypeError, AttributeError):
            raise tornado.web.HTTPError(
                400, f"cancel takes a JSON body like {{\"grace\": 10}}, not {body[:200]!r}",
                reason="BadRequest") from None
        self.send(await self.call(self.manager.cancel, run_id, grace=grace), status=202)


class ModelsHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self):
        self.send({"models": await self.call(self.manager.models)})


class ModelHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self, name: str):
        self.send(await self.call(self.manager.model, name))


class DeploymentsHandler(CelltrainHandler):
    @tornado.web.authenticated
    async def get(self):
        from .deployments import deployments
        self.send({"deployments": await self.call(deployments, self.manager)})


RUN = r"(?P<run_id>[^/]+)"
ROUTES = [
    (r"workspace", WorkspaceHandler),
    (r"experiments", ExperimentsHandler),
    (r"runs", RunsHandler),
    (rf"runs/{RUN}", RunHandler),
    (rf"runs/{RUN}/metrics", MetricsHandler),
    (rf"runs/{RUN}/system", SystemHandler),
    (rf"runs/{RUN}/logs", LogsHandler),
    (rf"runs/{RUN}/files", FilesHandler),
    (rf"runs/{RUN}/files/(?P<rel>.+)", FileHandler),
    (rf"runs/{RUN}/cancel", CancelHandler),
    (rf"runs/{RUN}/sweep", SweepHandler),
    (r"models", ModelsHandler),
    (r"models/(?P<name>[^/]+)", ModelHandler),
    (r"deployments", DeploymentsHandler),
    (r"settings", SettingsHandler),
]


def setup_route_handlers(web_app, manager: CelltrainManager) -> None:
    web_app.settings["celltrain_manager"] = manager
    base = url_path_join(web_app.settings["base_url"], "celltrain")
    web_app.add_handlers(".*$", [(url_path_join(base, path) + "/?$", handler)
                                 for path, handler in ROUTES])
