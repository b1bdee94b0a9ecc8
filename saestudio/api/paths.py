"""Confine every user-given path or name to the data dir.

Relative paths are taken relative to ``data_dir``; ``..`` components, absolute paths
outside it and symlinks pointing out are refused with 400 (the path is ``resolve()``d,
which follows symlinks, before the containment check).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

from fastapi import HTTPException

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_. -]{0,199}")
_LOCAL_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet", ".csv")


def refuse(field: str, value: str, why: str) -> HTTPException:
    return HTTPException(400, detail=f"{field}: {value!r} {why}")


def inside(data_dir: Path, value: str, field: str) -> str:
    """``value`` as a POSIX path relative to ``data_dir``, or 400."""
    if not value or "\x00" in value:
        raise refuse(field, value, "is not a path")
    given = PurePath(value)
    if ".." in given.parts:
        raise refuse(field, value, "must not contain '..'")
    root = data_dir.resolve()
    full = Path(value).expanduser()
    resolved = (full if full.is_absolute() else root / full).resolve()
    if not resolved.is_relative_to(root):
        raise refuse(field, value, "is outside the data directory")
    rel = resolved.relative_to(root).as_posix()
    return rel or "."


def safe_name(value: str, field: str = "name") -> str:
    """A plain name (templates, datasets): no separators, no leading dot, or 400."""
    if not _NAME.fullmatch(value) or ".." in value:
        raise refuse(field, value, "must be a plain name (letters, digits, _ . - space)")
    return value


def is_local_dataset(value: str, data_dir: Path) -> bool:
    """Whether ExtractConfig.dataset is read as a local file (and so must be confined).

    The extractor reads any value that exists as a path (relative to its cwd) as a local
    file, so a value counts as local when it looks like a path (absolute, ./, ../, ~, a
    text/table suffix) or exists relative to the cwd or the data dir; only ``demo:...``
    and the remaining names (hub ids) pass untouched. Confined local values are made
    absolute, so the worker's cwd no longer matters for them.
    """
    if value.startswith("demo:"):
        return False
    path = Path(value).expanduser()
    return (
        value.startswith(("/", ".", "~"))
        or value.lower().endswith(_LOCAL_SUFFIXES)
        or ".." in PurePath(value).parts
        or path.exists()
        or (data_dir / value).exists()
    )


def slug(text: str) -> str:
    """A file-name-safe rendering of a run name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "run"
