"""Names of the files in a run's folder (``<workspace>/runs/<run-id>/``, see ARCHITECTURE.md).

A leaf module: the run handle, the supervisor, the backends, the server and the views all name
these files, and none of them needs another's code for it.
"""
OUTPUT_LOG = "output.log"
STDERR_LOG = "stderr.log"
BUILD_LOG = "build.log"
