"""The paper presets agree with their audit against the released code (docs/paper_audit.md), row by row."""

import re
from pathlib import Path

import pytest
import yaml

from spikerl.config import config_to_dict, load_config

ROOT = Path(__file__).resolve().parent.parent
AUDIT = ROOT / "docs" / "paper_audit.md"


def audit_tables() -> list[tuple[list[str], list[tuple[str, list]]]]:
    """Each audit table as (its preset files, [(config key, the value listed for each preset)])."""
    tables, presets, rows = [], None, []
    for line in AUDIT.read_text().splitlines() + [""]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            if presets:
                tables.append((presets, rows))
            presets, rows = None, []
        elif presets is None:
            presets = [c.strip("`") for c in cells if re.fullmatch(r"`[a-z0-9_]+\.yaml`", c)]
        elif (key := re.fullmatch(r"`([a-z0-9_.]+)`", cells[1])) is not None:
            rows.append((key.group(1), [yaml.safe_load(c.strip("`")) for c in cells[2:2 + len(presets)]]))
    return tables


def value_at(config: dict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def test_the_audit_has_a_dqn_and_a_td3_table_with_their_settings():
    tables = audit_tables()
    assert [presets for presets, _ in tables] == [
        ["cartpole_dqn_snn.yaml", "acrobot_dqn_snn.yaml"],
        ["pendulum_td3_snn.yaml", "halfcheetah_td3_snn.yaml", "hopper_td3_snn.yaml", "ant_td3_snn.yaml"]]
    dqn_keys = {key for key, _ in tables[0][1]}
    assert {"dqn.loss", "network.timesteps", "dqn.learning_starts", "dqn.epsilon_decay", "dqn.target_update_every",
            "network.encoder", "network.neuron.alpha", "total_episodes"} <= dqn_keys
    assert len(tables[1][1]) >= 20


@pytest.mark.parametrize("table", [0, 1], ids=["dqn", "td3"])
def test_each_paper_preset_loads_the_values_its_audit_lists(table):
    presets, rows = audit_tables()[table]
    for column, preset in enumerate(presets):
        loaded = config_to_dict(load_config(ROOT / "configs" / preset))
        for key, listed in rows:
            assert value_at(loaded, key) == listed[column], f"{preset}: {key}"


@pytest.mark.parametrize("preset", ["cartpole_dqn", "acrobot_dqn", "pendulum_td3", "halfcheetah_td3", "hopper_td3", "ant_td3",
                                    "pendulum_sac", "halfcheetah_sac", "hopper_sac", "walker2d_sac", "ant_sac"])
def test_each_ann_twin_is_its_spiking_preset_with_an_ann(preset):
    snn = config_to_dict(load_config(ROOT / "configs" / f"{preset}_snn.yaml"))
    ann = config_to_dict(load_config(ROOT / "configs" / f"{preset}_ann.yaml"))
    assert ann["network"].pop("kind") == "ann" and snn["network"].pop("kind") == "snn"
    assert ann == snn
