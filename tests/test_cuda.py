"""The CUDA paths: skipped where no GPU is present (CI never needs one); run them where one is.

    pytest tests/test_cuda.py        # then: python benchmarks/actor_speed.py --device cuda
"""

import pytest
import torch

from spikerl.config import NetworkConfig, NeuronConfig
from spikerl.errors import SpikerlError
from spikerl.snn.network import build_network

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def twins(backend: str, inference: str, decoder: str):
    cfg = NetworkConfig(hidden=[64, 48], timesteps=5, decoder=decoder, population_size=3,
                        neuron=NeuronConfig(alpha=[0.0, 0.5], beta=0.5, theta=0.3, randomize="normal", learnable=True))
    reference = build_network(cfg, 6, 3, torch.Generator().manual_seed(0)).cuda()
    cfg.backend, cfg.inference = backend, inference
    fast = build_network(cfg, 6, 3, torch.Generator().manual_seed(0)).cuda()
    fast.load_state_dict(reference.state_dict())
    return reference, fast


@pytest.mark.parametrize("backend, inference", [("fused", "fast"), ("compiled", "compiled")])
@pytest.mark.parametrize("decoder", ["membrane", "integrator", "population"])
def test_cuda_backends_agree_with_the_reference_on_the_gpu(backend, inference, decoder):
    reference, fast = twins(backend, inference, decoder)
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


def test_native_backend_refuses_cuda_tensors():
    _, fast = twins("native", "native", "integrator")
    with pytest.raises(SpikerlError, match="float32 on the CPU"):
        fast(torch.randn(4, 6, device="cuda"))
