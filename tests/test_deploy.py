"""NIR export and import, fixed-point evaluation and energy counts."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from spikerl.config import load_config
from spikerl.deploy.energy import SpikeRecorder, energy_report
from spikerl.deploy.nir_io import DT, load_nir_policy, policy_to_nir, write_nir
from spikerl.deploy.quantize import QuantizationSpec, QuantizedSpikingMLP, quantized_policy
from spikerl.errors import SpikerlError
from spikerl.rl import dqn, td3
from spikerl.snn.encoders import RunningMaxAbs
from tests.conftest import ROOT

nir = pytest.importorskip("nir")

DQN_OVERRIDES = ["network.hidden=[48, 32]", "network.neuron.randomize=normal", "network.neuron.spread=0.2",
                 "network.timesteps=5", "network.neuron.theta=0.1"]
TD3_OVERRIDES = ["env_id=Pendulum-v1", "network.hidden=[40, 30]", "network.neuron.learnable=true",
                 "network.neuron.randomize=uniform", "network.neuron.spread=0.3", "network.bias=true"]


def make_policy(algo: str, overrides: list[str]):
    preset = "cartpole_dqn_snn.yaml" if algo == "dqn" else "pendulum_td3_snn.yaml"
    cfg = load_config(ROOT / "configs" / preset, overrides)
    env = gym.make(cfg.env_id)
    torch.manual_seed(3)
    policy = (dqn if algo == "dqn" else td3).make_policy(cfg, env)
    observations = recorded_observations(env)
    if cfg.network.normalize_obs:
        policy.obs_norm.update(observations)
    with torch.no_grad():  # a trained network has biases and moved weights; make sure export carries them
        for layer in getattr(policy.net, "layers", []):
            if layer.bias is not None:
                layer.bias.normal_(0.0, 0.1)
    policy.eval()
    return cfg, policy, observations


def recorded_observations(env, steps: int = 300) -> torch.Tensor:
    """Observations of a random-action rollout: what the policy sees in its task."""
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    recorded = []
    for _ in range(steps):
        recorded.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    return torch.as_tensor(np.array(recorded), dtype=torch.float32)


def run(policy, observations):
    with torch.no_grad():
        outputs, spikes = policy.net.forward_with_spikes(policy.obs_norm(observations))
    return outputs, spikes


def test_nir_carries_the_observation_normalizers_clip(tmp_path):
    cfg, policy, observations = make_policy("td3", [*TD3_OVERRIDES, "network.normalize_obs=true",
                                                    "network.obs_normalizer=mean_std", "network.obs_clip=0.5"])
    write_nir(policy_to_nir(cfg, policy), tmp_path / "policy.nir")
    cfg2, imported = load_nir_policy(tmp_path / "policy.nir")
    assert cfg2.network.obs_clip == imported.obs_norm.clip == 0.5
    normalized = policy.obs_norm(observations)
    assert (normalized.abs() == 0.5).any() and torch.equal(normalized, imported.obs_norm(observations))


@pytest.mark.parametrize("algo, overrides", [("dqn", DQN_OVERRIDES), ("td3", TD3_OVERRIDES)])
def test_export_then_import_reproduces_spikes_exactly_and_actions(algo, overrides, tmp_path):
    cfg, policy, observations = make_policy(algo, overrides)
    path = tmp_path / "policy.nir"
    write_nir(policy_to_nir(cfg, policy), path)
    cfg2, imported = load_nir_policy(path)
    assert (cfg2.algo, cfg2.env_id, cfg2.network.timesteps) == (cfg.algo, cfg.env_id, cfg.network.timesteps)

    out, spikes = run(policy, observations)
    out2, spikes2 = run(imported, observations)
    for layer, (a, b) in enumerate(zip(spikes, spikes2)):
        assert 0.02 < a.mean() < 0.9, f"layer {layer} barely spikes: the comparison would be empty"
        assert torch.equal(a, b), f"hidden layer {layer} spike trains differ"
    assert (out - out2).abs().max() <= 1e-5
    actions = [policy.act(o.numpy()) for o in observations]
    imported_actions = [imported.act(o.numpy()) for o in observations]
    assert np.allclose(np.array(actions, dtype=float), np.array(imported_actions, dtype=float), atol=1e-5)


def test_the_graph_states_what_nir_cannot_say(tmp_path):
    cfg, policy, _ = make_policy("td3", TD3_OVERRIDES)
    graph = policy_to_nir(cfg, policy)
    assert [type(graph.nodes[n]).__name__ for n in ("fc0", "lif0", "fc1", "lif1", "readout_fc", "readout")] == \
        ["Affine", "CubaLIF", "Affine", "CubaLIF", "Affine", "I"]
    lif = graph.nodes["lif1"]
    alpha = policy.net.neurons[1].membrane.alpha.detach().double().numpy()
    assert lif.tau_syn.shape == (30,) and np.allclose(lif.tau_syn, DT / (1 - alpha))  # per-neuron arrays
    assert np.allclose(lif.w_in * (1 - alpha), 1.0) and np.allclose(graph.nodes["readout"].r, 1 / DT)
    meta = graph.metadata
    assert meta["dt"] == DT and meta["timesteps"] == 5 and meta["encoder"] == "two_neuron"
    assert "tanh" in meta["output_transform"] and "forward Euler" in meta["discretization"]
    assert np.array_equal(meta["obs_max_abs"], policy.obs_norm.max_abs.numpy())


def test_snntorch_imports_the_graph_and_reproduces_spikes_and_readout():
    snntorch = pytest.importorskip("snntorch")
    from snntorch.import_nir import import_from_nir
    from snntorch.utils import reset

    # snnTorch's importer needs one threshold per layer (no per-neuron theta) and has no node for a
    # non-spiking readout (I, LI, CubaLI): it gets the graph up to the readout's weights, and the
    # readout's membrane is integrated here from the exported node's own parameters.
    cfg, policy, observations = make_policy("dqn", ["network.hidden=[48, 32]", "network.timesteps=5",
                                                    "network.neuron.theta=0.1"])
    graph = policy_to_nir(cfg, policy)
    readout = graph.nodes.pop("readout")
    graph.edges = [e for e in graph.edges if "readout" not in e or e == ("lif1", "readout_fc")] + [("readout_fc", "output")]
    net = import_from_nir(graph)
    synaptic = [m for m in net.modules() if isinstance(m, snntorch.Synaptic)]
    assert len(synaptic) == 2
    recorded: list[list[torch.Tensor]] = [[], []]
    for i, module in enumerate(synaptic):
        module.register_forward_hook(lambda mod, inp, out, i=i: recorded[i].append(out.detach().clone()))

    x = policy.net.encoder(policy.obs_norm(observations), 1)[0]
    reset(net)
    with torch.no_grad():
        currents = torch.stack([net(x)[0] for _ in range(cfg.network.timesteps)])  # (output, graph state)
    alpha, beta = 1 - DT / readout.tau_syn, 1 - DT / readout.tau_mem
    current = voltage = torch.zeros_like(currents[0])
    for t in range(cfg.network.timesteps):
        current = torch.as_tensor(alpha, dtype=torch.float32) * current + currents[t]
        voltage = torch.as_tensor(beta, dtype=torch.float32) * voltage + current

    out, spikes = run(policy, observations)
    for layer in range(2):
        theirs = torch.stack(recorded[layer])
        assert 0.02 < spikes[layer].mean() < 0.9
        assert torch.equal(theirs, spikes[layer]), f"snnTorch's layer {layer} spikes differ"
    assert torch.allclose(voltage, out, atol=1e-5)


def test_bad_nir_input_is_refused_clearly(tmp_path):
    cfg, policy, _ = make_policy("dqn", DQN_OVERRIDES)
    graph = policy_to_nir(cfg, policy)
    graph.nodes["lif1"] = nir.Threshold(threshold=np.full(32, 0.5))  # a neuron model spikerl does not have
    path = tmp_path / "threshold.nir"
    write_nir(graph, path)
    with pytest.raises(SpikerlError, match="NIR node 'lif1' of type Threshold is not something spikerl can run"):
        load_nir_policy(path)
    (tmp_path / "junk.nir").write_bytes(b"not hdf5")
    with pytest.raises(SpikerlError, match="is not a readable NIR file"):
        load_nir_policy(tmp_path / "junk.nir")
    with pytest.raises(SpikerlError, match="NIR file not found"):
        load_nir_policy(tmp_path / "missing.nir")


def test_ann_and_subtract_reset_networks_do_not_export():
    cfg, policy, _ = make_policy("dqn", ["network.kind=ann"])
    with pytest.raises(SpikerlError, match="only spiking networks export to NIR"):
        policy_to_nir(cfg, policy)
    cfg, policy, _ = make_policy("dqn", ["network.neuron.reset=subtract"])
    with pytest.raises(SpikerlError, match="reset=subtract has no NIR equivalent"):
        policy_to_nir(cfg, policy)


def test_fixed_point_layer_matches_hand_computed_integers():
    cfg = load_config(ROOT / "configs" / "cartpole_dqn_snn.yaml", [
        "network.hidden=[2]", "network.timesteps=3", "network.encoder=direct", "network.neuron.alpha=0.5",
        "network.neuron.beta=0.75", "network.neuron.theta=1.0", "network.readout_alpha=0.0", "network.readout_beta=1.0"])
    policy = dqn.QPolicy(cfg, RunningMaxAbs(2, enabled=False), 1)
    with torch.no_grad():
        policy.net.layers[0].weight.copy_(torch.tensor([[1.27, 0.0], [0.0, -0.5]]))
        policy.net.decoder.fc.weight.copy_(torch.tensor([[0.5, 0.25]]))
    q = QuantizedSpikingMLP(policy.net, QuantizationSpec(weight_bits=8, decay_bits=2, state_bits=24))
    # Layer scale 1.27 / 127 = 0.01: W_int = [[127, 0], [0, -50]], theta_int = 100, decays 0.5 and 0.75 on a 1/4 grid.
    # Input o = (1, 1): drive = (127, -50). Neuron 0: I = 127, 190, 222; V = 127 -> spike, 190 -> spike, 222 -> spike.
    out, spikes = q.forward_with_spikes(torch.tensor([[1.0, 1.0]]))
    assert spikes[0][:, 0].tolist() == [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    # Readout scale 0.5 / 127: W_int = [127, 64]; integrator V = 3 * 127 = 381 -> 381 * 0.5 / 127 = 1.5.
    assert out.item() == pytest.approx(1.5)
    # Input o = (0.5, 0): I = 64 (round(63.5)), 96, 112; V = 64, 144 -> spike, 112 -> spike (trunc(0.75 * 0) + 112).
    _, spikes = q.forward_with_spikes(torch.tensor([[0.5, 0.0]]))
    assert spikes[0][:, 0, 0].tolist() == [0.0, 1.0, 1.0]


def test_fixed_point_with_wide_words_agrees_with_float():
    cfg, policy, observations = make_policy("dqn", DQN_OVERRIDES)
    wide = quantized_policy(policy, QuantizationSpec(weight_bits=16, decay_bits=24, state_bits=48))
    narrow = quantized_policy(policy, QuantizationSpec(weight_bits=3, decay_bits=2, state_bits=24))
    float_actions = [policy.act(o.numpy()) for o in observations]
    wide_agree = np.mean([wide.act(o.numpy()) == a for o, a in zip(observations, float_actions)])
    narrow_agree = np.mean([narrow.act(o.numpy()) == a for o, a in zip(observations, float_actions)])
    assert wide_agree >= 0.95 and narrow_agree < wide_agree
    with pytest.raises(SpikerlError, match="--weight-bits must be in"):
        QuantizationSpec(weight_bits=1)
    # A network fixed point does not cover is refused naming what it has
    _, subtract, _ = make_policy("dqn", [*DQN_OVERRIDES, "network.neuron.reset=subtract", "network.encoder=poisson"])
    with pytest.raises(SpikerlError, match="; this one has encoder PoissonEncoder and reset subtract$"):
        quantized_policy(subtract, QuantizationSpec())


def test_energy_counts_follow_the_recorded_spikes():
    cfg, policy, observations = make_policy("dqn", DQN_OVERRIDES)
    recorder = SpikeRecorder(policy.net, keep=2)
    with torch.no_grad():
        recorder(policy.obs_norm(observations[:10]))
    _, spikes = run(policy, observations[:10])
    report = energy_report(policy.net, recorder)
    per_decision = [float(s.sum()) / 10 for s in spikes]
    assert report.spikes_per_decision == pytest.approx(sum(per_decision))
    assert report.synaptic_ops_per_decision == pytest.approx(per_decision[0] * 32 + per_decision[1] * 2)
    assert report.input_macs_per_decision == 8 * 48 and report.ann_macs_per_decision == 8 * 48 + 48 * 32 + 32 * 2
    assert report.spikes_per_neuron_per_step[0] == pytest.approx(float(spikes[0].mean()))
    assert report.snn_energy_pj == pytest.approx(report.synaptic_ops_per_decision * 0.9 + 8 * 48 * 4.6)
    assert len(recorder.kept) == 1 and recorder.kept[0][0].shape == (5, 48)  # one batch call = one kept entry


def test_cli_export_eval_quantize_and_energy(cli, tmp_path):
    run_dir = tmp_path / "run"
    result = cli("train", "configs/cartpole_dqn_snn.yaml", "total_steps=300", "dqn.learning_starts=100",
                 "eval.every=0", "eval.final_episodes=2", f"run_dir={run_dir}", "network.hidden=[16, 16]")
    assert result.returncode == 0, result.stderr
    nir_path = tmp_path / "policy.nir"
    result = cli("export", str(run_dir), "--format", "nir", "-o", str(nir_path))
    assert result.returncode == 0 and "2 CubaLIF layers, readout CubaLI" in result.stdout, result.stderr
    result = cli("eval", str(nir_path), "--episodes", "2")
    assert result.returncode == 0, result.stderr
    from_nir = json.loads(result.stdout)
    assert from_nir["returns"] == json.loads((run_dir / "final_eval.json").read_text())["returns"]
    result = cli("eval", str(run_dir), "--episodes", "2", "--quantize", "-o", str(tmp_path / "q.json"))
    assert result.returncode == 0 and "fixed point (8-bit weights" in result.stderr, result.stderr
    assert set(json.loads((tmp_path / "q.json").read_text())) == {"float", "quantized", "quantization"}
    raster = tmp_path / "raster.png"
    result = cli("energy", str(run_dir), "--raster", str(raster), "-o", str(tmp_path / "energy.json"))
    assert result.returncode == 0 and "ANN twin multiply-accumulates per decision: 416" in result.stdout, result.stderr
    assert raster.read_bytes()[:4] == b"\x89PNG"


def test_cli_export_bad_input(cli, tmp_path):
    result = cli("export", str(tmp_path / "missing"))
    assert result.returncode == 2 and "run folder not found" in result.stderr
    run_dir = tmp_path / "ann"
    result = cli("train", "configs/cartpole_dqn_ann.yaml", "total_steps=50", "dqn.learning_starts=10", "eval.every=0",
                 "eval.final_episodes=1", f"run_dir={run_dir}")
    assert result.returncode == 0, result.stderr
    result = cli("export", str(run_dir), "-o", str(tmp_path / "x.nir"))
    assert result.returncode == 2 and "only spiking networks export to NIR" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x.nir").exists()
