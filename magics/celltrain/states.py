"""Run states and the order they come in.

Queued -> Preparing -> Starting -> Running -> Finalizing -> Completed | Failed | Canceled.
Any state may jump to Failed or Canceled; terminal states never change again.
"""
from __future__ import annotations

QUEUED = "Queued"
PREPARING = "Preparing"
STARTING = "Starting"
RUNNING = "Running"
FINALIZING = "Finalizing"
COMPLETED = "Completed"
FAILED = "Failed"
CANCELED = "Canceled"

ORDER = (QUEUED, PREPARING, STARTING, RUNNING, FINALIZING, COMPLETED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELED})
ACTIVE = frozenset({QUEUED, PREPARING, STARTING, RUNNING, FINALIZING})
ALL = (*ORDER, FAILED, CANCELED)


def is_terminal(status: str) -> bool:
    return status in TERMINAL
