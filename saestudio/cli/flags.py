"""Command-line flags generated from the pydantic config models, so the CLI cannot drift
from the library: one ``--flag`` per field, its help the field's description, its type,
choices and default read from the annotation.

Unset flags stay absent from the parsed namespace (``argparse.SUPPRESS``), so the model's
own defaults and validation messages apply, and a ``--config`` file (``train``) can
supply what a flag does not.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


def _unwrap(annotation: Any) -> Any:
    """The inner type of ``X | None`` (``Optional[X]``); other annotations unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def add_field_flag(
    group: argparse._ArgumentGroup,
    name: str,
    info: FieldInfo,
    *,
    dest: str | None = None,
    require: bool = True,
) -> None:
    """Add ``--name`` for one config field.

    ``bool`` → ``--x/--no-x``; ``Literal`` → choices; ``int``/``float`` → typed (metavar
    INT/FLOAT); anything else (str, lists, mappings) → a string pydantic parses, shown as
    the last word of the name (``--text-column COLUMN``). ``Optional[X]`` is treated as X.
    A required field is a required flag when ``require`` (nothing else can supply it);
    otherwise the model's validation names it when it is missing.
    """
    flag = "--" + name.replace("_", "-")
    inner = _unwrap(info.annotation)
    kwargs: dict[str, Any] = {"dest": dest or name, "help": info.description or ""}
    if info.is_required() and require:
        kwargs["required"] = True
    else:
        kwargs["default"] = argparse.SUPPRESS
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if default not in (None, [], {}):
            kwargs["help"] += f" [default: {default}]"
    kwargs["help"] = kwargs["help"].replace("%", "%%")
    if inner is bool:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif typing.get_origin(inner) is Literal:
        choices = typing.get_args(inner)
        kinds = {type(c) for c in choices}
        kind = kinds.pop() if len(kinds) == 1 else str
        group.add_argument(flag, choices=choices, type=kind, **kwargs)
    elif inner in (int, float):
        group.add_argument(flag, type=inner, metavar=inner.__name__.upper(), **kwargs)
    else:
        group.add_argument(flag, type=str, metavar=name.split("_")[-1].upper(), **kwargs)


def add_config_flags(
    group: argparse._ArgumentGroup,
    model: type[BaseModel],
    *,
    prefix: str = "",
    skip: tuple[str, ...] = (),
    require: bool = True,
) -> None:
    """One flag per field of ``model`` (except ``skip``); ``prefix`` namespaces the dests
    (``sae.`` for the SAEConfig nested in TrainConfig; the flag names stay flat)."""
    for name, info in model.model_fields.items():
        if name not in skip:
            add_field_flag(group, name, info, dest=prefix + name, require=require)


def given_fields(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The flags of ``model``'s fields that were given on the command line."""
    return {k: v for k, v in vars(args).items() if k in model.model_fields}


def format_validation_error(err: ValidationError) -> str:
    """One line per problem, each naming the field as its flag."""
    lines = []
    for e in err.errors():
        if e["type"] == "extra_forbidden":  # only a --config file (or a checkpoint) can do this
            key = ".".join(str(p) for p in e["loc"])
            lines.append(f"{key}: unknown field (saestudio train --help lists the fields)")
            continue
        loc = [str(p) for p in e["loc"] if p != "sae"]
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"--{'.'.join(loc).replace('_', '-')}: {msg}" if loc else msg)
    return "; ".join(lines)
