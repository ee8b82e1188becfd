"""Speed of the paper's spiking TD3 actor, measured side by side in one run.

    python benchmarks/actor_speed.py [--threads 2] [--timesteps 1 5 16] [--batches 1 100 256] [--rounds 5]
                                     [--device cpu|cuda]

The actor is the paper's TD3 actor for HalfCheetah: observation (17) -> two-neuron input (34)
-> 400 -> 300 -> 6, integrator readout, hard reset, alpha 0.5, beta 0.5, theta 0.8. Paths (each a
spikerl backend, used for the update with gradients and for the action without):

    reference   the plain loop over the step function (update); its in-place no-grad loop (action)
    fused       one autograd node per layer, PyTorch operations only
    native      the C++ operators (CPU only)
    compiled    the fused loops through torch.compile
                (C++ kernels on the CPU, Triton kernels on CUDA); compiled before the timed rounds
    snntorch    snnTorch's Synaptic neurons with the same parameters, stepped T times
    norse       Norse's LIF over the sequence, layer by layer
    spikingjelly  SpikingJelly's CUBALIFNode in multi-step mode, layer by layer
    ann         the ANN twin (34 -> 400 -> 300 -> 6, ReLU)
    floor       the spiking network's matrix products alone (the same shapes, no neuron dynamics)

Per path: the update (forward, backward of mean(output^2), Adam step) at each batch > 1, the
batch-1 action (no autograd), and the activation memory an update keeps for its backward (bytes
of the tensors autograd saves). Rounds interleave the paths, and each figure is the median over
rounds, so the machine's load falls on all paths alike; the ratios are the result, not the
absolute times. The peers come with the `bench` extra; a peer that is not installed is skipped.
With --device cuda every path runs on the GPU (native is CPU-only and left out) and each timing
ends with a synchronize.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from spikerl.config import NetworkConfig, NeuronConfig
from spikerl.snn.network import build_network

OBS, HIDDEN, ACTIONS = 17, [400, 300], 6


def spiking(timesteps: int, backend: str) -> nn.Module:
    cfg = NetworkConfig(hidden=HIDDEN, timesteps=timesteps, encoder="two_neuron", decoder="integrator", backend=backend,
                        neuron=NeuronConfig(alpha=0.5, beta=0.5, theta=0.8))
    return build_network(cfg, OBS, ACTIONS, torch.Generator().manual_seed(0))


class DenseFloor(nn.Module):
    """The spiking network's matrix products without its neurons: [B,34]x[34,400], then T*B rows through the rest."""

    def __init__(self, timesteps: int):
        super().__init__()
        self.timesteps = timesteps
        self.fc0, self.fc1, self.fc2 = nn.Linear(34, 400, bias=False), nn.Linear(400, 300, bias=False), nn.Linear(300, 6, bias=False)

    def forward(self, obs):
        x = torch.cat([obs.clamp(min=0), (-obs).clamp(min=0)], dim=1)
        h = self.fc0(x).unsqueeze(0).expand(self.timesteps, -1, -1).reshape(-1, 400)
        return self.fc2(self.fc1(h)).reshape(self.timesteps, obs.shape[0], ACTIONS).sum(0)


class SnnTorchActor(nn.Module):
    """The same actor with snnTorch's Synaptic neurons (hard reset, as its NIR importer configures them)."""

    def __init__(self, timesteps: int):
        super().__init__()
        import snntorch as snn

        self.timesteps = timesteps
        self.fc0, self.fc1, self.fc2 = nn.Linear(34, 400, bias=False), nn.Linear(400, 300, bias=False), nn.Linear(300, 6, bias=False)
        self.lif0 = snn.Synaptic(alpha=0.5, beta=0.5, threshold=0.8, reset_mechanism="zero", reset_delay=False)
        self.lif1 = snn.Synaptic(alpha=0.5, beta=0.5, threshold=0.8, reset_mechanism="zero", reset_delay=False)

    def forward(self, obs):
        x = torch.cat([obs.clamp(min=0), (-obs).clamp(min=0)], dim=1)
        syn0, mem0 = self.lif0.reset_mem()
        syn1, mem1 = self.lif1.reset_mem()
        drive, out = self.fc0(x), 0.0
        for _ in range(self.timesteps):
            spk0, syn0, mem0 = self.lif0(drive, syn0, mem0)
            spk1, syn1, mem1 = self.lif1(self.fc1(spk0), syn1, mem1)
            out = out + self.fc2(spk1)
        return out


class _MultiStepActor(nn.Module):
    """Layer by layer over all T steps (a peer's multi-step mode), the first layer's current computed once."""

    def __init__(self, timesteps: int, lif0: nn.Module, lif1: nn.Module):
        super().__init__()
        self.timesteps, self.lif0, self.lif1 = timesteps, lif0, lif1
        self.fc0, self.fc1, self.fc2 = nn.Linear(34, 400, bias=False), nn.Linear(400, 300, bias=False), nn.Linear(300, 6, bias=False)

    def run_lif(self, lif: nn.Module, currents: torch.Tensor) -> torch.Tensor:
        return lif(currents)

    def forward(self, obs):
        x = torch.cat([obs.clamp(min=0), (-obs).clamp(min=0)], dim=1)
        steps, batch = self.timesteps, obs.shape[0]
        s0 = self.run_lif(self.lif0, self.fc0(x).unsqueeze(0).expand(steps, -1, -1))
        s1 = self.run_lif(self.lif1, self.fc1(s0.reshape(steps * batch, -1)).reshape(steps, batch, -1))
        return self.fc2(s1.reshape(steps * batch, -1)).reshape(steps, batch, -1).sum(0)


class NorseActor(_MultiStepActor):
    """Norse's LIF (current-based) over the sequence; dt = 1e-3 and 1/tau = 500 give retentions of 0.5."""

    def __init__(self, timesteps: int):
        import norse.torch as norse

        p = norse.LIFParameters(tau_syn_inv=torch.tensor(500.0), tau_mem_inv=torch.tensor(500.0), v_th=torch.tensor(0.8))
        super().__init__(timesteps, norse.LIF(p), norse.LIF(p))

    def run_lif(self, lif, currents):
        return lif(currents)[0]


class SpikingJellyActor(_MultiStepActor):
    """SpikingJelly's CUBALIFNode in multi-step mode, reset before each forward pass."""

    def __init__(self, timesteps: int):
        from spikingjelly.activation_based import neuron

        def node():
            lif = neuron.CUBALIFNode(c_decay=0.5, v_decay=0.5, v_threshold=0.8, v_reset=0.0)
            lif.step_mode = "m"
            return lif

        super().__init__(timesteps, node(), node())

    def run_lif(self, lif, currents):
        from spikingjelly.activation_based import functional

        functional.reset_net(lif)
        return lif(currents)


def paths(timesteps: int, device: torch.device) -> dict[str, tuple[nn.Module, nn.Module]]:
    """name -> (module for the update, module for acting), on `device`."""
    found = {
        "reference": (spiking(timesteps, "reference"), spiking(timesteps, "reference")),
        "fused": (spiking(timesteps, "fused"), spiking(timesteps, "fused")),
        "native": (spiking(timesteps, "native"), spiking(timesteps, "native")),
        "compiled": (spiking(timesteps, "compiled"), spiking(timesteps, "compiled")),
        "ann": (build_network(NetworkConfig(kind="ann", hidden=HIDDEN), OBS, ACTIONS),) * 2,
        "floor": (DenseFloor(timesteps),) * 2,
    }
    if device.type != "cpu":
        del found["native"]
    for name, peer in (("snntorch", SnnTorchActor), ("norse", NorseActor), ("spikingjelly", SpikingJellyActor)):
        try:
            found[name] = (peer(timesteps),) * 2
        except ImportError:
            print(f"({name} is not installed: pip install -e '.[bench]')")
    return {name: (update.to(device), act.to(device)) for name, (update, act) in found.items()}


def synchronize(obs: torch.Tensor) -> None:
    if obs.is_cuda:
        torch.cuda.synchronize(obs.device)


def time_update(net: nn.Module, optimizer, obs, repeats: int) -> float:
    synchronize(obs)
    start = time.perf_counter()
    for _ in range(repeats):
        loss = net(obs).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    synchronize(obs)
    return (time.perf_counter() - start) / repeats


@torch.no_grad()
def time_action(net: nn.Module, obs, repeats: int) -> float:
    synchronize(obs)
    start = time.perf_counter()
    for _ in range(repeats):
        net(obs)
    synchronize(obs)
    return (time.perf_counter() - start) / repeats


def saved_bytes(net: nn.Module, obs) -> int:
    """Bytes of the tensors autograd keeps for the backward of one update (activation memory)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(obs).square().mean()
    return total[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[1, 5, 16])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 100, 256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (every path on the GPU; native left out)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    gpu = f"; {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"{cpu}, {os.cpu_count()} CPUs{gpu}; torch {torch.__version__}, {args.threads} thread(s); "
          f"medians over {args.rounds} interleaved rounds\n")
    print("| T | batch | path | update (ms) | / floor | / fastest peer | action (us) | / ann | saved for backward (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    peers = ("snntorch", "norse", "spikingjelly")
    for timesteps in args.timesteps:
        candidates = paths(timesteps, device)
        optimizers = {name: torch.optim.Adam(update.parameters(), lr=1e-4) for name, (update, _) in candidates.items()}
        for batch in args.batches:
            obs = torch.randn(batch, OBS, device=device)
            updates: dict[str, list[float]] = {n: [] for n in candidates}
            actions: dict[str, list[float]] = {n: [] for n in candidates}
            for name, (update, act) in candidates.items():  # untimed: compiles what compiles, warms the rest
                if batch > 1:
                    time_update(update, optimizers[name], obs, 2)
                else:
                    time_action(act, obs, 2)
            for _ in range(args.rounds):
                for name, (update, act) in candidates.items():
                    if batch > 1:
                        updates[name].append(time_update(update, optimizers[name], obs, 5 if batch > 100 else 10))
                    else:
                        actions[name].append(time_action(act, obs, 200))
            times = {n: statistics.median(updates[n] if batch > 1 else actions[n]) for n in candidates}
            fastest_peer = min((times[n] for n in peers if n in times), default=float("nan"))
            for name, seconds in times.items():
                if batch > 1:
                    memory = saved_bytes(candidates[name][0], obs) / 2**20
                    print(f"| {timesteps} | {batch} | {name} | {seconds * 1e3:.2f} | {seconds / times['floor']:.2f} "
                          f"| {seconds / fastest_peer:.2f} | | | {memory:.1f} |", flush=True)
                else:
                    print(f"| {timesteps} | 1 | {name} | | | {seconds / fastest_peer:.2f} | {seconds * 1e6:.0f} "
                          f"| {seconds / times['ann']:.2f} | |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
