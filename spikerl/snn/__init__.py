"""The spiking core, a floor at a time: neuron equations (neuron.py) -> backends (how T steps are
computed) -> layers (layer.py: a spiking layer and a readout, owning their membrane parameters) ->
encoders, decoders and networks (network.py) composed of those layers."""
