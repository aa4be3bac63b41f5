"""``azureml.widgets``: ``RunDetails(run).show()`` is celltrain's run widget (a sweep's for a
HyperDrive run)."""
from .uncovered import not_covered


class RunDetails:
    def __init__(self, run_instance):
        self.run = run_instance

    def show(self):
        handle = self.run._submitted("RunDetails.show")
        if (handle.record.get("kind") or "run") == "sweep":
            from ..sweep.handle import Sweep
            return Sweep.of(handle).show()
        return handle.show()

    def get_widget_data(self, widget_settings=None):
        return self.run.get_details()


__getattr__ = not_covered("azureml.widgets")
