"""Search spaces for `spikerl tune`: config keys with a range or a list of choices.

A space is a YAML file (``--space FILE``) or ``--param`` options, or both (``--param`` wins)::

    network.neuron.alpha: {low: 0.0, high: 0.95, per_layer: true}   # one value per hidden layer
    network.neuron.theta: {low: 0.05, high: 2.0, log: true}
    network.timesteps: {low: 2, high: 16, type: int}
    network.encoder: {choices: [direct, two_neuron]}

    --param network.neuron.theta=float:0.05:2.0:log   --param network.timesteps=int:2:16
    --param network.encoder=choice:direct,two_neuron  --param network.neuron.alpha=float:0:0.95:per_layer

A per-layer parameter is suggested as KEY.0, KEY.1, ... and set as the list KEY=[v0, v1, ...], with as
many entries as the base config has hidden layers.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from spikerl.errors import SpikerlError


@dataclass
class Param:
    key: str  # dotted config key
    type: str = "float"  # float | int | choice
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list = field(default_factory=list)
    per_layer: bool = False


def param_from_mapping(key: str, spec) -> Param:
    if not isinstance(spec, dict):
        raise SpikerlError(f"search space {key}: give {{low: .., high: ..}} or {{choices: [..]}}, got {spec!r}")
    unknown = set(spec) - {"low", "high", "log", "type", "choices", "per_layer"}
    if unknown:
        raise SpikerlError(f"search space {key}: unknown field(s) {sorted(unknown)}; "
                           "known: low, high, log, type, choices, per_layer")
    if "choices" in spec:
        return Param(key, "choice", choices=list(spec["choices"] or []), per_layer=bool(spec.get("per_layer", False)))
    kind = spec.get("type", "float")
    if kind not in ("float", "int"):
        raise SpikerlError(f"search space {key}: type must be float or int, got {kind!r}")
    if "low" not in spec or "high" not in spec:
        raise SpikerlError(f"search space {key}: a range needs both low and high")
    return Param(key, kind, spec["low"], spec["high"], bool(spec.get("log", False)),
                 per_layer=bool(spec.get("per_layer", False)))


def parse_param(text: str) -> Param:
    """`KEY=float:LOW:HIGH[:log][:per_layer]`, `KEY=int:LOW:HIGH[:log]` or `KEY=choice:A,B,C`."""
    key, sep, raw = text.partition("=")
    kind, _, rest = raw.partition(":")
    if not sep or not key.strip() or kind not in ("float", "int", "choice"):
        raise SpikerlError(f"--param {text!r} must look like KEY=float:LOW:HIGH[:log], KEY=int:LOW:HIGH "
                           "or KEY=choice:A,B,C")
    key = key.strip()
    if kind == "choice":
        return Param(key, "choice", choices=[yaml.safe_load(v) for v in rest.split(",") if v.strip()])
    parts = rest.split(":")
    flags = set(parts[2:])
    if len(parts) < 2 or not flags <= {"log", "per_layer"}:
        raise SpikerlError(f"--param {text!r}: give LOW:HIGH, then optionally :log and :per_layer")
    try:
        low, high = (int(p) if kind == "int" else float(p) for p in parts[:2])
    except ValueError:
        raise SpikerlError(f"--param {text!r}: LOW and HIGH must be {kind} numbers") from None
    return Param(key, kind, low, high, "log" in flags, per_layer="per_layer" in flags)


def load_space(path: str | None, params: list[str]) -> list[Param]:
    space: dict[str, Param] = {}
    if path:
        if not Path(path).is_file():
            raise SpikerlError(f"search space file not found: {path}")
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise SpikerlError(f"search space {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise SpikerlError(f"search space {path} must be a YAML mapping of config keys to ranges")
        for key, spec in data.items():
            space[key] = param_from_mapping(str(key), spec)
    for text in params:
        param = parse_param(text)
        space[param.key] = param
    if not space:
        raise SpikerlError("the search space is empty: give --space FILE or at least one --param")
    return list(space.values())


def check_range(param: Param) -> None:
    if param.type == "choice":
        if not param.choices:
            raise SpikerlError(f"search space {param.key}: empty list of choices")
        return
    if not param.low < param.high:
        raise SpikerlError(f"search space {param.key}: empty range, low {param.low} is not below high {param.high}")
    if param.log and param.low <= 0:
        raise SpikerlError(f"search space {param.key}: a log range needs low > 0, got {param.low}")


def _hidden_layers(config: str, overrides: list[str]) -> int:
    from spikerl.config import load_config

    return len(load_config(config, overrides).network.hidden)


def validate_space(space: list[Param], config: str, overrides: list[str]) -> None:
    """Every key must exist and both ends of every range (every choice) must make a valid config, for an
    environment it can use."""
    from spikerl.config import load_config
    from spikerl.rl.envs import check_environment

    n_layers = _hidden_layers(config, overrides)
    ends = []  # (key, override) for both ends of every range, every choice
    for param in space:
        check_range(param)
        values = param.choices if param.type == "choice" else [param.low, param.high]
        for value in values:
            setting = [value] * n_layers if param.per_layer else value
            override = f"{param.key}={json.dumps(setting)}"
            try:
                load_config(config, [*overrides, override])
            except SpikerlError as exc:
                raise SpikerlError(f"search space {param.key}={setting!r}: {exc}") from None
            ends.append((param.key, override))
    # Environments: every choice of environment and algorithm (or the base config's), with every other end
    choices = [[o for k, o in ends if k == key] or [None] for key in ("env_id", "algo")]
    others = [[], *([o] for k, o in ends if k not in ("env_id", "algo"))]
    for picked in itertools.product(*choices):
        for other in others:
            setting = [o for o in picked if o is not None] + other
            try:
                check_environment(load_config(config, [*overrides, *setting]))
            except SpikerlError as exc:
                raise SpikerlError(f"search space {', '.join(setting) or 'base config'}: {exc}") from None


def suggest(trial, space: list[Param], n_layers: int) -> list[str]:
    """Draw every parameter from an Optuna trial; returns config overrides."""
    overrides = []
    for param in space:
        names = [f"{param.key}.{i}" for i in range(n_layers)] if param.per_layer else [param.key]
        values = []
        for name in names:
            if param.type == "choice":
                values.append(trial.suggest_categorical(name, param.choices))
            elif param.type == "int":
                values.append(trial.suggest_int(name, int(param.low), int(param.high), log=param.log))
            else:
                values.append(trial.suggest_float(name, float(param.low), float(param.high), log=param.log))
        overrides.append(f"{param.key}={json.dumps(values if param.per_layer else values[0])}")
    return overrides


def overrides_from_params(space: list[Param], params: dict, n_layers: int) -> list[str]:
    """The config overrides of a finished trial's parameters (as Optuna stored them)."""
    overrides = []
    for param in space:
        if param.per_layer:
            overrides.append(f"{param.key}={json.dumps([params[f'{param.key}.{i}'] for i in range(n_layers)])}")
        else:
            overrides.append(f"{param.key}={json.dumps(params[param.key])}")
    return overrides


def space_to_data(space: list[Param]) -> list[dict]:
    return [asdict(p) for p in space]


def space_from_data(data: list[dict]) -> list[Param]:
    return [Param(**d) for d in data]
