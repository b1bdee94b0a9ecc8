"""Text sources → fixed-length token contexts (SPEC §2.B "Data").

A source is one of

- ``demo:pydoc`` — the Python standard library's ``pydoc_data.topics`` (≈465k characters
  of real English documentation), so demos and tests need no network;
- a local ``.txt`` file (documents are paragraphs separated by blank lines) or a folder
  of ``.txt`` files (one document per file);
- a local ``.jsonl``/``.json``/``.parquet``/``.csv`` file, or a folder of one kind, read
  with ``datasets.load_dataset("json"|"parquet"|"csv", data_files=...)``; the text
  column is selectable;
- anything else is a Hugging Face dataset name, streamed with
  ``datasets.load_dataset(name, config, split=..., streaming=True)``.

Documents are tokenized with the model's tokenizer, joined with the end-of-document
token (EOS, or SEP for BERT-style tokenizers) and cut into contexts of exactly
``context_length`` tokens, each starting with BOS (CLS for BERT) when ``prepend_bos``
and the tokenizer has one — SAELens's packing. The order is a pure function of the
source, so an extraction re-run skips exactly the contexts it already stored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from saestudio.activations.buffer import PrefetchIterator
from saestudio.activations.store import DataError

log = logging.getLogger(__name__)

DEMO_PYDOC = "demo:pydoc"
# suffix → the `datasets` packaged builder that reads it
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
TOKENIZE_DOCS = 64  # documents per tokenizer call (fast tokenizers batch them in Rust)


@dataclass(frozen=True)
class TextSource:
    """Where the text comes from."""

    name: str
    """``demo:pydoc``, a local file or folder, or a Hugging Face dataset name."""
    split: str = "train"
    """Hub datasets: the split to stream (local files have one, ``train``)."""
    text_column: str = "text"
    """Tables (hub, .jsonl, .parquet, .csv): the column holding the text."""
    config: str | None = None
    """Hub datasets: the configuration (subset) name, e.g. ``wikitext-103-raw-v1``."""

    @property
    def local(self) -> Path | None:
        """The local file or folder, or None for the demo source and hub names."""
        if self.name == DEMO_PYDOC:
            return None
        path = Path(self.name).expanduser()
        if path.exists():
            return path
        looks_local = self.name.startswith((".", "/", "~")) or path.suffix in {*BUILDERS, ".txt"}
        if looks_local:
            raise FileNotFoundError(f"--dataset: no such file or folder: {self.name}")
        return None

    def describe(self) -> dict[str, Any]:
        """What an activation dataset's manifest records (local paths made absolute)."""
        local = self.local
        return {
            "name": str(local.resolve()) if local is not None else self.name,
            "split": self.split,
            "text_column": self.text_column,
            "config": self.config,
        }


# ---- documents --------------------------------------------------------------------------


def iter_documents(source: TextSource) -> Iterator[str]:
    """The source's non-empty documents, in a fixed order."""
    if source.name == DEMO_PYDOC:
        from pydoc_data.topics import topics

        # sorted keys: the order must not depend on how the dict was built
        yield from (topics[k] for k in sorted(topics) if topics[k].strip())
        return
    local = source.local
    if local is None:
        yield from _hub_rows(source)
    elif local.is_dir():
        yield from _folder_documents(source, local)
    elif local.suffix == ".txt":
        yield from _paragraphs(local)
    elif local.suffix in BUILDERS:
        yield from _table_rows(source, BUILDERS[local.suffix], [str(local)], str(local))
    else:
        raise DataError(f"--dataset: {local} is not a .txt, .jsonl, .json, .parquet or .csv file")


def _paragraphs(path: Path) -> Iterator[str]:
    """Blank-line separated paragraphs, read line by line (memory stays bounded)."""
    lines: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                lines.append(line)
            elif lines:
                yield "".join(lines).strip()
                lines = []
    if lines:
        yield "".join(lines).strip()


def _folder_documents(source: TextSource, folder: Path) -> Iterator[str]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    kinds = {p.suffix for p in files if p.suffix in {*BUILDERS, ".txt"}}
    if len(kinds) != 1:
        found = ", ".join(sorted(kinds)) or "none"
        raise DataError(
            f"--dataset: folder {folder} must hold files of one kind "
            f"(.txt, .jsonl, .json, .parquet or .csv); found {found}"
        )
    kind = kinds.pop()
    chosen = [p for p in files if p.suffix == kind]
    if kind == ".txt":  # one document per file
        for p in chosen:
            text = p.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                yield text
        return
    yield from _table_rows(source, BUILDERS[kind], [str(p) for p in chosen], str(folder))


def _table_rows(source: TextSource, builder: str, files: list[str], label: str) -> Iterator[str]:
    import datasets

    # streaming: rows are read as needed, nothing is copied into the datasets cache
    rows = datasets.load_dataset(builder, data_files=files, split="train", streaming=True)
    yield from _texts(rows, source.text_column, label)


def _hub_rows(source: TextSource) -> Iterator[str]:
    import datasets

    try:
        rows = datasets.load_dataset(source.name, source.config, split=source.split, streaming=True)
    except OSError as e:  # not found, or the hub unreachable (ConnectionError), or offline
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(
            f"--dataset: {source.name!r} is neither a local file nor a reachable Hugging "
            f"Face dataset ({first})"
        ) from e
    yield from _texts(rows, source.text_column, source.name)


def _texts(rows: Iterable[dict[str, Any]], column: str, label: str) -> Iterator[str]:
    for i, row in enumerate(rows):
        if column not in row:
            raise DataError(
                f"--text-column: {label} has no column {column!r} "
                f"(columns: {', '.join(map(str, row))}); choose one with --text-column"
            )
        text = row[column]
        if text is None:
            continue
        if not isinstance(text, str):
            raise DataError(
                f"--text-column: {label} row {i}: column {column!r} holds "
                f"{type(text).__name__}, not text"
            )
        if text.strip():
            yield text


# ---- tokens -----------------------------------------------------------------------------


def load_tokenizer(name_or_path: str) -> Any:
    """The model's tokenizer (``AutoTokenizer``), local folder or hub name."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--model: cannot load a tokenizer from {name_or_path!r}: {first}") from e


def bos_token_id(tokenizer: Any) -> int | None:
    """The token each context starts with: BOS, or CLS for BERT-style tokenizers."""
    bos = tokenizer.bos_token_id
    return bos if bos is not None else tokenizer.cls_token_id


def separator_token_id(tokenizer: Any) -> int | None:
    """The token between two documents: EOS, or SEP for BERT-style tokenizers."""
    eos = tokenizer.eos_token_id
    return eos if eos is not None else tokenizer.sep_token_id


def special_token_ids(tokenizer: Any) -> list[int]:
    """BOS, CLS, SEP, EOS and pad ids: the rows ``exclude_special_tokens`` drops."""
    ids = (
        tokenizer.bos_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    return sorted({int(i) for i in ids if i is not None})


def pack_contexts(
    documents: Iterable[str], tokenizer: Any, context_length: int, prepend_bos: bool = True
) -> Iterator[list[int]]:
    """Contexts of exactly ``context_length`` token ids; the last partial one is dropped."""
    bos = bos_token_id(tokenizer) if prepend_bos else None
    sep = separator_token_id(tokenizer)
    body = context_length - (bos is not None)
    if body < 1:
        raise ValueError(f"--context-length: must be at least 2, got {context_length}")
    head = [bos] if bos is not None else []
    buf: list[int] = []
    docs = iter(documents)
    while chunk := list(islice(docs, TOKENIZE_DOCS)):
        # verbose=False: long documents are expected here, they are cut into contexts
        encoded = tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]
        for ids in encoded:
            buf.extend(ids)
            if sep is not None:
                buf.append(sep)
            n = len(buf) // body
            for i in range(n):
                yield head + buf[i * body : (i + 1) * body]
            del buf[: n * body]


def iter_contexts(
    source: TextSource, tokenizer: Any, context_length: int, prepend_bos: bool = True
) -> Iterator[list[int]]:
    """``pack_contexts(iter_documents(source), ...)``."""
    return pack_contexts(iter_documents(source), tokenizer, context_length, prepend_bos)


def context_batches(contexts: Iterable[list[int]], batch_size: int) -> Iterator[torch.Tensor]:
    """``[batch, context_length]`` int64 tensors (the last batch may be smaller)."""
    it = iter(contexts)
    while batch := list(islice(it, batch_size)):
        yield torch.tensor(batch, dtype=torch.long)


class ContextReader:
    """Token contexts as ``[n, T]`` int64 tensors, packed in a background thread (fast
    tokenizers release the GIL), so tokenizing overlaps the forward passes."""

    CHUNK = 64  # contexts per hand-over between the threads

    def __init__(self, contexts: Iterator[list[int]], context_length: int):
        def chunks() -> Iterator[torch.Tensor]:
            while chunk := list(islice(contexts, self.CHUNK)):
                yield torch.tensor(chunk, dtype=torch.long)

        self._it = PrefetchIterator(chunks(), prefetch=8)
        self._buf = torch.empty(0, context_length, dtype=torch.long)

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` contexts (fewer when the text runs out)."""
        parts, have = [], 0
        while have < n:
            if not len(self._buf):
                nxt = next(self._it, None)
                if nxt is None:
                    break
                self._buf = nxt
            k = min(n - have, len(self._buf))
            parts.append(self._buf[:k])
            self._buf, have = self._buf[k:], have + k
        if not parts:
            return self._buf[:0]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def __enter__(self) -> ContextReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._it.close()
