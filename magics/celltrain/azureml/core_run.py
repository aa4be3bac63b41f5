"""``azureml.core.run``: v1's ``Run``, both sides of it (stdlib at module level).

In a training script ``Run.get_context()`` is the run this process is part of, logging to
celltrain (or an offline run that keeps values, like v1's).  In a notebook ``experiment.submit``
returns a ``Run`` over a celltrain run: status, details, metrics in v1's shapes, files, models.
"""
import json
import os

from .uncovered import Uncovered, not_covered

TAGS_TABLE = "azureml.tags"     # tags set inside the script, read back by get_tags()
V1_STATUS = {"Queued": "Queued", "Preparing": "Preparing", "Starting": "Starting",
             "Running": "Running", "Finalizing": "Finalizing", "Completed": "Completed",
             "Failed": "Failed", "Canceled": "Canceled"}


def _v1_shape(values):
    """v1's ``get_metrics``: a value logged once is the value, more than once a list."""
    return {name: (series[0] if len(series) == 1 else list(series))
            for name, series in values.items()}


class Run(Uncovered):
    """A v1 run: the context inside a script, or a handle on a submitted run."""

    _v1_name = "Run"
    _v1_hints = {
        "upload_file": "write the file under ./outputs: celltrain copies it back when the run "
                       "ends",
        "complete": "a run completes when its script exits 0",
        "fail": "a run fails when its script exits non-zero or raises",
        "child_run": "use a sweep (HyperDriveConfig / Experiment.sweep) for child runs",
    }

    def __init__(self, experiment=None, run_id=None, _context=None, _handle=None):
        self._context = _context
        self._handle = _handle
        self._experiment = experiment
        if _handle is None and _context is None and run_id is not None:
            self._handle = experiment.workspace.celltrain.run(run_id)

    # -- inside a training script --------------------------------------------------------
    @classmethod
    def get_context(cls, allow_offline=True, **kwargs):
        """The run this process is part of (an offline one outside celltrain, like v1)."""
        from ..runtime.context import get_context
        context = get_context()
        if context.offline and not allow_offline:
            raise RuntimeError("Run.get_context(allow_offline=False) outside a run: this "
                               "process was not started by celltrain")
        return cls(_context=context)

    @property
    def id(self):
        if self._handle is not None:
            return self._handle.id
        return "OfflineRun" if self._context.offline else self._context.id

    @property
    def parent(self):
        """A sweep trial's sweep (HyperDrive's parent run), else None (and offline)."""
        if self._handle is not None:
            parent = self._handle.record.get("parent_id")
            return Run(self._experiment, _handle=self._handle.workspace.run(parent)) \
                if parent else None
        parent = getattr(self._context, "parent_id", None)
        return ParentRun(parent, self._context.experiment) if parent else None

    def _live(self, what):
        if self._context is None:
            raise NotImplementedError(
                "Run.%s on a submitted run: log from inside the training script "
                "(Run.get_context().%s(...)); celltrain's runs are written by their script"
                % (what, what))
        return self._context

    def log(self, name, value, description="", step=None):
        self._live("log").log(name, value, step=step)

    def log_list(self, name, value, description=""):
        self._live("log_list").log_list(name, value)

    def log_row(self, name, description=None, **kwargs):
        self._live("log_row").log_row(name, **kwargs)

    def log_table(self, name, value, description=""):
        self._live("log_table").log_table(name, value)

    def log_image(self, name, path=None, plot=None, description=""):
        context = self._live("log_image")
        if plot is not None:
            import tempfile
            folder = tempfile.mkdtemp(prefix="celltrain-plot-")
            path = os.path.join(folder, "%s.png" % name.replace("/", "_"))
            plot.savefig(path)
        if path is None:
            raise ValueError("log_image(%r) needs path= (an image file) or plot= (a "
                             "matplotlib figure or pyplot)" % name)
        context.log_image(name, path)

    def tag(self, key, value=None):
        if self._context is not None:
            self._context.log_row(TAGS_TABLE, key=str(key), value="" if value is None
                                  else str(value))
            self._tags_offline()[key] = value
            return
        self._handle.workspace.store.update_run(
            self._handle.id, tags={**self._handle.tags, str(key): str(value or "")})

    def _tags_offline(self):
        if not hasattr(self, "_tags"):
            self._tags = {}
        return self._tags

    def get_tags(self):
        if self._handle is not None:
            logged = {r.get("key"): r.get("value") for r in self._handle.table(TAGS_TABLE)}
            return {**self._handle.tags, **logged}
        return dict(self._tags_offline())

    def get_metrics(self, name=None, recursive=False):
        """v1's shape: {name: value} for a value logged once, {name: [values]} otherwise."""
        if self._context is not None:
            values = self._context.get_metrics()
        else:
            values = self._handle.metrics()
            shaped = _v1_shape(values)
            shaped.update(self._tables())
            return {name: shaped[name]} if name is not None and name in shaped else (
                {} if name is not None else shaped)
        shaped = _v1_shape(values)
        return {name: shaped[name]} if name is not None and name in shaped else (
            {} if name is not None else shaped)

    def _tables(self):
        store = self._handle.workspace.store
        names = getattr(store, "table_names", None)
        out = {}
        for table in (names(self._handle.id) if names else []):
            if table == TAGS_TABLE:
                continue
            rows = self._handle.table(table)
            columns = list(dict.fromkeys(k for row in rows for k in row))
            out[table] = {c: [row.get(c) for row in rows] for c in columns}   # v1's table shape
        return out

    # -- a submitted run (host side) ------------------------------------------------------
    def _submitted(self, what):
        if self._handle is None:
            raise NotImplementedError(
                "Run.%s inside a training script: call it on the run experiment.submit "
                "returned, in the notebook" % what)
        return self._handle

    @property
    def experiment(self):
        return self._experiment

    def get_status(self):
        return V1_STATUS.get(self._submitted("get_status").status, "NotStarted")

    def get_details(self):
        from .details import details
        return details(self._submitted("get_details"))

    def wait_for_completion(self, show_output=False, wait_post_processing=False,
                            raise_on_error=True):
        """Block until the run ends; v1's details dict, or an exception when it failed."""
        from .details import wait_for_completion
        return wait_for_completion(self._submitted("wait_for_completion"), show_output,
                                   raise_on_error)

    def get_file_names(self):
        return self._submitted("get_file_names").files()

    def download_file(self, name, output_file_path=None, _validate_checksum=False):
        from .details import download_file
        return download_file(self._submitted("download_file"), name, output_file_path)

    def download_files(self, prefix=None, output_directory=None, output_paths=None,
                       batch_size=100, append_prefix=True, timeout_seconds=None):
        from .details import download_files
        return download_files(self._submitted("download_files"), prefix, output_directory,
                              append_prefix)

    def register_model(self, model_name, model_path=None, tags=None, properties=None,
                       model_framework=None, model_framework_version=None,
                       description=None, datasets=None, sample_input_dataset=None,
                       sample_output_dataset=None, resource_configuration=None, **kwargs):
        from .model import register_from_run
        return register_from_run(self, model_name, model_path, tags, properties, description)

    def cancel(self):
        self._submitted("cancel").cancel()

    def get_portal_url(self):
        return str(self._submitted("get_portal_url").folder)

    def get_children(self, recursive=False, tags=None, properties=None, type=None,
                     status=None, _rehydrate_runs=True):
        handle = self._submitted("get_children")
        return [Run(self._experiment, _handle=r) for r in handle.workspace.runs()
                if r.record.get("parent_id") == handle.id]

    def __repr__(self):
        if self._handle is not None:
            return "Run(Experiment: %s, Id: %s, Status: %s)" % (
                self._handle.experiment, self._handle.id, self.get_status())
        return "Run(Id: %s, offline=%s)" % (self.id, self._context.offline)

    def _repr_html_(self):
        return "<pre>%s</pre>" % json.dumps({"id": self.id, "status": self.get_status()})



class ParentRun(Uncovered):
    """Inside a trial's script, ``Run.get_context().parent``: the sweep, by id (celltrain's
    scripts write to their own run only)."""

    _v1_name = "Run (the parent, inside a script)"
    _v1_hints = {name: "a script logs to its own run (Run.get_context().%s); the sweep shows "
                       "every trial's values (HyperDriveRun.get_metrics(recursive=True))" % name
                 for name in ("log", "log_list", "log_row", "log_table", "log_image", "tag")}

    def __init__(self, run_id, experiment_name):
        self.id = run_id
        self._experiment_name = experiment_name
        self.parent = None      # a sweep is a top-level run

    def __repr__(self):
        return "Run(Experiment: %s, Id: %s)" % (self._experiment_name, self.id)


__getattr__ = not_covered("azureml.core.run")
