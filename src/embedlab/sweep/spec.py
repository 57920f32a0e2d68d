"""The sweep file (wandb's format): reading and checking it, its parameter distributions, and
drawing a trial's values from them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from scipy import stats

from embedlab.errors import ConfigError, read_yaml
from embedlab.options import PRIMARY_METRIC

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]


METHODS = ("grid", "random", "bayes")


DEFAULT_RUN_CAP = 10


class SweepError(ConfigError):
    """The sweep file is not usable."""


# -- the sweep file ------------------------------------------------------------------------
def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read and check a sweep file; ``name`` defaults to the file's stem."""
    file = Path(path)
    if not file.is_file():
        raise SweepError(f"sweep file not found: {file}")
    config = read_yaml(file)
    if not isinstance(config, dict):
        raise SweepError(f"{file}: a sweep file is a mapping")
    validate_sweep(config, str(file))
    config.setdefault("name", file.stem)
    return config


def validate_sweep(config: dict[str, Any], where: str = "sweep") -> None:
    """Raise :class:`SweepError` naming the first unusable entry."""
    method = config.get("method")
    if method not in METHODS:
        raise SweepError(f"{where}: method must be one of {METHODS}, got {method!r}")
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise SweepError(f"{where}: `parameters` must be a non-empty mapping")
    for name, spec in parameters.items():
        if not isinstance(spec, dict):
            raise SweepError(f"{where}: parameter {name!r} must be a mapping")
        if "parameters" in spec:
            raise SweepError(
                f"{where}: nested parameters ({name!r}) are not supported; use dotted names"
            )
        try:
            if method == "grid":
                grid_values(spec, name)
            else:
                searched(spec, name)
        except SweepError as err:
            raise SweepError(f"{where}: {err}") from None
    metric = config.get("metric") or {}
    if metric.get("goal", "maximize") not in ("maximize", "minimize"):
        raise SweepError(f"{where}: metric.goal must be maximize or minimize")
    stop = config.get("early_terminate")
    if stop is not None and (not isinstance(stop, dict) or stop.get("type") != "hyperband"):
        raise SweepError(f"{where}: early_terminate: only {{type: hyperband}} is supported")
    command = config.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(c, (str, int, float)) for c in command):
        raise SweepError(f"{where}: `command` must be a list of strings")
    if "${program}" in command and "program" not in config:
        raise SweepError(f"{where}: the command uses ${{program}} but there is no `program`")


# -- wandb's parameters -> Optuna's distributions --------------------------------------------
@dataclass(frozen=True)
class Searched:
    """A wandb parameter as Optuna searches it: ``value(x)`` turns Optuna's draw into wandb's."""

    distribution: BaseDistribution
    value: Callable[[Any], Any] = lambda x: x


def _bounds(spec: dict[str, Any], name: str) -> tuple[float, float]:
    try:
        low, high = float(spec["min"]), float(spec["max"])
    except (KeyError, TypeError, ValueError):
        raise SweepError(f"parameter {name!r}: needs numeric `min` and `max`") from None
    if not low < high:
        raise SweepError(f"parameter {name!r}: min must be below max ({low} >= {high})")
    return low, high


def _quantised(spec: dict[str, Any], inner: Callable[[Any], float]) -> Callable[[Any], float]:
    q = float(spec.get("q", 1.0))
    return lambda x: round(inner(x) / q) * q


def _unit() -> FloatDistribution:
    """The quantile searched for distributions Optuna lacks (normal, beta): a value in (0, 1)."""
    return FloatDistribution(1e-6, 1 - 1e-6)


def _normal(spec: dict[str, Any]) -> Callable[[Any], float]:
    law = stats.norm(float(spec.get("mu", 0.0)), float(spec.get("sigma", 1.0)))
    return lambda u: float(law.ppf(u))


def _beta(spec: dict[str, Any]) -> Callable[[Any], float]:
    law = stats.beta(float(spec.get("a", 1.0)), float(spec.get("b", 1.0)))
    return lambda u: float(law.ppf(u))


def _log(spec: dict[str, Any], name: str, natural: bool = False, inverse: bool = False) -> Searched:
    """``log_uniform*``: log-uniform between the values (``natural``: min/max are logs);
    ``inverse``: 1/x of a log-uniform x, itself log-uniform on the reciprocal range."""
    low, high = _bounds(spec, name)
    if natural:
        low, high = (
            (math.exp(-high), math.exp(-low)) if inverse else (math.exp(low), math.exp(high))
        )
    elif low <= 0:
        raise SweepError(f"parameter {name!r}: log-uniform values need min > 0")
    return Searched(FloatDistribution(low, high, log=True))


def _mapping(spec: dict[str, Any], name: str) -> dict[str, Callable[[], Searched]]:
    """wandb's distributions (https://docs.wandb.ai/guides/sweeps/sweep-config-keys)."""

    def q(inner: Searched) -> Searched:
        return Searched(inner.distribution, _quantised(spec, inner.value))

    def uniform() -> Searched:
        return Searched(FloatDistribution(*_bounds(spec, name)))

    def int_uniform() -> Searched:
        low, high = _bounds(spec, name)
        return Searched(IntDistribution(int(low), int(high)))

    def log_normal() -> Searched:
        return Searched(_unit(), lambda u: math.exp(_normal(spec)(u)))

    return {
        "categorical": lambda: categorical(spec, name),
        "int_uniform": int_uniform,
        "uniform": uniform,
        "q_uniform": lambda: q(uniform()),
        "log_uniform": lambda: _log(spec, name, natural=True),
        "log_uniform_values": lambda: _log(spec, name),
        "q_log_uniform": lambda: q(_log(spec, name, natural=True)),
        "q_log_uniform_values": lambda: q(_log(spec, name)),
        "inv_log_uniform": lambda: _log(spec, name, natural=True, inverse=True),
        "inv_log_uniform_values": lambda: _log(spec, name),
        "normal": lambda: Searched(_unit(), _normal(spec)),
        "q_normal": lambda: q(Searched(_unit(), _normal(spec))),
        "log_normal": log_normal,
        "q_log_normal": lambda: q(log_normal()),
        "beta": lambda: Searched(_unit(), _beta(spec)),
        "q_beta": lambda: q(Searched(_unit(), _beta(spec))),
    }


DISTRIBUTIONS = tuple(_mapping({}, "").keys())


def categorical(spec: dict[str, Any], name: str) -> Searched:
    """``values``: Optuna's categorical distribution (choices are numbers, strings or bools)."""
    values = spec.get("values")
    if not isinstance(values, list) or not values:
        raise SweepError(f"parameter {name!r}: `values` must be a non-empty list")
    if "probabilities" in spec:
        raise SweepError(f"parameter {name!r}: `probabilities` are not supported offline")
    if not all(v is None or isinstance(v, (bool, int, float, str)) for v in values):
        raise SweepError(f"parameter {name!r}: values must be numbers, strings or booleans")
    return Searched(CategoricalDistribution(values))


def distribution_name(spec: dict[str, Any], name: str) -> str:
    """The wandb distribution of a parameter, inferred as wandb does when not given."""
    if "distribution" in spec:
        dist = str(spec["distribution"])
    elif "values" in spec:
        dist = "categorical"
    elif "value" in spec:
        return "constant"
    elif "min" in spec and "max" in spec:
        ints = all(
            isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max")
        )
        dist = "int_uniform" if ints else "uniform"
    elif "mu" in spec or "sigma" in spec:
        dist = "normal"
    else:
        raise SweepError(
            f"parameter {name!r}: give `values`, `value`, `min`/`max` or a distribution"
        )
    if dist not in DISTRIBUTIONS:
        raise SweepError(
            f"parameter {name!r}: unsupported distribution {dist!r} ({sorted(DISTRIBUTIONS)})"
        )
    return dist


def searched(spec: dict[str, Any], name: str) -> Searched | None:
    """The Optuna counterpart of a wandb parameter (``None`` for a constant ``value``)."""
    dist = distribution_name(spec, name)
    if dist == "constant":
        return None
    return _mapping(spec, name)[dist]()


def grid_values(spec: dict[str, Any], name: str) -> list[CategoricalChoiceType]:
    """A grid parameter's points: its ``values``, its ``value``, or an integer range."""
    if "values" in spec:
        return list(categorical(spec, name).distribution.choices)  # type: ignore[attr-defined]
    if "value" in spec:
        return [spec["value"]]
    if distribution_name(spec, name) == "int_uniform":
        low, high = _bounds(spec, name)
        return list(range(int(low), int(high) + 1))
    raise SweepError(f"grid search needs `values`, `value` or an int_uniform range for {name!r}")


def suggest(trial: optuna.Trial, config: dict[str, Any]) -> dict[str, Any]:
    """One point of the sweep drawn by ``trial``: wandb's values, by parameter name (sorted, so
    an option precedes its sub-options: ``model.loss`` before ``model.loss.init_args.margin``)."""
    params: dict[str, Any] = {}
    for name in sorted(config["parameters"]):
        spec = config["parameters"][name]
        if config["method"] == "grid":
            values = grid_values(spec, name)
            params[name] = (
                values[0] if len(values) == 1 else trial.suggest_categorical(name, values)
            )
            continue
        found = searched(spec, name)
        if found is None:
            params[name] = spec["value"]
            continue
        value = found.value(draw(trial, name, found.distribution))
        params[name] = float(f"{value:.6g}") if isinstance(value, float) else value
    return params


def draw(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """``trial``'s value of ``name`` from one of the distributions :func:`searched` builds."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, CategoricalDistribution)
    return trial.suggest_categorical(name, list(dist.choices))


# -- the study -------------------------------------------------------------------------------
def metric_name(config: dict[str, Any]) -> str:
    """The sweep's metric without its ``val/`` prefix (default: embedlab's primary metric)."""
    return str((config.get("metric") or {}).get("name", f"val/{PRIMARY_METRIC}")).removeprefix(
        "val/"
    )
