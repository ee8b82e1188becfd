"""The spiking core: CUBA-LIF dynamics, surrogates, membrane parameters, encoders, decoders, networks."""

from spikerl.snn.membrane import MembraneParameters
from spikerl.snn.network import ANNMLP, SpikingMLP, build_network
from spikerl.snn.neuron import CubaLIFParams, CubaLIFState, cuba_lif_multistep, cuba_lif_step
from spikerl.snn.surrogate import SpikeFunction

__all__ = [
    "ANNMLP", "CubaLIFParams", "CubaLIFState", "MembraneParameters", "SpikeFunction", "SpikingMLP",
    "build_network", "cuba_lif_multistep", "cuba_lif_step",
]
