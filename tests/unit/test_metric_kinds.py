"""How a trainer line splits into stored rows per kind (train / eval / density /
downstream): what the charts read back."""

from __future__ import annotations

from saestudio.store.metrics import split_line


def test_a_merged_line_splits_by_kind_and_each_keeps_its_time() -> None:
    line = {
        "step": 600, "sae": "sae", "loss": 1.0, "l0": 32.0, "eval_fvu": 0.2,
        "feature_density": {"edges": [0, 1], "counts": [3]}, "time": 123.5,
    }  # fmt: skip
    parts = split_line(line)
    assert set(parts) == {"train", "eval", "density"}
    assert parts["train"] == {"loss": 1.0, "l0": 32.0, "time": 123.5}
    assert parts["eval"] == {"eval_fvu": 0.2, "time": 123.5}


def test_time_alone_makes_no_row() -> None:
    # the eval and density lines of the final step are flushed after its training line:
    # their time must not become a "train" row that overwrites the real one
    assert "train" not in split_line({"step": 5, "eval_loss": 2.0, "time": 1.0})
    assert split_line({"step": 5, "time": 1.0}) == {}
