"""Data-parallel training under real ``torchrun`` (2 CPU processes, gloo) equals a single
process with the same global batch and seed (issue 7, "Done means" 1): final weights and
the logged metrics, for TopK (with dead latents, so AuxK and the dead counters are
reduced across ranks), JumpReLU (unit-mean-squared-norm scaling) and BatchTopK (top k·batch
over all ranks' rows, threshold EMA); on an activation
dataset and on the fly; on one node and as two nodes; and a pause under DDP + resume
equals the uninterrupted run — resumed under DDP or in one process. Also: Ctrl-C stops
all ranks at one checkpoint, the studio's runner launches ``num_devices`` as a torchrun
job (refusing more devices than the machine has), and a killed worker leaves no rank
behind.

The README's commands are what run here: ``torchrun --nproc_per_node 2 -m saestudio.cli
train ...``, ``torchrun --nnodes 2 --node_rank i ...`` and ``saestudio train
--num-devices 2 ...`` (also with ``--resume``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saestudio.activations.synthetic import make_ground_truth
from saestudio.cli import main
from saestudio.training import TrainConfig, train

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
IGNORED = {"tokens_per_s", "time"}  # wall-clock fields
ARCHS: dict[str, dict[str, Any]] = {
    # wide and with a short dead window: latents die, AuxK is active from step ~10
    "topk": {"sae": {"architecture": "topk", "k": 4, "d_sae": 256}, "dead_after_tokens": 640},
    "jumprelu": {"sae": {"architecture": "jumprelu", "d_sae": 64}, "lr": 2e-3},
    # top k·batch over all ranks' rows, threshold EMA from the global smallest kept value
    "batchtopk": {
        "sae": {"architecture": "batchtopk", "k": 4, "d_sae": 256},
        "dead_after_tokens": 640,
    },
}


@pytest.fixture(scope="module")
def acts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gt = make_ground_truth(4000, d=16, n_features=48, active=3, seed=1)
    path = tmp_path_factory.mktemp("ddp") / "acts.npy"
    np.save(path, gt.x)
    return path


def _config(acts: Path, arch: str, out: Path, **extra: Any) -> dict[str, Any]:
    return {
        "activations": str(acts),
        "steps": 120,
        "batch_size": 64,
        "log_every": 10,
        "eval_every": 40,
        "density_every": 40,
        "checkpoint_every": 40,
        "shuffle_buffer_rows": 512,
        "shuffle_block_rows": 128,
        "device": "cpu",
        "out": str(out),
        **ARCHS[arch],
        **extra,
    }


def _flags(cfg: dict[str, Any]) -> list[str]:
    """The config as `saestudio train` flags."""
    flags = []
    for key, value in cfg.items():
        items = value.items() if key == "sae" else [(key, value)]
        for k, v in items:
            flag = f"--{k.replace('_', '-')}"
            flags += (
                ([flag] if v else [f"--no-{flag[2:]}"]) if isinstance(v, bool) else [flag, str(v)]
            )
    return flags


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _lines(out: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in IGNORED} for line in lines]


def assert_same_run(a: Path, b: Path) -> None:
    """Same SAE (assert_close on every exported tensor) and the same metrics lines."""
    wa = load_file(a / "sae_weights.safetensors")
    wb = load_file(b / "sae_weights.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], msg=f"{name} differs")
    la, lb = _lines(a), _lines(b)
    assert [(x["step"], sorted(x)) for x in la] == [(x["step"], sorted(x)) for x in lb]
    for x, y in zip(la, lb, strict=True):
        for key, value in x.items():
            if isinstance(value, float):
                assert y[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (x["step"], key)
            else:
                assert y[key] == value, (x["step"], key)


def _two_nodes(flags: list[str], cwd: Path) -> list[str]:
    """``torchrun --nnodes 2 --node_rank i --nproc_per_node 1`` twice, as on two machines."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank"]
            + [str(i), "--nproc_per_node", "1", "--master_addr", "127.0.0.1"]
            + ["--master_port", str(port), "-m", "saestudio.cli", "train", "--quiet", *flags],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in (0, 1)
    ]
    outs = [p.communicate(timeout=120)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    return outs


@pytest.mark.parametrize(
    ("arch", "launch"),
    [("topk", "torchrun --nproc_per_node 2"), ("jumprelu", "torchrun --nnodes 2 (x2)")],
)
def test_torchrun_two_processes_equal_one(
    acts: Path, tmp_path: Path, arch: str, launch: str
) -> None:
    """Two processes, on one node or as two nodes (each launched apart, RANK != LOCAL_RANK,
    sharing the output folder), train the SAE of one process."""
    single = _config(acts, arch, tmp_path / "single")
    result = train(TrainConfig.model_validate(single))
    assert result.status == "completed"
    if arch == "topk":  # the AuxK path really ran: latents died and were revived
        assert any(line.get("auxk", 0) > 0 for line in _lines(tmp_path / "single"))

    flags = _flags(_config(acts, arch, tmp_path / "ddp"))
    if "nnodes" in launch:
        outs = _two_nodes(flags, tmp_path)
        assert "done: step 120" in outs[0] and "done:" not in outs[1]  # global rank 0 reports
    else:
        out = _run([*TORCHRUN, "-m", "saestudio.cli", "train", "--quiet", *flags], tmp_path)
        assert out.count("done: step 120") == 1  # rank 0 alone reports
    assert_same_run(tmp_path / "single", tmp_path / "ddp")
    # rank 0 alone wrote checkpoints (best + last 2) and one metrics file
    assert sorted(d.name for d in (tmp_path / "ddp" / "checkpoints").glob("step_*")) == sorted(
        d.name for d in (tmp_path / "single" / "checkpoints").glob("step_*")
    )


def test_pause_under_ddp_and_resume_equals_uninterrupted(acts: Path, tmp_path: Path) -> None:
    """BatchTopK, paused at step 50 under torchrun and resumed under torchrun
    (`--num-devices 2`): the same SAE (its inference threshold included) and metrics as
    one uninterrupted single-process run. The paused run's checkpoint also resumes in one
    process to the same result (world size is free)."""
    arch = "batchtopk"  # with gradient accumulation: each micro-batch is split across ranks
    straight = _config(acts, arch, tmp_path / "straight", grad_accum_steps=2)
    train(TrainConfig.model_validate(straight))

    cfg = _config(acts, arch, tmp_path / "ddp", grad_accum_steps=2)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = _run([*TORCHRUN, str(HERE / "ddp_stop.py"), str(tmp_path / "cfg.json"), "50"], tmp_path)
    assert out.count("paused 50") == 2  # both ranks paused at the same step
    assert not (tmp_path / "ddp" / "sae_weights.safetensors").exists()
    shutil.copytree(tmp_path / "ddp", tmp_path / "one")

    _run(
        [sys.executable, "-m", "saestudio.cli", "train", "--resume", str(tmp_path / "ddp")]
        + ["--num-devices", "2", "--quiet"],
        tmp_path,
    )
    assert_same_run(tmp_path / "straight", tmp_path / "ddp")

    one = str(tmp_path / "one")  # a copy: its job.json still names the ddp folder
    assert main(["train", "--resume", one, "--out", one, "--num-devices", "1", "--quiet"]) == 0
    assert_same_run(tmp_path / "straight", tmp_path / "one")


def _tiny_gpt2(path: Path) -> str:
    """A random 3-layer GPT-2 with the unit tests' character tokenizer."""
    import transformers as tf

    spec = importlib.util.spec_from_file_location("unit_conftest", HERE.parent / "unit/conftest.py")
    assert spec is not None and spec.loader is not None
    unit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unit)
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(unit.CONFIGS["gpt2"]()).save_pretrained(path)
    unit.save_tiny_tokenizer(path)
    return str(path)


def test_on_the_fly_torchrun_equals_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the fly, each rank runs the model on half of every window, the ranks exchange
    the activations and train on their halves of each batch: the same SAE as one process
    (JumpReLU in L0 target mode: its multiplier must see the global L0)."""
    cfg = {
        "model": _tiny_gpt2(tmp_path / "gpt2"),
        "dataset": "demo:pydoc",
        "hook": "resid_post.1",
        "context_length": 32,
        "model_batch_size": 8,
        "exclude_special_tokens": True,  # rows per window differ from tokens per window
        "shuffle_buffer_rows": 1024,
        "shuffle_block_rows": 256,
        "sae": {"architecture": "jumprelu", "d_sae": 64},
        "lr": 2e-3,
        "l0_target": 24,  # its multiplier follows the L0 of all ranks' rows
        "steps": 30,
        "batch_size": 64,
        "downstream_contexts": 0,
        "device": "cpu",
    }
    train(TrainConfig.model_validate({**cfg, "out": str(tmp_path / "single")}))
    flags = _flags({**cfg, "out": str(tmp_path / "ddp"), "num_devices": 2})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _run([sys.executable, "-m", "saestudio.cli", "train", "--quiet", *flags], tmp_path)
    assert_same_run(tmp_path / "single", tmp_path / "ddp")


def test_refusals_name_the_field(acts: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """More processes than this machine has cores: refused before anything starts."""
    too_many = (os.cpu_count() or 1) + 1
    cfg = _config(acts, "topk", tmp_path / "x", num_devices=too_many)
    assert main(["train", *_flags(cfg)]) == 2
    err = capsys.readouterr().err
    assert "num_devices" in err and f"asks for {too_many} devices" in err
    assert not (tmp_path / "x").exists()


# ---- the studio: a training with num_devices runs as a torchrun job on the worker -----------


def _job(acts: Path, out: Path, **extra: Any) -> TrainConfig:
    return TrainConfig.model_validate(
        _config(acts, "topk", out, steps=60, checkpoint_every=20, **extra)
    )


def test_worker_runs_num_devices_as_torchrun_job(acts: Path, tmp_path: Path) -> None:
    """The runner launches torchrun with 2 processes; rank 0 reports through the worker's
    store callback: metrics rows, checkpoints, a pause at the user's request, and the
    resume to completion — the same SAE and rows as a single-process run."""
    from jobs_doubles import MemoryStore

    from saestudio.jobs.contracts import JobTiming
    from saestudio.jobs.events import MemoryEventSink
    from saestudio.jobs.runner import resume_step, run_training

    ref = tmp_path / "ref"
    train(_job(acts, ref))
    fast = JobTiming(poll_s=0, flush_s=0.5, heartbeat_s=0.2)
    store = MemoryStore(lambda s, job_id: "pause" if s.polls[job_id] >= 30 else None)
    run = tmp_path / "run"
    cfg = _job(acts, run, num_devices=2)
    assert run_training(1, cfg, run, store, MemoryEventSink(), timing=fast) == "paused"
    paused = store.statuses[-1][2]["step"]
    assert 20 <= paused < 60 and resume_step(cfg) == paused
    assert ("sae", paused) in store.checkpoints[1]

    assert run_training(1, cfg, run, store, MemoryEventSink(), timing=fast) == "completed"
    final = store.statuses[-1][2]
    assert final["step"] == 60 and final["exports"] == {"sae": str(run)}
    assert set(store.checkpoints[1]) >= {("sae", 20), ("sae", paused), ("sae", 60)}
    assert_same_run(ref, run)
    rows = store.rows[1]
    want = {(x["sae"], x["step"]) for x in _lines(ref)}
    assert set(rows) == want  # every line once per (sae, step), none lost across the pause
    last = [x for x in _lines(ref) if "loss" in x][-1]
    assert last["step"] == 60 and rows[("sae", 60)]["loss"] == pytest.approx(last["loss"], rel=1e-4)


def test_worker_refuses_more_devices_than_it_has(acts: Path, tmp_path: Path) -> None:
    from jobs_doubles import MemoryStore

    from saestudio.jobs.events import MemoryEventSink
    from saestudio.jobs.runner import run_training

    store, run = MemoryStore(), tmp_path / "run"
    cfg = _job(acts, run, num_devices=(os.cpu_count() or 1) + 1)
    assert run_training(1, cfg, run, store, MemoryEventSink()) == "failed"
    error = store.statuses[-1][2]["error"]
    assert "num_devices" in error and "CPU cores" in error
    assert not (run / "checkpoints").exists()


def _with_mark(mark: str) -> list[int]:
    """Pids of live processes whose environment carries ``mark``."""
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark.encode() in env.read_bytes():
                found.append(int(env.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_worker_takes_its_torchrun_job_along(acts: Path, tmp_path: Path) -> None:
    """kill -9 of the worker's job process ends torchrun and its ranks too: nothing keeps
    writing into a run folder that another worker is about to resume."""
    import time
    import uuid

    mark = f"DDP_TEST_MARK={uuid.uuid4().hex}"
    cfg = _config(acts, "topk", tmp_path / "run", steps=100_000, checkpoint_every=20)
    cfg["num_devices"] = 2
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    code = (
        "import json, sys; from saestudio.training import TrainConfig; "
        "from saestudio.jobs.torchrun_job import run_torchrun; "
        "run_torchrun(TrainConfig.model_validate(json.load(open(sys.argv[1]))), [])"
    )
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    job = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cfg.json")], env=env)
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "run" / "checkpoints").glob("step_*/state.json")):
            assert job.poll() is None and time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.2)
        assert len(_with_mark(mark)) >= 4  # the job, torchrun's agent and two ranks
    finally:
        job.kill()
        job.wait()
    deadline = time.monotonic() + 10
    while _with_mark(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _with_mark(mark) == []


def test_ctrl_c_stops_every_rank_at_one_checkpoint(acts: Path, tmp_path: Path) -> None:
    """`saestudio train --num-devices 2` and one Ctrl-C: both ranks stop at the same step,
    rank 0 checkpoints it and says how to continue, and the command exits 0."""
    import time

    cfg = _config(acts, "topk", tmp_path / "run", steps=100_000, checkpoint_every=50)
    cmd = [sys.executable, "-m", "saestudio.cli", "train", "--quiet", "--num-devices", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*cmd, *_flags(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "run" / "checkpoints").glob("step_*/state.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert out.count("stopped at step") == 1, out[-3000:]
    step = int(out.split("stopped at step ")[1].split(";")[0])
    assert 50 <= step < 100_000
    assert (tmp_path / "run" / "checkpoints" / f"step_{step:08d}" / "state.json").is_file()
    assert f"continue with: saestudio train --resume {tmp_path / 'run'}" in out
