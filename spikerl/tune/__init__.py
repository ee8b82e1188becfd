"""Sensitivity sweeps and hyperparameter searches over spiking agents."""
