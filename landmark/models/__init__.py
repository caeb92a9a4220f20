"""Neural models: backbones, pooling, heads and the global descriptor model."""

from landmark._torchvision_compat import ensure_torchvision_ops

ensure_torchvision_ops()
