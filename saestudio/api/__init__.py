"""The HTTP API (FastAPI): thin routes over :mod:`saestudio.store.repo`."""
