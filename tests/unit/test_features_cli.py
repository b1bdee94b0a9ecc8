"""``saestudio inspect`` on the command line, and the Neuronpedia export it writes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from saestudio.activations.extract import ExtractConfig, extract
from saestudio.cli import main
from saestudio.features import load_latents, load_summary, write_neuronpedia
from saestudio.sae import SAEConfig, build_sae, save_saelens
from tests.unit.conftest import minilm_dir

# the records of sae-dashboard's Neuronpedia exporter (sae_dashboard/neuronpedia/
# neuronpedia_export.py, dataclasses Feature and Activation), field for field
FEATURE_FIELDS = {
    "modelId", "layer", "index", "creatorId", "createdAt", "maxActApprox", "hasVector",
    "vector", "vectorLabel", "vectorDefaultSteerStrength", "hookName", "topkCosSimIndices",
    "topkCosSimValues", "neuron_alignment_indices", "neuron_alignment_values",
    "neuron_alignment_l1", "correlated_neurons_indices", "correlated_neurons_pearson",
    "correlated_neurons_l1", "correlated_features_indices", "correlated_features_pearson",
    "correlated_features_l1", "neg_str", "neg_values", "pos_str", "pos_values", "frac_nonzero",
    "freq_hist_data_bar_heights", "freq_hist_data_bar_values", "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values", "decoder_weights_dist", "sourceSetName",
}  # fmt: skip
ACTIVATION_FIELDS = {
    "id", "tokens", "index", "layer", "modelId", "maxValue", "maxValueTokenIndex", "minValue",
    "values", "creatorId", "dataSource", "dataIndex", "dfaValues", "dfaTargetIndex",
    "dfaMaxValue", "createdAt", "lossValues", "logitContributions", "binMin", "binMax",
    "binContains", "qualifyingTokenIndex", "zIndices", "zValues",
}  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("inspect_cli")
    extract(
        ExtractConfig(
            model=minilm_dir(), dataset="demo:pydoc", hooks=["resid_post.1"], out=str(root / "acts"),
            context_length=16, max_tokens=16 * 12, batch_size=4, shard_tokens=16 * 4, device="cpu",
        ),
        progress=False,
    )  # fmt: skip
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture="topk", d_sae=64, k=4).resolved(384))
    save_saelens(sae, root / "sae", model_name=minilm_dir(), hook_name="resid_post.1")
    return root / "acts", root / "sae"


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["inspect", *map(str, argv), "--quiet"])
    return code, capsys.readouterr().err


def test_inspect_writes_the_documented_files(setup, tmp_path, capsys):
    acts, sae = setup
    code, err = run(capsys, sae, "--activations", acts, "--out", tmp_path / "i", "--top", 5)
    assert code == 0, err
    s = load_summary(tmp_path / "i")
    assert (s.rows_read, s.top_n, s.hook, s.logit_lens) == (192, 5, "resid_post.1", False)
    recs = list(load_latents(tmp_path / "i"))
    assert len(recs) == 64
    keys = {
        "latent",
        "density",
        "mean_activation",
        "max_activation",
        "histogram",
        "top",
        "quantiles",
    }
    assert all(keys <= r.keys() and "logits" not in r for r in recs)
    ex = next(r for r in recs if r["top"])["top"][0]
    assert {"row", "activation", "token", "context", "context_activations", "position"} <= ex.keys()
    assert ex["context"][ex["position"]] == ex["token"]
    code, _ = run(capsys, sae, "--activations", acts, "--out", tmp_path / "j", "--rows", "50:90")
    assert code == 0 and load_summary(tmp_path / "j").rows == (50, 90)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["{tmp}/missing", "--activations", "{acts}"], "SAE:"),
        (["{sae}", "--activations", "{tmp}"], "activations:"),
        (["{sae}", "--activations", "{acts}", "--hook", "mlp_out.9"], "hook:"),
        (["{small}", "--activations", "{acts}"], "hook:"),  # d_in 32 vs 384-wide rows
        (["{sae}", "--activations", "{acts}", "--rows", "100:9999"], "rows:"),
        (["{sae}", "--activations", "{acts}", "--rows", "ten"], "--rows:"),
        (["{sae}", "--activations", "{acts}", "--top", "0"], "top_n:"),
        (["{sae}", "--activations", "{acts}", "--labels", "{tmp}/nope.json"], "--labels:"),
    ],
)
def test_bad_input_exits_2_naming_the_field(setup, tmp_path, capsys, args, field):
    acts, sae = setup
    small = save_saelens(build_sae(SAEConfig(architecture="topk", d_sae=8, k=2).resolved(32)),
                         tmp_path / "small", hook_name="resid_post.1")  # fmt: skip
    fill = {"tmp": tmp_path, "acts": acts, "sae": sae, "small": small}
    code, err = run(capsys, *[a.format(**fill) for a in args], "--out", tmp_path / "o")
    assert code == 2
    assert err.splitlines()[-1].startswith(f"saestudio: error: {field}"), err
    if "small" in args[0]:
        assert "d_in=32" in err
    assert not (tmp_path / "o" / "summary.json").exists()


def read_gz(path: Path) -> list[dict]:
    return [json.loads(x) for x in gzip.decompress(path.read_bytes()).decode().splitlines()]


def test_neuronpedia_export_has_the_exporters_fields_and_labels(setup, tmp_path, capsys):
    acts, sae = setup
    (tmp_path / "labels.json").write_text(json.dumps({"3": "code keywords", "7": "punctuation"}))
    code, err = run(capsys, sae, "--activations", acts, "--out", tmp_path / "i",
                    "--neuronpedia", tmp_path / "np", "--labels", tmp_path / "labels.json")  # fmt: skip
    assert code == 0, err
    root = tmp_path / "np" / "model" / "1-saestudio"  # <model id>/<layer>-<source set>
    for name in ("release.jsonl", "model.jsonl", "sourceset.jsonl", "source.jsonl"):
        assert len((root / name).read_text().splitlines()) == 1
    feats = read_gz(root / "features" / "batch-0.jsonl.gz")
    acts_np = read_gz(root / "activations" / "batch-0.jsonl.gz")
    recs = list(load_latents(tmp_path / "i"))
    assert [f["index"] for f in feats] == [str(r["latent"]) for r in recs]
    assert all(set(f) == FEATURE_FIELDS for f in feats)
    assert all(set(a) == ACTIVATION_FIELDS for a in acts_np)
    by_latent = {r["latent"]: r for r in recs}
    for f in feats:
        r = by_latent[int(f["index"])]
        assert f["frac_nonzero"] == r["density"] and f["maxActApprox"] == r["max_activation"]
        assert f["layer"] == "1-saestudio" and f["pos_str"] == []  # MiniLM: no logit lens
    n_examples = sum(len(r["top"]) + sum(len(b["examples"]) for b in r["quantiles"]) for r in recs)
    assert len(acts_np) == n_examples and len({a["id"] for a in acts_np}) == n_examples
    top = next(a for a in acts_np if a["binMin"] == -1)
    r = by_latent[int(top["index"])]
    ex = next(e for e in r["top"] if str(e["row"]) == top["dataIndex"])
    assert top["tokens"] == ex["context"] and top["values"] == ex["context_activations"]
    assert top["qualifyingTokenIndex"] == ex["position"] and top["binMax"] == r["max_activation"]
    expl = read_gz(root / "explanations" / "batch-0.jsonl.gz")
    assert [(e["index"], e["description"]) for e in expl] == [
        ("3", "code keywords"),
        ("7", "punctuation"),
    ]
    assert all(e["layer"] == "1-saestudio" and e["modelId"] == "model" for e in expl)
    # the library call: no labels, no explanations file
    out = write_neuronpedia(tmp_path / "i", tmp_path / "np2", model_id="all-MiniLM-L6-v2")
    assert out.name == "1-saestudio" and not (out / "explanations").exists()


def test_a_causal_lm_dataset_gets_the_logit_lens(model_dirs, tmp_path, capsys):
    acts = tmp_path / "acts"
    extract(
        ExtractConfig(model=model_dirs["gpt2"], dataset="demo:pydoc", hooks=["resid_post.1"],
                      out=str(acts), context_length=16, max_tokens=64, batch_size=4, device="cpu"),
        progress=False,
    )  # fmt: skip
    sae = build_sae(SAEConfig(architecture="topk", d_sae=16, k=2).resolved(32))
    folder = save_saelens(sae, tmp_path / "sae", hook_name="resid_post.1")
    code, err = run(capsys, folder, "--activations", acts, "--out", tmp_path / "i")
    assert code == 0, err
    assert load_summary(tmp_path / "i").logit_lens
    assert all(len(r["logits"]["top"]) == 10 for r in load_latents(tmp_path / "i"))
