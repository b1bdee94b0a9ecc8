"""Resuming an extraction (issue 3, "Done means" 3): a run killed at any moment and re-run
with the same arguments ends byte-identical to an uninterrupted one; other arguments,
changed text or a second writer are refused; and ``saestudio extract`` itself."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from saestudio.activations.extract import (
    ExtractConfig,
    extract,
    open_activation_dataset,
    open_hook,
)
from saestudio.activations.store import DataError


def cfg(model: str, out: Path, **kw) -> ExtractConfig:
    base = dict(
        model=model, dataset="demo:pydoc", hooks=["resid_post.1"], out=str(out),
        context_length=16, max_tokens=16 * 6, batch_size=4, shard_tokens=16 * 4, device="cpu",
    )  # fmt: skip
    return ExtractConfig(**(base | kw))


KILLABLE = """
import sys, time, torch
torch.set_num_threads(2)
from saestudio.activations import extract as ex
load = ex.load_model
def slow_load(*a, **k):  # slow enough to be killed half-way
    model = load(*a, **k)
    model.register_forward_pre_hook(lambda *_: time.sleep(0.1))
    return model
ex.load_model = slow_load
ex.extract(ex.ExtractConfig.model_validate_json(sys.argv[1]), progress=False)
"""


def all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_killed_and_resumed_is_byte_identical(model_dirs, tmp_path: Path) -> None:
    kw = dict(
        hooks=["resid_post.0", "mlp_out.1"], max_tokens=16 * 48, batch_size=2, dtype="float16"
    )
    killed = cfg(model_dirs["gpt2"], tmp_path / "killed", **kw)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, killed.model_dump_json()], env=env)
    manifest = tmp_path / "killed" / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 2:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    half = open_activation_dataset(tmp_path / "killed")
    assert not half.complete and 0 < half.contexts < 48, "killed too late to test a resume"
    with pytest.raises(
        DataError,
        match=rf"incomplete extraction \({half.contexts} of 48 contexts\).*same arguments",
    ):
        open_hook(tmp_path / "killed", "resid_post.0")

    resumed = extract(killed, progress=False)
    whole = extract(cfg(model_dirs["gpt2"], tmp_path / "whole", **kw), progress=False)
    assert resumed.complete and resumed.contexts == whole.contexts == 48
    a, b = all_files(tmp_path / "killed"), all_files(tmp_path / "whole")
    assert a.keys() == b.keys() and len(a) == 2 + 4 * 12  # manifest, .lock, 4 folders × 12 shards
    for name in a:
        if name != "manifest.json":
            assert a[name] == b[name], name
    ma, mb = json.loads(a["manifest.json"]), json.loads(b["manifest.json"])
    assert {k: v for k, v in ma.items() if k != "created"} == {
        k: v for k, v in mb.items() if k != "created"
    }


def test_resume_refuses_other_arguments_and_changed_text(model_dirs, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("\n\n".join(f"paragraph {i} " * 8 for i in range(40)))
    c = cfg(
        model_dirs["gpt2"], tmp_path / "acts", dataset=str(text), batch_size=2, max_tokens=16 * 12
    )
    polls = iter(range(100))
    half = extract(c, progress=False, should_stop=lambda: next(polls) >= 3)  # stop after 4 batches
    assert not half.complete and half.contexts == 8
    with pytest.raises(ValueError, match=r"other arguments \(context_length: 16 → 32"):
        extract(c.model_copy(update={"context_length": 32}), progress=False)
    text.write_text("something else entirely " * 200)
    with pytest.raises(DataError, match="no longer yields the tokens stored in shard_00000"):
        extract(c, progress=False)


def test_complete_dataset_is_left_alone_and_short_text_ends_early(
    model_dirs, tmp_path: Path
) -> None:
    text = tmp_path / "t.txt"
    text.write_text("a short text " * 10)  # 130 characters + EOS: 8 contexts of 15 + BOS
    c = cfg(model_dirs["gpt2"], tmp_path / "acts", dataset=str(text), batch_size=3)
    m = extract(c, progress=False)
    assert m.complete and m.contexts == m.target_contexts == 6
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "acts").rglob("*")}
    assert extract(c, progress=False) == m
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "acts").rglob("*")}
    short = extract(
        c.model_copy(update={"out": str(tmp_path / "short"), "max_tokens": 16 * 20}), progress=False
    )
    assert short.complete and short.contexts == 8 and short.target_contexts == 20
    assert [s.contexts for s in short.shards] == [(0, 4), (4, 8)]


# ---- what is stored ----------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str]:
    from saestudio.cli.extract import register

    parser = argparse.ArgumentParser(prog="saestudio")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["extract", *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = args.func(args)
    return rc, out.getvalue()


def test_cli_extract(model_dirs, tmp_path: Path) -> None:
    out = tmp_path / "acts"
    common = ["--model", model_dirs["minilm"], "--dataset", "demo:pydoc", "--context-length", "16",
              "--max-tokens", "64", "--quiet", "--out", str(out)]  # fmt: skip
    rc, text = run_cli(
        *common,
        "--hooks",
        "resid_post.1,mlp_out.1",
        "--dtype",
        "float16",
        "--exclude-special-tokens",
    )
    assert rc == 0 and "4 contexts × 16 tokens" in text and "resid_post.1 (d=384)" in text
    m = open_activation_dataset(out)
    assert m.complete and m.storage_dtype == "float16" and m.exclude_special_tokens
    assert list(m.hooks) == ["resid_post.1", "mlp_out.1"]
    with pytest.raises(ValueError, match="other arguments") as e:
        run_cli(*common, "--hooks", "resid_post.1")
    assert "\n" not in str(e.value)
    err = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stderr(err):
        run_cli("--model", "m")
    assert "required: --dataset, --hooks, --out" in err.getvalue()


def test_a_second_writer_is_refused_and_progress_is_reported(model_dirs, tmp_path: Path) -> None:
    import fcntl

    c = cfg(model_dirs["gpt2"], tmp_path / "acts", max_tokens=16 * 12, batch_size=2)
    (tmp_path / "acts").mkdir()
    with (tmp_path / "acts" / ".lock").open("a") as held:  # as a running extraction holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="another extraction is writing to"):
            extract(c, progress=False)
    seen: list[tuple[int, bool]] = []
    polls = iter(range(100))
    half = extract(
        c,
        progress=False,
        should_stop=lambda: next(polls) >= 2,  # stop after the third batch
        on_shard=lambda m: seen.append((m.contexts, m.complete)),
    )
    assert seen == [(4, False)] and half.contexts == 4  # the half-done shard is dropped
    m = extract(c, progress=False, on_shard=lambda m: seen.append((m.contexts, m.complete)))
    assert seen == [(4, False), (8, False), (12, False)] and m.complete
    # an extraction that stored nothing (a wrong text column, say) restarts with new arguments
    (tmp_path / "t.jsonl").write_text('{"body": "some text to read"}\n' * 20)
    bad = cfg(model_dirs["gpt2"], tmp_path / "fresh", dataset=str(tmp_path / "t.jsonl"))
    with pytest.raises(DataError, match="no column 'text'"):
        extract(bad, progress=False)
    good = extract(bad.model_copy(update={"text_column": "body"}), progress=False)
    assert good.complete and good.dataset["text_column"] == "body"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        extract(cfg(model_dirs["gpt2"], tmp_path / "file"), progress=False)
