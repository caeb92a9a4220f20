"""The ``delf-tf`` local-feature backend: an official DELF/DELG TensorFlow SavedModel from a local directory.

The model is called through its serving signature (``default``, else ``serving_default``) with the inputs of
the official DELF module (TF-Hub ``google/delf/1``): ``image`` (H, W, 3), ``score_threshold``, ``image_scales``
and ``max_feature_num``; it returns ``locations`` (N, 2) as (y, x) in original pixels and ``descriptors``
(N, D), and optionally ``scales`` and ``scores``. Locations are converted to (x, y). A float ``image`` input
gets pixels in [0, 1] (the TF-Hub module's convention), a uint8 one 0..255.

Not supported: the SavedModels that the DELF repository's ``export_local_model.py`` writes (inputs
``input_image``/``input_scales``/``input_abs_thres``/``input_max_feature_num``, outputs receptive-field
``boxes`` and raw 1024-d ``features`` that still need the PCA shipped beside them): a clear error names the
inputs the model takes.

TensorFlow comes with the ``[tf]`` extra and is imported only when this backend is created. Nothing is ever
downloaded: download the model yourself and pass its directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from landmark.errors import ConfigError, InputError
from landmark.features.delf import as_rgb
from landmark.features.local import LocalExtractor, LocalFeatures, register_local_extractor
from landmark.normalize import l2_normalize

INPUTS = ("image", "score_threshold", "image_scales", "max_feature_num")
SIGNATURES = ("default", "serving_default")
# The official DELF pyramid and threshold (the attention of the official models is on another scale than ours).
DEFAULT_SCALES = (0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0)
DEFAULT_SCORE_THRESHOLD = 100.0


def import_tensorflow() -> Any:
    """The ``tensorflow`` module, or a clear error naming the extra to install."""
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError(
            "the delf-tf backend needs TensorFlow: pip install -c constraints.txt '.[tf]' "
            f"(import failed: {exc})"
        ) from exc
    return tf


def _serving_function(loaded: Any, model_dir: Path, signature: str) -> Any:
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    names = [signature] if signature else [s for s in SIGNATURES if s in signatures]
    if not names or names[0] not in signatures:
        wanted = signature or " or ".join(SIGNATURES)
        raise InputError(f"{model_dir}: SavedModel has no signature {wanted} (it has: {sorted(signatures)})")
    fn = signatures[names[0]]
    _, kwargs = fn.structured_input_signature
    missing = [name for name in INPUTS if name not in kwargs]
    if missing:
        raise InputError(
            f"{model_dir}: signature {names[0]!r} lacks the DELF inputs {missing} (it takes {sorted(kwargs)})"
        )
    return fn


@dataclass(frozen=True, eq=False)
class DelfTfExtractor:
    """An official DELF/DELG SavedModel behind the :class:`LocalExtractor` interface.

    Attributes:
        model_dir: directory of the SavedModel (``saved_model.pb`` + ``variables/``).
        scales: image pyramid passed as ``image_scales``.
        score_threshold: attention threshold passed to the model.
        max_features: ``max_feature_num``.
        signature: signature name ("" = ``default``, else ``serving_default``).
    """

    model_dir: Path
    scales: tuple[float, ...] = DEFAULT_SCALES
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    max_features: int = 1000
    signature: str = ""
    name: str = field(default="delf-tf", init=False)
    _fn: Any = field(default=None, init=False, repr=False)
    _loaded: Any = field(default=None, init=False, repr=False)  # keeps the signature's variables alive

    def __post_init__(self) -> None:
        model_dir = Path(self.model_dir)
        if not (model_dir / "saved_model.pb").is_file():
            raise FileNotFoundError(f"no TensorFlow SavedModel at {model_dir} (missing saved_model.pb)")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive, got {list(self.scales)}")
        if self.max_features < 1:
            raise ValueError(f"max_features must be >= 1, got {self.max_features}")
        tf = import_tensorflow()
        loaded = tf.saved_model.load(str(model_dir))
        object.__setattr__(self, "model_dir", model_dir)
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "_fn", _serving_function(loaded, model_dir, self.signature))
        object.__setattr__(self, "_loaded", loaded)

    def __call__(self, image: np.ndarray) -> LocalFeatures:
        tf = import_tensorflow()
        _, specs = self._fn.structured_input_signature
        rgb = as_rgb(image)
        # The TF-Hub DELF module takes float32 pixels in [0, 1]; models exported with a uint8 input take 0..255.
        values = {
            "image": rgb.astype(np.float32) / 255.0 if specs["image"].dtype.is_floating else rgb,
            "score_threshold": self.score_threshold,
            "image_scales": np.asarray(self.scales),
            "max_feature_num": self.max_features,
        }
        inputs = {name: tf.constant(values[name], dtype=specs[name].dtype) for name in INPUTS}
        outputs = self._fn(**inputs)
        for name in ("locations", "descriptors"):
            if name not in outputs:
                raise ValueError(
                    f"{self.model_dir}: the model returned no {name!r} (it gave {sorted(outputs)})"
                )
        yx = np.asarray(outputs["locations"].numpy(), np.float32).reshape(-1, 2)
        descriptors = np.asarray(outputs["descriptors"].numpy(), np.float32)
        n = len(yx)
        # Models that return no scales/scores: scale 1 and score 0, in the model's own order (by attention).
        scales = outputs["scales"].numpy() if "scales" in outputs else np.ones(n, np.float32)
        scores = outputs["scores"].numpy() if "scores" in outputs else np.zeros(n, np.float32)
        return LocalFeatures(
            locations=yx[:, ::-1].copy(),
            scales=np.asarray(scales, np.float32).reshape(n),
            scores=np.asarray(scores, np.float32).reshape(n),
            descriptors=l2_normalize(descriptors.reshape(n, -1)),
        )


def _as_scales(value: object) -> tuple[float, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(f"scales must be a list of numbers, got {value!r}")
    return tuple(float(s) for s in value)


@register_local_extractor("delf-tf")
def _create_delf_tf(**params: object) -> LocalExtractor:
    if "model_dir" not in params:
        raise ConfigError("the delf-tf backend needs model_dir=<a DELF/DELG TensorFlow SavedModel directory>")
    if "scales" in params:
        params["scales"] = _as_scales(params["scales"])
    params["model_dir"] = Path(str(params["model_dir"]))
    try:
        return DelfTfExtractor(**params)  # type: ignore[arg-type]  # checked at run time
    except TypeError as exc:
        raise ConfigError(f"bad parameters for the delf-tf backend: {exc}") from exc
