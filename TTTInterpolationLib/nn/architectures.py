"""The one place an architecture name becomes a network (``ModelConfig.architecture``).

A new interpolation network enters here and in :data:`~.config.ARCHITECTURES`; test-time
training, training, evaluation and checkpoints reach every architecture through the
:class:`~.networks.UVINet` interface (``flow``, ``features``, ``synthesize``, ``interpolate``).
"""

from __future__ import annotations

from ..config import ModelConfig
from .networks import UVINet
from .temporal import TemporalUVINet

_NETWORKS: dict[str, type[UVINet]] = {"uvinet": UVINet, "uvinet-temporal": TemporalUVINet}


def build_network(config: ModelConfig) -> UVINet:
    """The interpolation network ``config`` names, freshly initialised."""
    return _NETWORKS[config.architecture](config)
