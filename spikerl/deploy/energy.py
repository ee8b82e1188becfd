"""Activity and energy of a spiking policy in its environment, against its ANN twin.

Counted per decision (one action, T steps), from the hidden spikes of real evaluation episodes:

    spikes per neuron per step  = spikes of layer l / (decisions x T x n_l)
    synaptic operations (ACs)   = sum over layers of spikes_l x fan_out_l     (each spike adds one weight
                                  to every neuron it projects to: an accumulate)
    input MACs                  = in x n_1, once per decision (the encoded observation is a constant,
                                  real-valued current: multiply-accumulates)
    ANN twin MACs               = sum of in x out over its layers (same input features and sizes)
    energy                      = ACs x E_AC + MACs x E_MAC

with E_AC = 0.9 pJ and E_MAC = 4.6 pJ (32-bit float add and multiply-add at 45 nm, Horowitz, ISSCC
2014) unless given. Neuron state updates, memory traffic and static power are not counted: the
estimate compares arithmetic only, as the papers that quote these figures do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

E_AC_PJ = 0.9
E_MAC_PJ = 4.6


class SpikeRecorder(nn.Module):
    """Wraps a network that has `forward_with_spikes`; counts spikes, keeps the first `keep` decisions' trains and
    the latest decision's (`last`, of the first batch row)."""

    def __init__(self, net: nn.Module, keep: int = 0):
        super().__init__()
        self.net, self.keep = net, keep
        self.decisions = 0
        self.spike_totals: list[float] | None = None
        self.kept: list[list[torch.Tensor]] = []  # per decision: [T, n_l] per layer
        self.last: list[torch.Tensor] | None = None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out, spikes = self.net.forward_with_spikes(obs)
        counts = [float(s.sum()) for s in spikes]
        self.spike_totals = counts if self.spike_totals is None else [a + b for a, b in zip(self.spike_totals, counts)]
        self.decisions += obs.shape[0]
        self.last = [s[:, 0].detach() for s in spikes]
        if len(self.kept) < self.keep:
            self.kept.append([s.clone() for s in self.last])
        return out


@dataclass
class EnergyReport:
    layer_sizes: list[int]
    spikes_per_neuron_per_step: list[float]
    spikes_per_decision: float
    synaptic_ops_per_decision: float
    input_macs_per_decision: int
    ann_macs_per_decision: int
    e_ac_pj: float
    e_mac_pj: float
    decisions: int

    @property
    def snn_energy_pj(self) -> float:
        return self.synaptic_ops_per_decision * self.e_ac_pj + self.input_macs_per_decision * self.e_mac_pj

    @property
    def ann_energy_pj(self) -> float:
        return self.ann_macs_per_decision * self.e_mac_pj

    def as_dict(self) -> dict:
        return {**self.__dict__, "snn_energy_pj": self.snn_energy_pj, "ann_energy_pj": self.ann_energy_pj,
                "energy_ratio_ann_over_snn": self.ann_energy_pj / max(self.snn_energy_pj, 1e-12)}


def energy_report(net: nn.Module, recorder: SpikeRecorder, e_ac_pj: float = E_AC_PJ, e_mac_pj: float = E_MAC_PJ) -> EnergyReport:
    """Counts from a recorder that watched `net` (a SpikingMLP) act in its environment."""
    sizes = [layer.out_features for layer in net.layers]
    fan_out = sizes[1:] + [net.decoder.fc.out_features]
    steps = recorder.decisions * net.timesteps
    totals = recorder.spike_totals or [0.0] * len(sizes)
    per_decision = [t / max(recorder.decisions, 1) for t in totals]
    in_features = net.layers[0].in_features
    twin = [in_features, *sizes, net.decoder.fc.out_features]
    return EnergyReport(
        layer_sizes=sizes,
        spikes_per_neuron_per_step=[t / max(steps * n, 1) for t, n in zip(totals, sizes)],
        spikes_per_decision=float(sum(per_decision)),
        synaptic_ops_per_decision=float(sum(s * f for s, f in zip(per_decision, fan_out))),
        input_macs_per_decision=in_features * sizes[0],
        ann_macs_per_decision=int(sum(a * b for a, b in zip(twin[:-1], twin[1:]))),
        e_ac_pj=e_ac_pj, e_mac_pj=e_mac_pj, decisions=recorder.decisions)


def _require_spiking(net: nn.Module) -> None:
    from spikerl.errors import SpikerlError
    from spikerl.snn.network import SpikingMLP

    if not isinstance(net, SpikingMLP):
        raise SpikerlError("this policy is an ANN; spike counts and energy estimates are for spiking networks")


def check_energy_applies(net: nn.Module) -> None:
    """The operation counts above assume a spiking network with a constant real-valued input current and a linear
    readout of the last layer; any other network is refused in one line (a spiking one's spike counts alone are
    still right)."""
    from spikerl.errors import SpikerlError
    from spikerl.snn.decoders import PopulationDecoder

    _require_spiking(net)
    if not getattr(net.encoder, "constant", False) or isinstance(net.decoder, PopulationDecoder):
        raise SpikerlError("spikerl energy counts networks with a constant input current (encoder direct or "
                           "two_neuron) and a linear readout (decoder membrane or integrator); this one has "
                           f"encoder {type(net.encoder).__name__} and decoder {type(net.decoder).__name__}")


def measure_activity(policy, env_id: str, episodes: int, seed: int, keep: int = 0,
                     e_ac_pj: float = E_AC_PJ, e_mac_pj: float = E_MAC_PJ,
                     env_kwargs: dict | None = None) -> tuple[EnergyReport, dict, SpikeRecorder]:
    """Run a spiking policy for `episodes` evaluation episodes while counting its spikes.

    Returns the energy report, the evaluation result and the recorder (its kept spike trains).
    """
    from spikerl.rl.evaluate import evaluate

    net = policy.net
    _require_spiking(net)
    recorder = SpikeRecorder(net, keep=keep)
    policy.net = recorder
    try:
        result = evaluate(policy.act, env_id, episodes, seed, env_kwargs=env_kwargs)
    finally:
        policy.net = net
    return energy_report(net, recorder, e_ac_pj, e_mac_pj), result, recorder


def plot_raster(kept: list[list[torch.Tensor]], timesteps: int, path, title: str) -> None:
    """Spike raster of the recorded decisions: x = simulation step (decisions side by side), one panel per layer."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    layers = len(kept[0])
    fig, axes = plt.subplots(layers, 1, figsize=(9, 2.2 * layers), sharex=True, squeeze=False)
    for layer in range(layers):
        trains = torch.cat([decision[layer] for decision in kept]).numpy()  # [decisions * T, n]
        steps, neurons = np.nonzero(trains)
        ax = axes[layer][0]
        ax.scatter(steps, neurons, s=1.5, marker="|", color="black", linewidths=0.6)
        for boundary in range(0, trains.shape[0] + 1, timesteps):
            ax.axvline(boundary - 0.5, color="tab:blue", alpha=0.15, linewidth=0.5)
        ax.set_ylabel(f"layer {layer + 1}\nneuron")
        ax.set_ylim(-0.5, trains.shape[1] - 0.5)
    axes[-1][0].set_xlabel(f"simulation step ({len(kept)} decisions of T = {timesteps}, separated by lines)")
    axes[0][0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
