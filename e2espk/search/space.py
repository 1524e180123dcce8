"""The hyperparameter search space as a nevergrad parametrization.

Each searchable train.py option has a default range here (registry ``SEARCH_SPACE``); the
choices of a named part (fusion, feature mode, backbone, optimizer) are its registry's names. A
``--space-file`` YAML can change ranges or choices, and any option the user fixed on the
command line (or in --config) leaves the space.

Space-file syntax, one entry per train.py option (its flat name, as in a --config file)::

    lr: {log: [1.0e-4, 1.0e-2]}      # log-uniform float
    dropout_prob: {range: [0.0, 0.3]}  # uniform float
    warmup: {int_range: [0, 500]}     # uniform integer
    fusion: {choices: [concat, gating]}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import nevergrad as ng
import yaml

from e2espk.config import option_names, upgrade_keys
from e2espk.data.augment import SPECTRAL_STREAMS
from e2espk.data.features import FEATURE_MODES
from e2espk.errors import ConfigError
from e2espk.models.backbones import BACKBONES
from e2espk.models.fusion import FUSIONS
from e2espk.registry import Registry
from e2espk.search.constraints import CorpusLimits, FitsCorpus, fit_ranges
from e2espk.training.config import TrainConfig
from e2espk.training.optim import OPTIMIZERS

ParameterFactory = Callable[[], ng.p.Parameter]
SEARCH_SPACE: Registry[dict[str, Any]] = Registry("searchable hyperparameter")

# Seconds per step on a CPU at full size (ECAPA-TDNN C=512: 2.2 s per step of 64 crops): in the
# default space they would take most of a search's time; --search-costly-backbones adds them.
COSTLY_BACKBONES = ["ecapa_tdnn", "resnet"]
# Choices of the named parts come from their registries, in registration order. Every backbone
# registers a *_tiny variant for tests and demos: a search wants the real ones. A searched
# feature mode has a spectral stream (log-mel or MFCC): pitch alone is not searched.
CHEAP_BACKBONES = [
    name
    for name in BACKBONES.names(sort=False)
    if not name.endswith("_tiny") and name not in COSTLY_BACKBONES
]
SEARCHED_FEATURE_MODES = [
    name
    for name in FEATURE_MODES.names(sort=False)
    if SPECTRAL_STREAMS & set(FEATURE_MODES.get(name))
]
DEFAULT_RANGES: dict[str, dict[str, Any]] = {
    "fusion": {"choices": FUSIONS.names(sort=False)},
    "feature_mode": {"choices": SEARCHED_FEATURE_MODES},
    "backbone": {"choices": CHEAP_BACKBONES},  # + COSTLY_BACKBONES when asked for
    "optimizer": {"choices": OPTIMIZERS.names(sort=False)},
    "lr": {"log": [1e-4, 1e-2]},
    "l2": {"log": [1e-6, 1e-3]},
    "momentum": {"range": [0.5, 0.99]},
    "warmup": {"int_range": [0, 1000]},
    "margin": {"range": [0.1, 0.4]},
    "scale": {"range": [16.0, 64.0]},
    "pair_weight": {"log": [0.1, 10.0]},
    "latent_size": {"choices": [128, 192, 256]},
    "verifier_hidden_size": {"choices": [64, 128, 256, 512]},
    "n_hidden": {"choices": [1, 2, 3, 4]},
    "dropout_prob": {"range": [0.0, 0.3]},
    "n_frames": {"choices": [100, 200, 300]},
    "batch_size": {"choices": [32, 64, 128]},
    "ndiscriminators": {"choices": [1, 2, 4]},
    "rproj_size": {"choices": [0, 64, 128]},
}
for _name, _spec in DEFAULT_RANGES.items():
    SEARCH_SPACE.register(_name)(_spec)


def parameter(name: str, spec: Mapping[str, Any]) -> ng.p.Parameter:
    """One nevergrad parameter from a range spec (choices / log / range / int_range)."""
    if len(spec) != 1:
        raise ConfigError(
            f"search space {name!r}: give exactly one of choices, log, range, int_range; got {sorted(spec)}"
        )
    kind, values = next(iter(spec.items()))
    if kind == "choices":
        if not values:
            raise ConfigError(f"search space {name!r}: empty choices")
        # one choice is a constant: as a 1-way Choice, nevergrad's NGOpt picks an optimizer
        # that needs an uninstalled package
        return ng.p.Constant(values[0]) if len(values) == 1 else ng.p.Choice(list(values))
    if kind in ("log", "range", "int_range"):
        low, high = values
        if not low < high:
            raise ConfigError(f"search space {name!r}: {kind} needs low < high, got {values}")
        if kind == "log":
            return ng.p.Log(lower=float(low), upper=float(high))
        scalar = ng.p.Scalar(lower=float(low), upper=float(high))
        return scalar.set_integer_casting() if kind == "int_range" else scalar
    raise ConfigError(
        f"search space {name!r}: unknown kind {kind!r}; use choices, log, range or int_range"
    )


def load_space_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """The ranges of a --space-file, keyed by train.py option (an option's earlier name is
    taken with a FutureWarning naming the current one)."""
    path = Path(path)
    try:
        payload = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the search space ({error})") from None
    payload = upgrade_keys(TrainConfig, payload, f"{path}: ")
    unknown = sorted(set(payload) - set(option_names(TrainConfig)))
    if unknown:
        raise ConfigError(f"{path}: {', '.join(unknown)} are not train.py options")
    return payload


def build_space(
    fixed: set[str],
    space_file: str | None = None,
    only: list[str] | None = None,
    base: Mapping[str, Any] | None = None,
    limits: CorpusLimits | None = None,
    costly_backbones: bool = False,
) -> ng.p.Dict:
    """The parametrization over every searchable option the user did not fix.

    With ``limits`` (the corpus facts) and ``base`` (the trial config without the searched
    options), the space is fitted to what the corpus allows (``e2espk.search.constraints``),
    so no trial fails by construction.
    """
    ranges: dict[str, dict[str, Any]] = {
        name: SEARCH_SPACE.get(name) for name in SEARCH_SPACE.names()
    }
    if costly_backbones:
        ranges["backbone"] = {"choices": [*ranges["backbone"]["choices"], *COSTLY_BACKBONES]}
    if space_file:
        ranges |= load_space_file(space_file)
    if only:
        only = list(upgrade_keys(TrainConfig, dict.fromkeys(only), "--search-params: "))
        unknown = sorted(set(only) - set(ranges))
        if unknown:
            raise ConfigError(
                f"--search-params: no range for {', '.join(unknown)}; known: {', '.join(sorted(ranges))}"
            )
        ranges = {name: ranges[name] for name in only}
    ranges = {name: spec for name, spec in sorted(ranges.items()) if name not in fixed}
    if not ranges:
        raise ConfigError("every searchable option is fixed: nothing to search")
    needs_constraint = False
    if limits is not None and base is not None:
        ranges, needs_constraint = fit_ranges(ranges, base, limits)
    space = ng.p.Dict(**{name: parameter(name, spec) for name, spec in ranges.items()})
    if space.dimension == 0:
        raise ConfigError(
            f"nothing left to search: every searched option has one possible value ({space.value})"
        )
    if needs_constraint and limits is not None and base is not None:
        space.register_cheap_constraint(FitsCorpus(dict(base), limits))
    return space


def plain(value: Any) -> Any:
    """nevergrad values as YAML/JSON-friendly Python scalars."""
    if hasattr(value, "item"):
        return value.item()
    return value
