"""Feature inspection against brute force on a small real MiniLM activation dataset.

Every row of a ``demo:pydoc`` dataset (special tokens excluded, so contexts have holes
and start at position 1) is encoded one at a time; the streaming pass must agree on
every latent's count, density, mean and max, its top rows, and the contexts it shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saestudio.activations.extract import ExtractConfig, extract
from saestudio.activations.manifest import open_hook, open_tokens
from saestudio.activations.text_data import load_tokenizer
from saestudio.features import (
    InspectionStopped,
    inspect_sae,
    inspect_saes,
    load_latents,
    load_summary,
    run_saes,
    unembedding,
)
from saestudio.sae import SAEConfig, SparseAutoencoder, build_sae, save_saelens
from tests.unit.conftest import minilm_dir

WINDOW = 4


@pytest.fixture(scope="module")
def acts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("features") / "acts"
    extract(
        ExtractConfig(
            model=minilm_dir(), dataset="demo:pydoc", hooks=["resid_post.0", "resid_post.1"],
            out=str(out), context_length=32, max_tokens=32 * 24, batch_size=8,
            shard_tokens=32 * 8, device="cpu", exclude_special_tokens=True,
        ),
        progress=False,
    )  # fmt: skip
    for hook in ("resid_post.0", "resid_post.1"):
        _DATA[hook] = open_hook(out, hook).read(0, 512)
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(minilm_dir())


_DATA: dict[str, torch.Tensor] = {}


def make_sae(arch: str, seed: int = 0, hook: str = "resid_post.1", **kw) -> SparseAutoencoder:
    """A random SAE made sparse on the rows of ``hook``: each latent's bias puts it above
    zero on about 8 % of the rows (thresholded architectures get small thresholds)."""
    torch.manual_seed(seed)
    cfg = SAEConfig(architecture=arch, d_in=384, d_sae=192, k=6, **kw).resolved(
        384, kw.get("d_out")
    )
    sae = build_sae(cfg).eval()
    x = _DATA.get(hook)
    if x is not None:  # encoders see x − E[x] (the trainer's default start)
        sae.get_buffer("input_centre").copy_(x.mean(0))
    if cfg.activation_fn in ("relu", "jumprelu", "batchtopk"):
        assert x is not None
        with torch.no_grad():
            pre = sae.pre_activations(x)
            sae.b_enc.sub_(pre.quantile(0.92, dim=0))
            if cfg.activation_fn == "jumprelu":
                sae.get_parameter("threshold").uniform_(0.0, 0.05)
            if cfg.activation_fn == "batchtopk":
                sae.get_buffer("threshold_ema").fill_(0.02)
    return sae


def brute_force(sae: SparseAutoencoder, acts: Path, hook: str) -> torch.Tensor:
    """z of every row, each row encoded on its own."""
    ds = open_hook(acts, hook)
    x = ds.read(0, len(ds))
    with torch.no_grad():
        return torch.cat([sae.encode(x[i : i + 1]) for i in range(len(x))])


def check_stats(recs: list[dict], z: torch.Tensor, rows_read: int) -> None:
    assert [r["latent"] for r in recs] == list(range(z.shape[1]))
    fired = z > 0
    count = fired.sum(0)
    assert int((count > 0).sum()) > z.shape[1] // 3  # many latents fire: the check bites
    for r in recs:
        i = r["latent"]
        col = z[:, i]
        assert r["count"] == int(count[i])
        assert r["density"] == pytest.approx(int(count[i]) / rows_read, rel=1e-5)
        assert r["max_activation"] == pytest.approx(
            float(col.max().clamp_min(0)), rel=1e-4, abs=1e-5
        )
        if count[i]:
            assert r["mean_activation"] == pytest.approx(float(col[col > 0].mean()), rel=1e-4)
            assert sum(r["histogram"]["counts"]) == int(count[i])
            assert r["top"][0]["row"] == int(col.argmax())
            want = col.topk(min(len(r["top"]), int(count[i]))).values.tolist()
            got = [e["activation"] for e in r["top"]]
            assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
            assert len(r["top"]) == min(20, int(count[i]))
        else:
            assert r["top"] == [] and r["quantiles"] == [] and r["histogram"]["counts"] == []


@pytest.mark.parametrize(
    ("arch", "extra", "hook"),
    [
        ("topk", {}, "resid_post.1"),
        ("standard", {}, "resid_post.1"),
        ("jumprelu", {}, "resid_post.1"),
        ("batchtopk", {}, "resid_post.0"),
        ("transcoder", {"activation": "topk", "d_out": 96}, "resid_post.0"),
        ("skip", {"activation": "relu"}, "resid_post.1"),
    ],
)
def test_statistics_and_top_rows_match_brute_force(arch, extra, hook, acts, tmp_path):
    sae = make_sae(arch, hook=hook, **extra)
    folder = save_saelens(sae, tmp_path / "sae", hook_name=hook)
    s = inspect_sae(folder, acts, tmp_path / "insp", window=WINDOW, batch_size=100)
    z = brute_force(sae, acts, hook)
    assert s.rows == (0, len(z)) and s.rows_read == len(z) and s.hook == hook
    recs = list(load_latents(tmp_path / "insp"))
    check_stats(recs, z, len(z))
    assert s.dead == int(((z > 0).sum(0) == 0).sum())
    assert load_summary(tmp_path / "insp") == s
    check_contexts(recs, z, acts)


def check_contexts(recs: list[dict], z: torch.Tensor, acts: Path, tokenizer=None) -> set[str]:
    """Every example's context is the stored rows of its packed context within ±WINDOW
    positions, and shows the latent's brute-force activation on each."""
    tokens, positions = open_tokens(acts)
    seen = set()
    for r in recs:
        examples = r["top"] + [e for b in r["quantiles"] for e in b["examples"]]
        for e in examples:
            row = e["row"]
            ctx, pos = positions[row]
            want = [
                q for q in range(max(0, row - WINDOW), min(len(tokens), row + WINDOW + 1))
                if positions[q, 0] == ctx and abs(int(positions[q, 1]) - int(pos)) <= WINDOW
            ]  # fmt: skip
            start = want[0]
            assert e["position"] == row - start
            assert e["context_ids"] == tokens[want].tolist()
            assert e["token_id"] == int(tokens[row])
            got = e["context_activations"]
            assert got == pytest.approx(z[want, r["latent"]].tolist(), rel=1e-4, abs=1e-5)
            assert e["activation"] == pytest.approx(float(z[row, r["latent"]]), rel=1e-4, abs=1e-5)
            if tokenizer is not None:
                assert e["token"] == tokenizer.decode([int(tokens[row])])
                assert e["context"] == [tokenizer.decode([int(t)]) for t in tokens[want]]
            if len(want) < 2 * WINDOW + 1:
                first = positions[want[0]]
                if first[1] == positions[positions[:, 0] == ctx, 1].min():
                    seen.add("cut at start")
                if want[-1] == len(tokens) - 1 or positions[want[-1] + 1, 0] != ctx:
                    seen.add("cut at end")
            if np.any(np.diff(positions[want, 1]) > 1):
                seen.add("excluded special token inside")
    return seen


def test_tokens_and_contexts_decode_the_stored_ids(acts, tokenizer, tmp_path):
    sae = make_sae("topk", seed=3)
    s = inspect_sae(sae, acts, tmp_path, hook="resid_post.1", window=WINDOW, tokenizer=tokenizer)
    assert s.sae == "<module>" and not s.logit_lens
    recs = list(load_latents(tmp_path))
    seen = check_contexts(recs, brute_force(sae, acts, "resid_post.1"), acts, tokenizer)
    assert seen == {"cut at start", "cut at end", "excluded special token inside"}
    assert all("logits" not in r for r in recs)  # an encoder: no unembedding, no logit lens
    _, positions = open_tokens(acts)
    assert positions[:, 1].min() == 1  # CLS (position 0) is excluded from every context


def test_quantile_bands_hold_their_activations(acts, tmp_path):
    sae = make_sae("topk", seed=1)
    inspect_sae(sae, acts, tmp_path, hook="resid_post.1", bands=4, per_band=3)
    z = brute_force(sae, acts, "resid_post.1")
    busy = 0
    for r in load_latents(tmp_path):
        if r["count"] == 0:
            continue
        col = z[:, r["latent"]]
        assert [b["band"] for b in r["quantiles"]] == [0, 1, 2, 3]
        for b in r["quantiles"]:
            assert len(b["examples"]) <= 3
            for e in b["examples"]:
                assert b["low"] * (1 - 1e-5) <= e["activation"] <= b["high"] * (1 + 1e-5)
                assert e["activation"] == pytest.approx(float(col[e["row"]]), rel=1e-4, abs=1e-5)
        if r["count"] >= 40:  # enough firings: every band shows its full share
            busy += 1
            assert all(len(b["examples"]) == 3 for b in r["quantiles"])
            weakest = float(col[col > 0].min())
            if r["count"] <= 2 * 4 * 3:  # the reservoir holds every firing: bands start at the min
                assert r["quantiles"][0]["low"] == pytest.approx(weakest, rel=1e-4, abs=1e-5)
            assert r["quantiles"][0]["low"] >= weakest * (1 - 1e-5)
            assert r["quantiles"][-1]["high"] <= r["max_activation"] * (1 + 1e-5)
    assert busy > 10


def test_row_range_reads_only_those_rows_but_shows_neighbours(acts, tmp_path):
    sae = make_sae("topk", seed=2)
    s = inspect_sae(sae, acts, tmp_path, hook="resid_post.1", rows=(101, 402), window=WINDOW)
    assert s.rows == (101, 402) and s.rows_read == 301
    z = brute_force(sae, acts, "resid_post.1")
    recs = list(load_latents(tmp_path))
    part = torch.zeros_like(z)
    part[101:402] = z[101:402]  # brute force over the range only
    check_stats(recs, part, 301)
    for r in recs:
        assert all(101 <= e["row"] < 402 for e in r["top"])
    check_contexts(recs, z, acts)  # neighbours outside the range come from the full data


def test_several_saes_in_one_pass_equal_one_at_a_time(acts, tmp_path):
    a = save_saelens(
        make_sae("topk", seed=4, hook="resid_post.0"), tmp_path / "a", hook_name="resid_post.0"
    )
    b = save_saelens(
        make_sae("standard", seed=5, hook="resid_post.1"), tmp_path / "b", hook_name="resid_post.1"
    )
    both = inspect_saes({"k=6": a, "relu": b}, acts, tmp_path / "both", batch_size=128)
    assert {n: s.hook for n, s in both.items()} == {"k=6": "resid_post.0", "relu": "resid_post.1"}
    inspect_sae(a, acts, tmp_path / "one", batch_size=128)
    one = (tmp_path / "one" / "latents.jsonl").read_text()
    assert (tmp_path / "both" / "k=6" / "latents.jsonl").read_text() == one


def test_names_stay_inside_out_and_stop_writes_nothing(acts, tmp_path):
    with pytest.raises(ValueError, match="saes:"):
        inspect_saes({"../x": make_sae("topk")}, acts, tmp_path, hook="resid_post.1")
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(InspectionStopped):
        inspect_sae(make_sae("topk"), acts, tmp_path / "x", hook="resid_post.1",
                    batch_size=64, should_stop=stop)  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_bad_input_names_the_field(acts, tmp_path):
    sae = make_sae("topk")
    with pytest.raises(ValueError, match="^rows:"):
        inspect_sae(sae, acts, tmp_path, hook="resid_post.1", rows=(0, 10**6))
    with pytest.raises(ValueError, match="^hook:.*no hook"):
        inspect_sae(sae, acts, tmp_path, hook="resid_post.7")
    with pytest.raises(ValueError, match="^hook:.*names no hook"):
        inspect_sae(sae, acts, tmp_path)  # a module names no hook; the dataset has two
    small = build_sae(SAEConfig(architecture="topk", d_sae=64, k=4).resolved(32))
    with pytest.raises(ValueError, match="^hook:.*d_in=32.*384 wide"):
        inspect_sae(small, acts, tmp_path, hook="resid_post.1")
    with pytest.raises(ValueError, match="^top_n:"):
        inspect_sae(sae, acts, tmp_path, hook="resid_post.1", top_n=0)
    with pytest.raises(FileNotFoundError, match="^SAE:"):
        inspect_sae(tmp_path / "nope", acts, tmp_path)
    with pytest.raises(ValueError, match="^activations:"):
        inspect_sae(sae, tmp_path, tmp_path / "o", hook="resid_post.1")


def test_logit_lens_of_a_causal_lm(model_dirs, tmp_path):
    from saestudio.activations.models import load_model

    out = tmp_path / "acts"
    extract(
        ExtractConfig(model=model_dirs["gpt2"], dataset="demo:pydoc", hooks=["resid_post.1"],
                      out=str(out), context_length=16, max_tokens=16 * 8, batch_size=4,
                      device="cpu"),
        progress=False,
    )  # fmt: skip
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture="topk", d_sae=48, k=4).resolved(32)).eval()
    model = load_model(model_dirs["gpt2"], "float32", "cpu")
    W_U = unembedding(model)
    assert W_U is not None and W_U.shape == (32, 100)
    tok = load_tokenizer(model_dirs["gpt2"])
    s = inspect_sae(sae, out, tmp_path / "i", hook="resid_post.1", unembed=W_U, tokenizer=tok)
    assert s.logit_lens
    logits = sae.W_dec.detach() @ W_U
    for r in load_latents(tmp_path / "i"):
        want = logits[r["latent"]].topk(10)
        assert [t["token_id"] for t in r["logits"]["top"]] == want.indices.tolist()
        assert [t["value"] for t in r["logits"]["top"]] == pytest.approx(
            want.values.tolist(), rel=1e-5
        )
        low = logits[r["latent"]].topk(10, largest=False).indices.tolist()
        assert [t["token_id"] for t in r["logits"]["bottom"]] == low
        assert r["logits"]["top"][0]["token"] == tok.decode([want.indices[0].item()])
    assert unembedding(load_model(minilm_dir(), "float32", "cpu")) is None


def test_a_training_run_and_its_checkpoint_inspect_like_its_export(acts, tmp_path):
    from saestudio.training.config import TrainConfig
    from saestudio.training.trainer import train

    cfg = TrainConfig(
        activations=str(acts), hook=["resid_post.0", "resid_post.1"], steps=3, batch_size=64,
        eval_tokens=64, out=str(tmp_path / "run"), sae=SAEConfig(architecture="topk", d_sae=96, k=4),
        downstream_contexts=0,
    )  # fmt: skip
    train(cfg)
    saes = run_saes(tmp_path / "run")
    assert sorted(saes) == ["resid_post.0", "resid_post.1"]
    inspect_saes(saes, acts, tmp_path / "from_run")
    ckpt = next((tmp_path / "run" / "resid_post.1" / "checkpoints").glob("step_*"))
    inspect_sae(ckpt, acts, tmp_path / "from_ckpt")
    run_lines = [
        json.loads(x) for x in (tmp_path / "from_run" / "resid_post.1" / "latents.jsonl").open()
    ]
    ckpt_lines = [json.loads(x) for x in (tmp_path / "from_ckpt" / "latents.jsonl").open()]
    assert [r["count"] for r in run_lines] == [r["count"] for r in ckpt_lines]
    assert [r["top"][0]["row"] for r in run_lines if r["top"]] == [
        r["top"][0]["row"] for r in ckpt_lines if r["top"]
    ]
    assert load_summary(tmp_path / "from_ckpt").hook == "resid_post.1"


def test_the_library_imports_no_service_layer():
    import subprocess
    import sys

    code = (
        "import sys, saestudio.features, saestudio.training.export\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'sqlalchemy', 'celery')"
        " or m.startswith(('saestudio.api', 'saestudio.store', 'saestudio.jobs'))]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
