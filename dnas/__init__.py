"""dnas: search and understand DenseNet and Wide-ResNet architectures.

Importing dnas is cheap: torch is imported only by the modules that build or train networks.
"""

from __future__ import annotations

__version__ = "0.1.0"
