"""The path policy (SPEC §E): every path or name a request gives, on every route.

- Data (activation datasets, targets, text files, run and export folders) resolves
  inside ``data_dir``: relative paths are taken relative to it; ``..`` components,
  absolute paths outside it, symlinks pointing out (the path is ``resolve()``d, which
  follows symlinks, before the containment check) and URL-encoded spellings of those
  (``%2e%2e%2f``) are refused.
- A model is a Hugging Face hub name (``gpt2``, ``org/name``), or a folder under
  ``data_dir/models`` or under one of ``SAESTUDIO_MODEL_ROOTS`` (by default the Hugging
  Face cache and the packaged demo model); local folders are stored absolute.
- A name (dataset, template) is a plain name: no separators, no leading dot.

Anything else is a 400 whose detail starts with the field (``config.dataset: ...``).
Confined local values are returned absolute, so the worker reads exactly what was
checked, whatever its working directory.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import unquote

from fastapi import HTTPException

from saestudio.settings import Settings

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_. -]{0,199}")
_HUB = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
_LOCAL_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet", ".csv")


PATH_REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"description": "A path or name outside the path policy: `detail` names the field."}
}
"""``responses=`` of every route that takes a path or a name (the OpenAPI says so)."""


def refuse(field: str, value: str, why: str) -> HTTPException:
    shown = value if len(value) <= 200 else value[:200] + "…"
    return HTTPException(400, detail=f"{field}: {shown!r} {why}")


def _check_spelling(value: str, field: str) -> None:
    """Refuse empty values, NUL bytes, and URL-encoded (once or twice) ``..`` / ``/`` /
    ``~``: no layer decodes them, so such a value is either a mistake or a probe."""
    if not value or "\x00" in value:
        raise refuse(field, value, "is not a path")
    decoded = value
    for _ in range(3):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    if decoded != value and (
        ".." in PurePath(decoded).parts
        or decoded.startswith(("/", "~"))
        or "\x00" in decoded
        or "\\" in decoded
    ):
        raise refuse(field, value, "must not be URL-encoded")


def _usable(fn: Callable[..., str]) -> Callable[..., str]:
    """A path the filesystem cannot even look at (a name too long, ``~nosuchuser``) is a
    400 like any other refusal, never a 500."""

    @functools.wraps(fn)
    def checked(*args: Any) -> str:
        try:
            return fn(*args)
        except HTTPException:
            raise
        except (OSError, RuntimeError, ValueError) as e:
            value, field = args[-2], args[-1]
            raise refuse(field, value, f"is not a usable path ({e})") from None

    return checked


@_usable
def inside(data_dir: Path, value: str, field: str) -> str:
    """``value`` as a POSIX path relative to ``data_dir``, or 400."""
    _check_spelling(value, field)
    if ".." in PurePath(value).parts:
        raise refuse(field, value, "must not contain '..'")
    root = data_dir.resolve()
    full = Path(value).expanduser()
    resolved = (full if full.is_absolute() else root / full).resolve()
    if not resolved.is_relative_to(root):
        raise refuse(field, value, "is outside the data directory")
    rel = resolved.relative_to(root).as_posix()
    return rel or "."


@_usable
def data_path(settings: Settings, value: str, field: str) -> str:
    """``value`` confined to the data dir, as an absolute path (400 otherwise)."""
    return str(settings.data_dir / inside(settings.data_dir, value, field))


@_usable
def folder_below(settings: Settings, value: str, field: str) -> str:
    """A folder strictly below the data dir (an output), relative to it; 400 otherwise."""
    rel = inside(settings.data_dir, value, field)
    if rel == ".":
        raise refuse(field, value, "must be a folder below the data directory")
    return rel


def safe_name(value: str, field: str = "name") -> str:
    """A plain name (templates, datasets): no separators, no leading dot, or 400."""
    _check_spelling(value, field)
    if not _NAME.fullmatch(value) or ".." in value:
        raise refuse(field, value, "must be a plain name (letters, digits, _ . - space)")
    return value


def is_local_dataset(value: str, data_dir: Path) -> bool:
    """Whether a text ``dataset`` value is read as a local file (and so must be confined).

    The readers take any value that exists as a path (relative to their cwd) as a local
    file, so a value counts as local when it looks like a path (absolute, ./, ../, ~, a
    text/table suffix, a %-escape) or exists relative to the cwd or the data dir; only
    ``demo:...`` and the remaining names (hub ids) pass untouched.
    """
    if value.startswith("demo:"):
        return False
    path = Path(value).expanduser()
    return (
        value.startswith(("/", ".", "~"))
        or value.lower().endswith(_LOCAL_SUFFIXES)
        or ".." in PurePath(value).parts
        or "%" in value
        or path.exists()
        or (data_dir / value).exists()
    )


@_usable
def text_source(settings: Settings, value: str, field: str) -> str:
    """A text dataset: ``demo:...`` and hub names as given, a local file or folder
    confined to the data dir and made absolute; 400 otherwise."""
    _check_spelling(value, field)
    if not is_local_dataset(value, settings.data_dir):
        return value
    local = inside(settings.data_dir, value, field)
    if not (settings.data_dir / local).exists() and Path(value).expanduser().exists():
        # the reader would open the file of that name outside the data dir
        raise refuse(field, value, "is outside the data directory")
    return str(settings.data_dir / local)


@_usable
def model_source(settings: Settings, value: str, field: str) -> str:
    """A model: a hub name as given, or a local folder under ``data_dir/models`` or a
    model root (``SAESTUDIO_MODEL_ROOTS``), made absolute; 400 otherwise."""
    _check_spelling(value, field)
    roots = [r.resolve() for r in settings.model_root_paths]
    given = Path(value).expanduser()
    looks_like_path = given.is_absolute() or value.startswith((".", "~")) or ".." in given.parts
    if looks_like_path:
        candidates = [given if given.is_absolute() else Path.cwd() / given]
    else:  # a relative name: under data_dir/models first, then the data dir, then the cwd
        candidates = [settings.data_dir / "models" / value, settings.data_dir / value]
        if given.exists():
            candidates.append(Path.cwd() / given)
    for candidate in candidates:
        if candidate.exists():
            resolved = candidate.resolve()
            if any(resolved.is_relative_to(root) for root in roots):
                return str(resolved)
            raise refuse(
                field, value, "is a local folder outside DATA_DIR/models and SAESTUDIO_MODEL_ROOTS"
            )
    if not looks_like_path and _HUB.fullmatch(value) and ".." not in value:
        return value  # a hub name (the worker downloads it, or finds it in the HF cache)
    raise refuse(
        field,
        value,
        "is neither a Hugging Face model name nor a folder under DATA_DIR/models or "
        "SAESTUDIO_MODEL_ROOTS",
    )


def slug(text: str) -> str:
    """A file-name-safe rendering of a run name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "run"
