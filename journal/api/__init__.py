"""The REST API (``/api/v1``): routers per resource over the job database, the package
store and the capture slot; long work runs as ``journal`` child processes (worker.py)."""
