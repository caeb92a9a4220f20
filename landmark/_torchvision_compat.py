"""Make ``import torchvision`` (and hence ``import timm``) work with a CPU-only torch build.

The torchvision 0.28 wheel from the registry is a CUDA build; on a CPU torch its ``_C.so`` fails to load and
torchvision's import dies registering fake kernels for ``torchvision::nms``. Declaring the two operator schemas
ourselves lets the import succeed; torchvision's compiled ops stay unavailable (we decode with PIL/cv2 and do
not use nms). Where the real library loads (GPU machines), this is a no-op.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_library: object | None = None  # keeps the torch.library.Library alive for the life of the process


def ensure_torchvision_ops() -> None:
    """Idempotently load torchvision's ops library, or declare its schemas when the library cannot load."""
    global _library
    if _library is not None:
        return
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        _library = False
        return
    so_files = sorted(Path(spec.origin).parent.glob("_C*.so"))
    try:
        if so_files:
            torch.ops.load_library(str(so_files[0]))
        _library = True
        return
    except OSError:
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library = lib
