"""The workspace store: one SQLite file plus one folder per run.

Every view (widgets, sidebar, CLI) reads from here and keeps no state of its own.  ``Store``
(``db.py``: connections, write transactions, migrations) is composed of one part per group of
tables: ``runs.py`` (experiments, runs, status history, warnings), ``metrics.py`` (points and
their rollups), ``tables.py`` (logged tables and images), ``models.py`` (the model registry's
tables), ``ingest.py`` (how far each events file is ingested), ``settings.py`` (the views'
chosen metric columns).  ``schema.py`` holds the migrations; ``series.py`` reads metric series
for charts; ``search.py`` turns a run search ("lr=0.01 birds") into SQL.
"""
from .db import Store

__all__ = ["Store"]
