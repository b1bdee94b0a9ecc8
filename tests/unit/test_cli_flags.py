"""The one flag generator (``saestudio.cli.flags``): the same field kinds become the same
flags for every config (train's TrainConfig/SAEConfig and extract's ExtractConfig)."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from saestudio.cli import build_parser
from saestudio.cli.flags import add_config_flags, given_fields


class Example(BaseModel):
    path: str = Field(description="Where (100% required).")
    lr: float | None = Field(None, description="Optional float.")
    steps: int = Field(10, description="An int.")
    mode: Literal["a", "b"] = "a"
    size: Literal[1, 2] | None = None
    fast: bool = False
    hook_names: list[str] = Field(default_factory=list)


def parser(require: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="x", exit_on_error=False)
    add_config_flags(p.add_argument_group("example"), Example, require=require)
    return p


def test_each_field_kind_parses_to_what_the_model_takes() -> None:
    args = parser().parse_args(
        ["--path", "p", "--lr", "3e-4", "--size", "2", "--fast", "--hook-names", "a,b"]
    )
    assert given_fields(args, Example) == {
        "path": "p", "lr": 3e-4, "size": 2, "fast": True, "hook_names": "a,b",
    }  # fmt: skip
    # unset flags stay absent: the model's defaults (and its messages) apply
    assert Example.model_validate({**given_fields(args, Example), "hook_names": ["a"]}).steps == 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--path", "p", "--lr", "fast"], "invalid float value: 'fast'"),
        (["--path", "p", "--steps", "1.5"], "invalid int value: '1.5'"),
        (["--path", "p", "--size", "3"], "invalid choice: 3"),
        (["--path", "p", "--mode", "c"], "invalid choice: 'c'"),
    ],
)
def test_bad_values_are_refused_by_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(argparse.ArgumentError, match=message):
        parser().parse_args(argv)


def test_required_fields_are_required_flags_unless_something_else_can_supply_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args([])
    assert "the following arguments are required: --path" in capsys.readouterr().err
    assert given_fields(parser(require=False).parse_args([]), Example) == {}


def test_help_shows_types_defaults_and_escapes_percent() -> None:
    text = parser().format_help()
    assert "--lr FLOAT" in text and "--steps INT" in text and "[default: 10]" in text
    assert "--path PATH" in text and "100% required" in text
    assert "--hook-names NAMES" in text and "[default: []]" not in text


def test_train_and_extract_use_the_same_rules(capsys: pytest.CaptureFixture[str]) -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    train, extract = sub.choices["train"].format_help(), sub.choices["extract"].format_help()
    # Optional[float] (train's --lr) and float alike are FLOAT; strings are named
    assert "--lr FLOAT" in train and "--jumprelu-bandwidth FLOAT" in train
    assert "--text-column COLUMN" in train and "--text-column COLUMN" in extract
    # train's fields can come from --config or --resume: none is a required flag
    assert build_parser().parse_args(["train"]).command == "train"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["extract"])
    assert "required: --model, --dataset, --hooks, --out" in capsys.readouterr().err
