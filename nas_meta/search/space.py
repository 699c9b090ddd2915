"""The one walk of a conditional search space, and what is built on it: suggesting a candidate φ, and the
parameters that make the space reproduce a given config (a baseline enqueued as a trial).

This is the only module that calls ``trial.suggest_*``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from ..config import ParamSpec, SearchSpace, TrainConfig, apply_overrides, split_indexed
from ..errors import ConfigError


def walk(space: SearchSpace, pick: Callable[[ParamSpec], Any]) -> dict[str, Any]:
    """Visit the parameters of ``space`` in order, asking ``pick`` for the value of each active one.

    A parameter is active when every parameter its ``when`` names took one of the listed values.

    Returns:
        ``{parameter key: value}`` for the active parameters.
    """
    values: dict[str, Any] = {}
    for p in space.parameters:
        if all(values.get(name) in allowed for name, allowed in (p.when or {}).items()):
            values[p.key] = pick(p)
    return values


def apply_values(space: SearchSpace, base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """``base`` with the space's fixed fields and the walked ``values`` set."""
    overrides: dict[str, Any] = dict(space.fixed or {})
    for p in space.parameters:
        if p.key in values:
            overrides[p.name] = values[p.key]
    return apply_overrides(base, overrides)


def _suggest(trial: optuna.Trial, p: ParamSpec) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(p.key, list(p.choices or ()))
    assert p.low is not None and p.high is not None
    if p.type == "int":
        return trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)


def suggest_config(trial: optuna.Trial, space: SearchSpace, base: TrainConfig) -> TrainConfig:
    """Ask ``trial`` for every active parameter of ``space`` and apply the values to ``base``."""
    return apply_values(space, base, walk(space, lambda p: _suggest(trial, p)))


def baseline_params(space: SearchSpace, config: TrainConfig) -> dict[str, Any]:
    """The Optuna parameters that make ``space`` reproduce ``config`` (for ``enqueue_trial``).

    Raises:
        ConfigError: a value of ``config`` lies outside the space, or differs from one the space fixes.
    """
    flat = {f"{s}.{k}": v for s, fields in config.to_dict().items() if isinstance(fields, dict)
            for k, v in fields.items()}

    def pick(p: ParamSpec) -> Any:
        field_name, index = split_indexed(p.name)
        value: Any = flat[field_name]
        if index is not None:
            value = value[index] if index < len(value) else None
        if p.type == "categorical":
            inside, allowed = value in (p.choices or ()), f"{list(p.choices or ())}"
        else:
            number = isinstance(value, (int, float)) and not isinstance(value, bool)  # (unset: None, outside)
            inside, allowed = number and p.low <= value <= p.high, f"[{p.low:g}, {p.high:g}]"
        if not inside:
            raise ConfigError(f"baseline {config.name!r}: {p.name}={value!r} lies outside the search space's {allowed}.")
        return value

    params = walk(space, pick)
    for name, value in (space.fixed or {}).items():
        if flat.get(name) != value:
            raise ConfigError(f"baseline {config.name!r}: {name}={flat.get(name)!r} differs from the space's fixed {value!r}.")
    return params


def check_reproduced(space: SearchSpace, base: TrainConfig, config: TrainConfig, params: dict[str, Any]) -> None:
    """A baseline's trial is built like any other, from the study's base config and the space's values: refuse a
    baseline whose architecture or learner that trial would not be (a field the space neither searches nor fixes).

    Raises:
        ConfigError: naming the first field that would differ, the baseline's value and the trial's.
    """
    wanted_config, built_config = config.to_dict(), apply_values(space, base, params).to_dict()
    for section in ("architecture", "learner"):
        wanted, built = wanted_config[section], built_config[section]
        for field, value in wanted.items():
            if built[field] != value:
                raise ConfigError(
                    f"baseline {config.name!r}: {section}.{field}={value!r} is neither searched nor fixed by the search "
                    f"space {space.name!r}, so its trial would run with {built[field]!r}; add {section}.{field} to the "
                    "space (or to its fixed fields), or leave it at the study's value in the baseline.")
