"""Config loading, overrides and validation: every bad value is named in one clear message."""

from pathlib import Path

import pytest

from spikerl.config import ConfigError, config_from_dict, config_to_dict, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_preset_loads(path):
    cfg = load_config(path)
    assert cfg.algo == path.stem.split("_")[1]  # <task>_<algo>_<variant>.yaml
    assert cfg.network.kind == ("ann" if path.stem.endswith("_ann") else "snn")


def test_ann_twin_differs_from_its_spiking_preset_only_in_kind():
    snn, ann = load_config(CONFIGS[0].parent / "halfcheetah_td3_snn.yaml"), load_config(CONFIGS[0].parent / "halfcheetah_td3_ann.yaml")
    ann.network.kind = "snn"
    assert ann == snn


def test_paper_settings_in_presets():
    cfg = load_config(CONFIGS[0].parent / "hopper_td3_snn.yaml")
    assert (cfg.env_id, cfg.network.hidden, cfg.network.neuron.theta, cfg.network.timesteps) == ("Hopper-v5", [400, 300], 2.0, 5)
    assert cfg.network.encoder == "two_neuron" and cfg.network.decoder == "integrator" and cfg.network.normalize_obs


def test_overrides_are_typed_and_dotted():
    cfg = load_config(None, ["network.neuron.theta=0.7", "dqn.double=true", "network.hidden=[32, 16]", "seed=3",
                             "eval.stop_at_return=null"])
    assert cfg.network.neuron.theta == 0.7 and cfg.dqn.double is True
    assert cfg.network.hidden == [32, 16] and cfg.seed == 3 and cfg.eval.stop_at_return is None


def test_a_number_written_with_an_exponent_and_no_dot_is_a_number():
    # PyYAML reads 1e-4 as a string (YAML 1.1 wants 1.0e-4); researchers write it both ways
    cfg = load_config(None, ["algo=ppo", "ppo.policy_learning_rate=1e-4", "ppo.learning_rate=3E-4", "network.neuron.theta=2e0"])
    assert (cfg.ppo.policy_learning_rate, cfg.ppo.learning_rate, cfg.network.neuron.theta) == (1e-4, 3e-4, 2.0)
    with pytest.raises(ConfigError, match="ppo.learning_rate must be a number"):
        load_config(None, ["algo=ppo", "ppo.learning_rate=fast"])
    # env_kwargs are untyped, so the environment would get the string '1e-2' unless it is read as a number
    cfg = load_config(None, ["env_kwargs.reset_noise_scale=1e-2", "env_kwargs.range=[1e0, 2]", "env_kwargs.name=e5"])
    assert cfg.env_kwargs == {"reset_noise_scale": 0.01, "range": [1.0, 2], "name": "e5"}


def test_env_kwargs_load_from_yaml_and_may_be_left_empty(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: " + str(Path("configs/ant_ppo_snn.yaml").resolve()) + "\n"
                    "env_kwargs: {include_cfrc_ext_in_observation: false, ctrl_cost_weight: 5e-1}\n")
    assert load_config(path).env_kwargs == {"include_cfrc_ext_in_observation": False, "ctrl_cost_weight": 0.5}
    path.write_text("env_kwargs:\n")
    assert load_config(path).env_kwargs == {}
    # A config whose base sets env_kwargs clears them with an empty mapping, as with an empty value.
    (tmp_path / "child.yaml").write_text("base: c.yaml\nenv_kwargs: {}\n")
    path.write_text("env_kwargs: {ctrl_cost_weight: 0.5}\n")
    assert load_config(path).env_kwargs and load_config(tmp_path / "child.yaml").env_kwargs == {}


@pytest.mark.parametrize("override, message", [
    ("network.neuron.alpha=1.5", "network.neuron.alpha must be in [0, 1]"),
    ("network.neuron.beta=-0.1", "network.neuron.beta must be in [0, 1]"),
    ("network.neuron.theta=0", "network.neuron.theta must be > 0"),
    ("network.obs_clip=0", "network.obs_clip must be > 0, got 0"),
    ("network.timesteps=0", "network.timesteps (T) must be >= 1"),
    ("network.neuron.alpha=[0.5]", "network.neuron.alpha lists 1 values but the network has 2 hidden layers"),
    ("network.neuron.surrogate=sigmoid", "network.neuron.surrogate must be one of fast_sigmoid, atan, rectangular"),
    ("algo=a2c", "algo must be one of dqn, td3, sac, ppo"),
    ("network.hidden=64", "network.hidden must be a list of int"),
    ("seed=abc", "seed must be an integer"),
    ("seed=-1", "seed must be in [0, 4294967295] (NumPy's seed range), got -1"),
    ("seed=4294967296", "seed must be in [0, 4294967295]"),
    ("eval.seed=-5", "eval.seed must be in [0, 4294967295], got -5"),
    ("dqn.max_grad_norm=-1.0", "dqn.max_grad_norm must be > 0, got -1.0"),
    ("algo=ppo ppo.num_envs=1 ppo.num_steps=8 ppo.num_minibatches=8",
     "ppo.num_minibatches (8) leaves minibatches of one transition"),
    ("network.nuerons=3", "unknown config key in network: 'nuerons'"),
    ("dqn.gamma=1.2", "dqn.gamma must be in [0, 1]"),
    ("network.kind=ann network.encoder=population", None),
    ("noequals", "must look like key=value"),
    ("algo=ppo ppo.learning_rate=1e999", "ppo.learning_rate must be a finite number"),
    ("algo=ppo ppo.log_std_learning_rate=0", "ppo.log_std_learning_rate must be > 0, got 0"),
    ("algo=ppo ppo.desired_kl=0.01 ppo.policy_learning_rate=0.1",
     "with ppo.desired_kl the policy's learning rate adapts within [1e-05, 0.01]; it starts at 0.1"),
])
def test_bad_values_are_named(override, message):
    overrides = override.split(" ")
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    if message:
        assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("network: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(loop)


def test_base_file_is_merged_underneath(tmp_path):
    (tmp_path / "a.yaml").write_text("seed: 4\nnetwork: {hidden: [8, 8], neuron: {theta: 0.9}}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nnetwork: {neuron: {beta: 0.1}}\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert (cfg.seed, cfg.network.hidden, cfg.network.neuron.theta, cfg.network.neuron.beta) == (4, [8, 8], 0.9, 0.1)
    # An empty section over the base's leaves that section at its defaults; the rest of the base stays.
    (tmp_path / "c.yaml").write_text("base: a.yaml\nnetwork: {neuron: {}}\n")
    cfg, defaults = load_config(tmp_path / "c.yaml"), load_config(None)
    assert (cfg.seed, cfg.network.hidden, cfg.network.neuron) == (4, [8, 8], defaults.network.neuron)


def test_every_search_space_preset_fits_its_config():
    from spikerl.tune.space import load_space, validate_space

    for space in sorted((Path(__file__).parent.parent / "configs" / "spaces").glob("*.yaml")):
        # The config it is meant for: the one its usage line names, as in `spikerl tune CONFIG --space SPACE`.
        config = next(word for line in space.read_text().splitlines() if "spikerl tune configs/" in line
                      for word in line.split() if word.startswith("configs/") and "spaces/" not in word)
        validate_space(load_space(str(space), []), config, [])


@pytest.mark.parametrize("task", ["halfcheetah", "hopper", "walker2d", "ant"])
def test_each_mujoco_ppo_twin_differs_from_its_spiking_preset_only_in_its_units_kl_stop_and_rates(task):
    snn = config_to_dict(load_config(CONFIGS[0].parent / f"{task}_ppo_snn.yaml"))
    ann = config_to_dict(load_config(CONFIGS[0].parent / f"{task}_ppo_ann.yaml"))
    assert (snn["network"].pop("kind"), ann["network"].pop("kind")) == ("snn", "ann")
    assert ann["network"].pop("activation") == "tanh"
    snn["network"].pop("activation")
    # the spiking policy's update stops at an approximate KL of 0.03; the twin runs CleanRL's PPO at its one rate
    assert (snn["ppo"].pop("policy_target_kl"), ann["ppo"].pop("policy_target_kl")) == (0.03, None)
    assert ann["ppo"]["learning_rate"] == snn["ppo"]["learning_rate"] == 3e-4
    # the spiking mean learns at a third of the rate, so that its log-std, at the twin's rate, trains for more epochs
    assert (snn["ppo"].pop("policy_learning_rate"), ann["ppo"].pop("policy_learning_rate")) == (1e-4, None)
    assert (snn["ppo"].pop("log_std_learning_rate"), ann["ppo"].pop("log_std_learning_rate")) == (3e-4, None)
    assert snn["network"]["timesteps"] == 8
    assert ann == snn


def test_the_pendulum_ppo_presets_keep_rl_zoo3s_one_rate_no_kl_stop_and_t_5():
    # pendulum_ppo_snn.yaml inherits from the MuJoCo spiking preset, whose spiking-only settings must not leak in
    for kind in ("snn", "ann"):
        ppo = load_config(CONFIGS[0].parent / f"pendulum_ppo_{kind}.yaml").ppo
        assert (ppo.learning_rate, ppo.policy_learning_rate, ppo.log_std_learning_rate, ppo.policy_target_kl) == (1e-3, None, None, None)
    assert load_config(CONFIGS[0].parent / "pendulum_ppo_snn.yaml").network.timesteps == 5  # the MuJoCo T is 8


def test_the_settings_a_run_reads_leave_out_those_its_training_never_reads():
    from spikerl.config import flatten_settings, settings_the_run_reads

    def read(*overrides):
        return settings_the_run_reads(flatten_settings(config_to_dict(load_config(None, list(overrides)))))

    ppo = read("algo=ppo")  # a spiking policy with the two-neuron encoder, an ANN value network
    assert {"ppo.gamma", "network.neuron.theta", "network.timesteps", "ppo.critic.activation"} <= set(ppo)
    assert not any(k.startswith(("dqn.", "td3.", "sac.", "ppo.critic.neuron.")) for k in ppo)
    assert not {"network.activation", "network.population_std", "ppo.critic.timesteps"} & set(ppo)
    encoded = read("algo=ppo", "network.encoder=population")
    assert {"network.population_std", "network.population_size", "network.population_spikes"} <= set(encoded)
    decoded = read("algo=td3", "network.decoder=population", "td3.critic.kind=snn")
    assert "network.population_size" in decoded and "network.population_std" not in decoded
    assert {"td3.critic.neuron.theta", "td3.critic.timesteps"} <= set(decoded) and "td3.critic.activation" not in decoded
    twin = read("algo=sac", "network.kind=ann", "network.activation=tanh")
    assert {"network.activation", "network.encoder", "sac.alpha", "sac.critic.hidden"} <= set(twin)
    assert not any(k.startswith(("network.neuron.", "network.population_", "sac.critic.neuron.")) for k in twin)
    assert not {"network.timesteps", "network.decoder", "network.bias", "sac.critic.normalize_obs"} & set(twin)
    assert "network.readout_beta" in read("network.decoder=membrane")  # a DQN's membrane readout
    assert "network.readout_beta" not in read("algo=td3", "network.decoder=integrator")
    assert "network.neuron.surrogate_slope" in read() and "network.neuron.surrogate_width" not in read()
    rectangular = read("network.neuron.surrogate=rectangular", "network.neuron.randomize=normal")
    assert "network.neuron.surrogate_width" in rectangular and "network.neuron.surrogate_slope" not in rectangular
    assert "network.neuron.spread" in rectangular and "network.neuron.spread" not in read()
    assert "network.obs_normalizer" in read("network.normalize_obs=true") and "network.obs_normalizer" not in read()
    mean_std = read("network.normalize_obs=true", "network.obs_normalizer=mean_std")
    assert "network.obs_clip" in mean_std and "network.obs_clip" not in read("network.normalize_obs=true")
    assert "network.obs_clip" not in read("network.normalize_obs=false", "network.obs_normalizer=mean_std")
    # a critic reads its actor's normalizer (its own settings of one are refused)
    assert "sac.critic.obs_clip" not in read("algo=sac", "network.normalize_obs=true", "network.obs_normalizer=mean_std")


def test_a_critics_normalizer_settings_are_refused_but_a_stored_runs_are_put_back_to_the_defaults():
    # Before they were refused they were accepted and never read: a run that set them trained as with the
    # defaults, so it can still be resumed, evaluated and exported.
    data = config_to_dict(load_config("configs/pendulum_td3_snn.yaml"))
    data["td3"]["critic"].update(normalize_obs=True, obs_normalizer="mean_std", obs_clip=5.0)
    with pytest.raises(ConfigError, match="td3.critic.normalize_obs is not read"):
        config_from_dict(data)
    stored = config_from_dict(data, stored=True)
    assert stored.td3.critic == load_config("configs/pendulum_td3_snn.yaml").td3.critic
    assert data["td3"]["critic"]["obs_clip"] == 5.0  # the caller's mapping is left as it was
