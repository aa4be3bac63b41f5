"""What a shim module answers for a v1 name it does not cover: a ``NotImplementedError``
naming the call and the celltrain way, never an ``AttributeError`` (stdlib only)."""

GENERAL = ("use celltrain directly (import celltrain; ws = celltrain.Workspace(); "
           "ws.experiment(name).submit(...)); the README's 'Migrating from Azure ML SDK v1' "
           "lists what the layer maps")


def not_covered(module, hints=None):
    """A module-level ``__getattr__`` for the shim ``module`` (its azureml name)."""
    hints = hints or {}

    def __getattr__(name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        raise NotImplementedError(
            "%s.%s is not covered by celltrain's Azure ML v1 layer: %s"
            % (module, name, hints.get(name, GENERAL)))
    return __getattr__


class Uncovered:
    """A mixin: a v1 method the layer lacks raises ``NotImplementedError`` with the way."""

    _v1_name = "object"
    _v1_hints = {}

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        raise NotImplementedError(
            "%s.%s is not covered by celltrain's Azure ML v1 layer: %s"
            % (self._v1_name, name, self._v1_hints.get(name, GENERAL)))
