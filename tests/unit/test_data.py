"""Activation files and the shuffled training stream (SPEC §2.B "streaming, shuffled,
memory-bounded reading", §2.C "resume continues exactly", erratum 7).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from saestudio.activations.buffer import Batch, ShuffledStream
from saestudio.activations.store import ArrayDataset, DataError


def _rows(n: int, d: int = 4, start: int = 0) -> np.ndarray:
    """Row i has i in column 0, so any row can be traced back to its place in the file."""
    x = np.random.default_rng(start).standard_normal((n, d)).astype(np.float32)
    x[:, 0] = np.arange(start, start + n)
    return x


def _take(stream: ShuffledStream, n: int, start_batch: int = 0) -> list[Batch]:
    it = stream.iterate(start_batch=start_batch)
    try:
        return [next(it) for _ in range(n)]
    finally:
        it.close()


# ---- ArrayDataset ---------------------------------------------------------------------------


def test_npy_and_safetensors_files_read_back_as_float32(tmp_path: Path) -> None:
    x = _rows(50)
    np.save(tmp_path / "a.npy", x.astype(np.float16))
    save_file({"activations": torch.from_numpy(x).bfloat16()}, tmp_path / "b.safetensors")
    for name, tol in (("a.npy", 1e-3), ("b.safetensors", 1e-2)):
        ds = ArrayDataset(tmp_path / name)
        assert (len(ds), ds.width) == (50, 4)
        got = ds.read(10, 20)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, torch.from_numpy(x[10:20]), rtol=tol, atol=tol)


def test_big_endian_and_fortran_order_npy_read_correctly(tmp_path: Path) -> None:
    x = _rows(30)
    np.save(tmp_path / "be.npy", x.astype(">f4"))
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    for name in ("be.npy", "f.npy"):
        torch.testing.assert_close(
            ArrayDataset(tmp_path / name).read(3, 29), torch.from_numpy(x[3:29])
        )


def test_folder_of_mixed_shards_reads_across_boundaries(tmp_path: Path) -> None:
    parts = [_rows(37, start=0), _rows(50, start=37), _rows(13, start=87)]
    np.save(tmp_path / "s0.npy", parts[0])
    save_file({"acts": torch.from_numpy(parts[1])}, tmp_path / "s1.safetensors")
    np.save(tmp_path / "s2.npy", parts[2])
    (tmp_path / "manifest.json").write_text("{}")  # non-shard files are ignored
    whole = torch.from_numpy(np.concatenate(parts))

    ds = ArrayDataset(tmp_path)
    assert len(ds) == 100
    torch.testing.assert_close(ds.read(0, 100), whole)
    torch.testing.assert_close(ds.read(30, 95), whole[30:95])  # spans all three shards
    torch.testing.assert_close(ds.read(37, 87), whole[37:87])  # exactly one shard
    assert ds.locate(90) == f"{tmp_path / 's2.npy'} row 3"
    assert ds.read(40, 40).shape == (0, 4)


@pytest.mark.parametrize("case", ["missing", "empty_folder", "widths", "3d", "1d", "no_rows"])
def test_unusable_data_is_refused_naming_field_and_path(tmp_path: Path, case: str) -> None:
    target = tmp_path / "data"
    if case == "missing":
        target = tmp_path / "nope.npy"
        needle = "no such file"
    elif case == "empty_folder":
        target.mkdir()
        (target / "notes.txt").write_text("hi")
        needle = "no .npy or .safetensors"
    elif case == "widths":
        target.mkdir()
        np.save(target / "a.npy", _rows(10, d=4))
        np.save(target / "b.npy", _rows(10, d=5))
        needle = "[4, 5]"
    elif case == "3d":
        target = tmp_path / "cube.npy"
        np.save(target, np.zeros((5, 4, 3), np.float32))
        needle = "(5, 4, 3)"
    elif case == "1d":
        target = tmp_path / "flat.safetensors"
        save_file({"x": torch.zeros(12)}, target)
        needle = "(12,)"
    else:
        target = tmp_path / "empty.npy"
        np.save(target, np.zeros((0, 4), np.float32))
        needle = "no rows"
    with pytest.raises(DataError) as e:
        ArrayDataset(target, "targets")
    assert str(e.value).startswith("targets: ")
    assert needle in str(e.value)


def test_object_and_pickled_npy_are_refused_without_running_code(tmp_path: Path) -> None:
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):
        ArrayDataset(obj)

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.mkdir, (str(marker),))

    evil = tmp_path / "evil.npy"
    evil.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(DataError, match="evil.npy"):
        ArrayDataset(evil)
    assert not marker.exists()


def test_safetensors_with_several_unnamed_tensors_is_refused(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(3, 2), "b": torch.zeros(3, 2)}, tmp_path / "two.safetensors")
    with pytest.raises(DataError, match="activations"):
        ArrayDataset(tmp_path / "two.safetensors")


def test_nan_anywhere_is_refused_naming_shard_and_row(tmp_path: Path) -> None:
    """Not only training batches: evaluation rows are read with ``read`` too."""
    good, bad = _rows(40), _rows(40, start=40)
    bad[7, 2] = np.nan
    np.save(tmp_path / "a.npy", good)
    np.save(tmp_path / "b.npy", bad)
    ds = ArrayDataset(tmp_path)
    before = torch.from_numpy(np.concatenate([good, bad[:7]]))
    torch.testing.assert_close(ds.read(0, 47), before)  # rows up to the NaN read fine
    with pytest.raises(DataError) as e:
        ds.read(30, 80)
    assert f"{tmp_path / 'b.npy'} row 7" in str(e.value)


# ---- ShuffledStream -------------------------------------------------------------------------

N, BATCH = 1000, 64  # 1000 is not a multiple of 64: batch 15 straddles the epoch boundary


@pytest.fixture
def data(tmp_path: Path) -> ArrayDataset:
    np.save(tmp_path / "x.npy", _rows(N))
    return ArrayDataset(tmp_path / "x.npy")


def _stream(ds: ArrayDataset, seed: int = 0, n_rows: int = N, targets=None) -> ShuffledStream:
    return ShuffledStream(ds, targets, n_rows, BATCH, seed, block_rows=50, buffer_rows=200)


def test_one_epoch_yields_every_row_once_in_a_shuffled_order(data: ArrayDataset) -> None:
    batches = _take(_stream(data), 16)
    assert all(b.x.shape == (BATCH, 4) for b in batches)
    stream = torch.cat([b.x for b in batches])
    epoch = stream[:N]
    order = epoch[:, 0].long()
    assert sorted(order.tolist()) == list(range(N))
    torch.testing.assert_close(epoch[order.argsort()], data.read(0, N))  # rows intact
    assert (order != torch.arange(N)).float().mean() > 0.9  # not the file order
    # rows are mixed across blocks, not just whole blocks reordered
    assert (order[:50] // 50).unique().numel() > 1
    # the second epoch starts again with every row, in a new order
    assert not torch.equal(stream[N : N + 24, 0], epoch[:24, 0])


def test_same_seed_same_batches_different_seed_different(data: ArrayDataset) -> None:
    a, b, c = (_take(_stream(data, seed=s), 5) for s in (7, 7, 8))
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.x, y.x)
    assert not torch.equal(torch.cat([x.x for x in a]), torch.cat([x.x for x in c]))


@pytest.mark.parametrize("start", [3, 15, 16, 31])  # 15 straddles epochs 0/1, 31 epochs 1/2
def test_iterate_from_batch_n_continues_exactly(data: ArrayDataset, start: int) -> None:
    fresh = _take(_stream(data), start + 20)
    resumed = _take(_stream(data), 20, start_batch=start)
    for i, (want, got) in enumerate(zip(fresh[start:], resumed, strict=True)):
        torch.testing.assert_close(got.x, want.x, msg=f"batch {start + i}")


def test_held_out_tail_rows_are_never_streamed(data: ArrayDataset) -> None:
    seen = torch.cat([b.x[:, 0] for b in _take(_stream(data, n_rows=900), 45)])  # > 3 epochs
    assert seen.max() < 900
    assert seen.unique().numel() == 900


def test_targets_stay_paired_with_inputs(tmp_path: Path, data: ArrayDataset) -> None:
    y = _rows(N, d=3, start=0) * 2
    y[:, 1] = np.arange(N) * -1.0
    np.save(tmp_path / "y.npy", y)
    targets = ArrayDataset(tmp_path / "y.npy", "targets")
    for b in _take(_stream(data, targets=targets), 20):
        assert b.target is not None and b.target.shape == (BATCH, 3)
        idx = b.x[:, 0].long()
        torch.testing.assert_close(b.target, torch.from_numpy(y)[idx])


def test_nan_in_a_block_raises_data_error_naming_the_row(tmp_path: Path) -> None:
    x = _rows(N)
    x[613, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    it = _stream(ArrayDataset(tmp_path / "x.npy")).iterate()
    try:
        with pytest.raises(DataError, match=r"activations: .*x\.npy row 613"):
            for _ in range(40):
                next(it)
    finally:
        it.close()


# Peak RSS of this process image. ``getrusage(...).ru_maxrss`` would be the obvious
# reading, but on Linux it carries over the forking parent's peak across exec, so a child
# of a big pytest process starts with a high "peak" that hides growth; VmHWM belongs to
# the new address space only.
MEMORY_SCRIPT = textwrap.dedent(
    """
    import re, sys
    import torch
    torch.set_num_threads(1)
    from saestudio.activations.buffer import ShuffledStream
    from saestudio.activations.store import ArrayDataset

    def peak_rss_mb():
        status = open("/proc/self/status").read()
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024

    ds = ArrayDataset(sys.argv[1])
    base = peak_rss_mb()
    it = ShuffledStream(ds, None, len(ds), 1024, 0, 1024, 16384).iterate()
    seen = 0
    for _ in range(300):
        seen += len(next(it).x)
    it.close()
    print(seen, peak_rss_mb() - base)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_streaming_a_200mb_file_keeps_memory_bounded(tmp_path: Path) -> None:
    rows, d = 400_000, 128
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, d))
    rng = np.random.default_rng(0)
    for s in range(0, rows, 50_000):
        big[s : s + 50_000] = rng.standard_normal((50_000, d), dtype=np.float32)
    big.flush()
    del big
    size_mb = path.stat().st_size / 2**20
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen, grown_mb = proc.stdout.split()
    assert int(seen) == 300 * 1024  # 3/4 of the file went through
    assert float(grown_mb) < 120, (
        f"peak RSS grew {float(grown_mb):.0f} MB for a {size_mb:.0f} MB file"
    )
