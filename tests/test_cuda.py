"""The CUDA paths: skipped where no GPU is present (CI never needs one); run them where one is.

    pytest tests/test_cuda.py        # or benchmarks/gpu_check.sh, which also times TD3 on the GPU
"""

import json

import pytest
import torch

from spikerl.config import NetworkConfig, NeuronConfig, load_config
from spikerl.errors import SpikerlError
from spikerl.snn.backends import resolve_backend
from spikerl.snn.network import build_network
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def twins(backend: str, decoder: str):
    cfg = NetworkConfig(hidden=[64, 48], timesteps=5, decoder=decoder, population_size=3, backend="reference",
                        neuron=NeuronConfig(alpha=[0.0, 0.5], beta=0.5, theta=0.3, randomize="normal", learnable=True))
    reference = build_network(cfg, 6, 3, torch.Generator().manual_seed(0), "cuda")
    cfg.backend = backend
    fast = build_network(cfg, 6, 3, torch.Generator().manual_seed(0), "cuda")
    fast.load_state_dict(reference.state_dict())
    return reference, fast


@pytest.mark.parametrize("backend", ["fused", "compiled"])
@pytest.mark.parametrize("decoder", ["membrane", "integrator", "population"])
def test_cuda_backends_agree_with_the_reference_on_the_gpu(backend, decoder):
    reference, fast = twins(backend, decoder)
    obs = torch.randn(64, 6, device="cuda")
    out_r, spikes_r = reference.forward_with_spikes(obs)
    out_f, spikes_f = fast.forward_with_spikes(obs)
    # Triton may fuse a multiply and an add where eager CUDA rounds twice: allow a rare spike flip.
    for a, b in zip(spikes_r, spikes_f):
        assert 0 < a.mean() < 1 and (a != b).float().mean() < 1e-3
    out_r.square().sum().backward()
    out_f.square().sum().backward()
    for (name, p_r), (_, p_f) in zip(reference.named_parameters(), fast.named_parameters()):
        assert torch.allclose(p_r.grad, p_f.grad, atol=1e-4, rtol=1e-3), name
    with torch.no_grad():
        assert torch.allclose(reference(obs), fast(obs), atol=1e-5)


def test_auto_resolves_to_a_cuda_backend_and_native_refuses_cuda():
    assert resolve_backend("auto", "cuda") in ("fused", "compiled")
    with pytest.raises(SpikerlError, match="'native' runs on cpu, not cuda"):
        resolve_backend("native", "cuda")


@pytest.mark.parametrize("algo", ["dqn", "td3"])
def test_training_runs_end_to_end_on_the_gpu_and_evaluates_on_the_cpu(algo, tmp_path):
    preset = "cartpole_dqn_snn.yaml" if algo == "dqn" else "pendulum_td3_snn.yaml"
    extra = [] if algo == "dqn" else ["env_id=spikerl/PointReach-v0", "td3.critic.kind=snn",
                                      "td3.critic.encoder=two_neuron", "td3.critic.hidden=[32, 32]"]
    run_dir = tmp_path / algo
    result = run_cli("train", str(ROOT / "configs" / preset), "device=cuda", "total_steps=1200", "network.hidden=[32, 32]",
                     f"{algo}.learning_starts=200", f"{algo}.batch_size=32", "checkpoint_every=500", "eval.every=0",
                     "eval.final_episodes=2", f"run_dir={run_dir}", *extra)
    assert result.returncode == 0, result.stderr
    final = json.loads((run_dir / "final_eval.json").read_text())
    assert final["device"] == "cuda" and load_config(run_dir / "config.yaml").device == "cuda"
    # The checkpoint holds the CUDA generator; the policy trained on the GPU evaluates on the CPU alike.
    from tests.conftest import newest_checkpoint

    assert newest_checkpoint(run_dir)["torch_cuda"]
    result = run_cli("eval", str(run_dir), "--episodes", "2", "--device", "cpu", "-o", str(tmp_path / "e.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["returns"] == final["returns"]
