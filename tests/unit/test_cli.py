"""The ``saestudio`` command line (SPEC §2.C): what a user typing commands sees.

Bad input ends with one clear line naming the field and a non-zero exit, never a
traceback; a good run leaves a SAELens folder, checkpoints and a metrics file that
``info`` and ``export`` read back.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from saestudio.activations.buffer import ShuffledStream
from saestudio.activations.store import ArrayDataset
from saestudio.activations.synthetic import make_ground_truth
from saestudio.cli import main
from saestudio.sae.config import SAEConfig
from saestudio.training import checkpoint as ckpt
from saestudio.training.config import TrainConfig
from saestudio.training.export import load_any

ROWS, D = 2000, 16
TOPK = ["--architecture", "topk", "--d-sae", "32", "--k", "4", "--batch-size", "64", "--quiet"]
METRIC_KEYS = {
    "step",
    "loss",
    "mse",
    "l0",
    "fvu",
    "explained_variance",
    "dead_fraction",
    "lr",
    "grad_norm",
    "tokens_per_s",
}


def _data(seed: int = 1) -> np.ndarray:
    return make_ground_truth(ROWS, d=D, n_features=48, active=3, seed=seed).x


def _cli(*argv: str | Path | int) -> tuple[int, str, str]:
    """``main()`` in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse errors and --help
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def acts(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, _data())
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real 30-step topk run: (run folder, stdout)."""
    root = tmp_path_factory.mktemp("cli_run")
    np.save(root / "x.npy", _data())
    run = root / "run"
    rc, out, err = _cli(
        "train", "--activations", root / "x.npy", *TOPK, "--steps", "30", "--out", run
    )
    assert (rc, err) == (0, ""), err
    return run, out


# ---- a good run -----------------------------------------------------------------------------


def test_train_writes_saelens_folder_checkpoints_and_metrics(trained: tuple[Path, str]) -> None:
    run, out = trained
    cfg = json.loads((run / "cfg.json").read_text())
    assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["k"]) == ("topk", D, 32, 4)
    weights = load_file(run / "sae_weights.safetensors")
    assert weights["W_dec"].shape == (32, D)
    assert list(run.glob("checkpoints/step_*/state.json")), "no checkpoint written"

    lines = _metrics(run)
    train_lines = [m for m in lines if "loss" in m]
    for m in train_lines:
        assert m.keys() >= METRIC_KEYS, METRIC_KEYS - m.keys()
    assert train_lines[-1]["step"] == 30
    assert train_lines[-1]["l0"] == pytest.approx(4.0)

    # stdout reports the held-out FVU and L0 the checkpoint recorded, and where the SAE is
    final = ckpt.load_checkpoint(run).state["eval"]
    fvu = float(re.search(r"FVU ([0-9.]+)", out).group(1))
    l0 = float(re.search(r"L0 ([0-9.]+)", out).group(1))
    assert fvu == pytest.approx(final["eval_fvu"], abs=1e-4)
    assert l0 == pytest.approx(final["eval_l0"], abs=0.05)
    assert 0 < fvu < 1
    assert str(run) in out


def test_yaml_config_is_read_and_flags_override_it(acts: Path, tmp_path: Path) -> None:
    conf = tmp_path / "run.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "sae": {"architecture": "topk", "d_sae": 32, "k": 4},
                "steps": 50,
                "batch_size": 64,
                "log_every": 5,
                "out": str(tmp_path / "from_yaml"),
            }
        )
    )
    run = tmp_path / "from_flags"
    rc, _, err = _cli(
        "train", "--config", conf, "--activations", acts, "--steps", "20", "--k", "2",
        "--out", run, "--quiet",
    )  # fmt: skip
    assert rc == 0, err
    steps = [m["step"] for m in _metrics(run) if "loss" in m]
    assert steps == [5, 10, 15, 20]  # log_every from YAML, --steps from the flag
    cfg = json.loads((run / "cfg.json").read_text())
    assert (cfg["d_sae"], cfg["k"]) == (32, 2)  # the flag overrides one nested field only
    assert not (tmp_path / "from_yaml").exists()


def test_info_prints_json_naming_the_architecture(trained: tuple[Path, str]) -> None:
    run, _ = trained
    rc, out, err = _cli("info", run)
    assert rc == 0, err
    info = json.loads(out)
    assert info["sae"]["architecture"] == "topk"
    assert info["sae"]["d_sae"] == 32
    assert info["checkpoint"]["step"] == 30
    assert info["last_metrics"]["step"] == 30

    step_dir = next(run.glob("checkpoints/step_*"))
    rc, out, _ = _cli("info", step_dir)
    assert rc == 0
    assert json.loads(out)["resolved"]["sae"]["architecture"] == "topk"


def test_export_of_final_checkpoint_equals_the_trained_export(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    run, _ = trained
    rc, out, err = _cli("export", run / "checkpoints" / "step_00000030", "--out", tmp_path / "exp")
    assert rc == 0, err
    assert "SAELens" in out
    ours = load_file(run / "sae_weights.safetensors")
    theirs = load_file(tmp_path / "exp" / "sae_weights.safetensors")
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(theirs[name], ours[name], msg=name)
    torch.testing.assert_close(
        load_file(tmp_path / "exp" / "sparsity.safetensors")["sparsity"],
        load_file(run / "sparsity.safetensors")["sparsity"],
    )
    a = json.loads((run / "cfg.json").read_text())
    b = json.loads((tmp_path / "exp" / "cfg.json").read_text())
    assert {k: a[k] for k in ("architecture", "d_in", "d_sae", "k")} == {
        k: b[k] for k in ("architecture", "d_in", "d_sae", "k")
    }


def test_train_help_has_a_flag_for_every_config_field() -> None:
    rc, out, _ = _cli("train", "--help")
    assert rc == 0
    names = [n for n in TrainConfig.model_fields if n != "sae"] + list(SAEConfig.model_fields)
    flags = set(re.findall(r"(?<![\w-])--[a-z0-9-]+", out))
    missing = [n for n in names if "--" + n.replace("_", "-") not in flags]
    assert not missing, f"no flag for {missing}"
    assert "--no-skip" in flags  # booleans can be switched off too


def test_signal_handlers_are_restored_after_an_in_process_run(acts: Path, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    rc, _, err = _cli(
        "train", "--activations", acts, *TOPK, "--steps", "2", "--out", tmp_path / "r"
    )
    assert rc == 0, err
    assert signal.getsignal(signal.SIGINT) is before


# ---- bad input: one line naming the field, non-zero exit, no traceback ---------------------


def _write_bad(tmp_path: Path, case: str) -> list[str | Path]:
    """Arguments (after ``train``) for one kind of bad input."""
    x = tmp_path / "x.npy"
    np.save(x, _data())
    base: list[str | Path] = ["--activations", x, "--out", tmp_path / "run", "--quiet"]
    if case == "3d":
        np.save(tmp_path / "cube.npy", np.zeros((8, 4, 4), np.float32))
        return ["--activations", tmp_path / "cube.npy", "--out", tmp_path / "run"]
    if case == "missing":
        return ["--activations", tmp_path / "nope.npy", "--out", tmp_path / "run"]
    if case == "nan":
        data = _data()
        data[1234, 3] = np.nan
        np.save(tmp_path / "nan.npy", data)
        return [
            "--activations",
            tmp_path / "nan.npy",
            *TOPK,
            "--steps",
            "5",
            "--out",
            tmp_path / "r",
        ]
    if case == "nan_in_eval_rows":  # the held-out tail is never a training batch
        data = _data()
        data[ROWS - 7, 0] = np.inf
        np.save(tmp_path / "nan.npy", data)
        return [
            "--activations",
            tmp_path / "nan.npy",
            *TOPK,
            "--steps",
            "5",
            "--out",
            tmp_path / "r",
        ]
    if case == "k_gt_d_sae":
        return [*base, "--d-sae", "32", "--k", "64"]
    if case == "negative_lr":
        return [*base, "--lr", "-0.001"]
    if case == "grad_accum":
        return [*base, "--batch-size", "64", "--grad-accum-steps", "5"]
    if case == "transcoder_no_targets":
        return [*base, "--architecture", "transcoder"]
    if case == "targets_rows":
        np.save(tmp_path / "y.npy", _data()[:1500])
        return [*base, "--architecture", "transcoder", "--targets", tmp_path / "y.npy"]
    if case == "yaml_unknown_key":
        (tmp_path / "c.yaml").write_text("steps: 5\nbogus_key: 3\n")
        return [*base, "--config", tmp_path / "c.yaml"]
    if case == "yaml_bad_architecture":
        (tmp_path / "c.yaml").write_text("sae:\n  architecture: resnet\n")
        return [*base, "--config", tmp_path / "c.yaml"]
    raise AssertionError(case)


BAD = [
    ("3d", ["activations", "shape", "(8, 4, 4)", "cube.npy"]),
    ("missing", ["activations", "nope.npy"]),
    ("nan", ["activations", "nan.npy", "row 1234", "NaN"]),
    ("nan_in_eval_rows", ["activations", "nan.npy", f"row {ROWS - 7}"]),
    ("k_gt_d_sae", ["k", "d_sae", "32", "64"]),
    ("negative_lr", ["--lr", "greater than 0"]),
    ("grad_accum", ["grad_accum_steps", "batch_size", "64"]),
    ("transcoder_no_targets", ["targets"]),
    ("targets_rows", ["targets", "1500", "2000"]),
    ("yaml_unknown_key", ["bogus_key", "unknown"]),
    ("yaml_bad_architecture", ["architecture", "topk"]),
]


@pytest.mark.parametrize(("case", "needles"), BAD, ids=[c for c, _ in BAD])
def test_bad_input_is_one_clear_line(tmp_path: Path, case: str, needles: list[str]) -> None:
    rc, out, err = _cli("train", *_write_bad(tmp_path, case))
    assert rc != 0
    assert err.startswith("saestudio: error: ")
    assert err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert "done:" not in out


def test_unknown_architecture_flag_is_an_argparse_error(acts: Path) -> None:
    rc, _, err = _cli("train", "--activations", acts, "--architecture", "resnet")
    assert rc == 2
    assert "--architecture" in err and "invalid choice" in err and "topk" in err


SCRIPT = Path(sys.executable).with_name("saestudio")


@pytest.mark.parametrize(
    ("launcher", "case", "needle"),
    [
        ([str(SCRIPT)], "missing", "nope.npy"),
        ([sys.executable, "-m", "saestudio.cli"], "nan", "row 1234"),
    ],
    ids=["console_script_missing_file", "module_nan_rows"],
)
def test_real_process_exits_nonzero_with_one_line(
    tmp_path: Path, launcher: list[str], case: str, needle: str
) -> None:
    args = [str(a) for a in _write_bad(tmp_path, case)]
    proc = subprocess.run([*launcher, "train", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("saestudio: error: activations: ")
    assert needle in proc.stderr
    assert proc.stdout == ""


# ---- a run whose loss becomes non-finite -------------------------------------------------------


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    """One finite but huge row (‖x‖² overflows float32) lands in training batch 13; with a
    checkpoint every 5 steps the run must stop with exit 1 and point at step 10."""
    data = _data()
    path = tmp_path / "x.npy"
    np.save(path, data)
    block, buffer, n_eval, bad_batch = 256, 1024, 200, 12  # 0-based batch → step 13
    stream = ShuffledStream(ArrayDataset(path), None, ROWS - n_eval, 64, 0, block, buffer)
    it = stream.iterate()
    batches = [next(it) for _ in range(bad_batch + 1)]
    it.close()
    row = int(np.flatnonzero((data == batches[bad_batch].x[0].numpy()).all(1))[0])
    data[row] = 1e25
    np.save(path, data)

    run = tmp_path / "run"
    rc, out, err = _cli(
        "train", "--activations", path, *TOPK, "--steps", "30", "--checkpoint-every", "5",
        "--log-every", "1", "--eval-tokens", n_eval, "--shuffle-block-rows", block,
        "--shuffle-buffer-rows", buffer, "--out", run,
    )  # fmt: skip
    assert rc == 1
    assert err.count("\n") == 1, err
    assert "NaN" in err and "step 13" in err
    good = run / "checkpoints" / "step_00000010"
    assert str(good) in err
    assert not (run / "sae_weights.safetensors").exists()  # no "final" SAE from a broken run

    c = ckpt.load_checkpoint(good)
    assert c.state["step"] == 10
    sae = load_any(good)
    assert all(torch.isfinite(p).all() for p in sae.state_dict().values())
    rc, _, err = _cli("export", good, "--out", tmp_path / "exp")
    assert rc == 0, err
    assert all(
        torch.isfinite(t).all()
        for t in load_file(tmp_path / "exp" / "sae_weights.safetensors").values()
    )


def test_export_or_info_of_a_folder_without_checkpoint_names_it(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    rc, _, err = _cli("export", tmp_path / "empty", "--out", tmp_path / "exp")
    assert rc == 2
    assert err.startswith("saestudio: error: checkpoint: ") and "empty" in err
    assert not (tmp_path / "exp").exists()
    rc, _, err = _cli("info", tmp_path / "empty")
    assert rc == 2
    assert err.count("\n") == 1 and "empty" in err
