"""The job layer: Celery app and tasks, the Celery- and DB-free job runners, live events and
the embedded worker launcher (DESIGN.md §1, issue 4 items 3–6).

Import the submodules directly. This package file stays empty on purpose: ``celery -A
saestudio.jobs.celery_app`` imports it first, and the worker should start without
loading torch.
"""
