"""Registries of networks, losses, optimisers, schedules and normalisation layers, and the network interface.

Importing this package does not import torch: built-in entries are loaded on first use. See docs/extending.md
for how to register your own.
"""
from deepwml.models.base import DescribedNetwork, InputSpec, NetworkSpec, build_network, network_spec
from deepwml.models.registry import LOSSES, LR_SCHEDULES, NETWORKS, NORMS, OPTIMIZERS, Registry, load_plugins

__all__ = [
    "DescribedNetwork", "InputSpec", "NetworkSpec", "build_network", "network_spec",
    "LOSSES", "LR_SCHEDULES", "NETWORKS", "NORMS", "OPTIMIZERS", "Registry", "load_plugins",
]
