"""Revisited Oxford/Paris layout: ``<dir>/<name>/gnd_<name>.pkl`` and ``<dir>/<name>/jpg/<id>.jpg``.

The ground-truth pickle holds ``imlist`` (index image names), ``qimlist`` (query names) and ``gnd``, one dict
per query with ``bbx`` [x0, y0, x1, y1] and ``easy``/``hard``/``junk`` lists of integer indices into
``imlist``.
Here indices become ids. Pickles are only ever loaded through :class:`RestrictedUnpickler`, which refuses
every global except numpy's array-reconstruction helpers, so a crafted file cannot run code, and which bounds every
allocation a tiny file could ask for (arrays, byte strings) before it happens, so a crafted file cannot exhaust
memory either.
"""

from __future__ import annotations

import io
import math
import numbers
import pickle
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd

from landmark.errors import InputError
from landmark.data.atomic import atomic_path
from landmark.data.groundtruth import DatasetFormatError, LandmarkDataset, QueryTruth
from landmark.data.ids import is_safe_image_id, validate_image_id
from landmark.data.manifest import NO_LANDMARK, STATUS_OK, make_manifest, quarantined_row

# The largest array a ground-truth pickle may build (the real ones hold a few thousand small integers).
MAX_ARRAY_ELEMENTS = 50_000_000
MAX_ARRAY_BYTES = 512 * 2**20


class UnsafePickleError(DatasetFormatError):
    """A pickle that names a global outside the allow-list, or asks for an oversized allocation (it was refused
    before anything was executed or allocated)."""


def _check_array_size(shape: Any, dtype: Any, what: str) -> None:
    """Refuse an array of ``shape`` and ``dtype`` above :data:`MAX_ARRAY_ELEMENTS` or :data:`MAX_ARRAY_BYTES`.

    Raises:
        UnsafePickleError: too large, or a shape that is not a sequence of non-negative integers.
    """
    dims = (shape,) if isinstance(shape, numbers.Integral) else shape
    if not isinstance(dims, tuple | list) or not all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and int(d) >= 0 for d in dims
    ):
        raise UnsafePickleError(f"refusing {what} with shape {shape!r:.80}: not a tuple of sizes >= 0")
    try:
        kind = np.dtype(dtype)
    except (TypeError, ValueError) as exc:
        raise UnsafePickleError(f"refusing {what} with dtype {dtype!r:.80}: {exc}") from exc
    # a subarray dtype ('f8', (1000,)) multiplies the element count; Python ints cannot overflow
    elements = math.prod(int(d) for d in dims) * math.prod(kind.shape)
    size = math.prod(int(d) for d in dims) * kind.itemsize
    if elements > MAX_ARRAY_ELEMENTS or size > MAX_ARRAY_BYTES:
        raise UnsafePickleError(
            f"refusing {what} of shape {tuple(int(d) for d in dims)} and dtype {kind}: {elements} elements, "
            f"{size} bytes exceed the limits of {MAX_ARRAY_ELEMENTS} elements and {MAX_ARRAY_BYTES} bytes"
        )


def _bytes_from_pickle(*args: Any) -> bytes:
    """Protocol 0-2 ``bytes``: ``bytes()`` or ``bytes(text, "latin1")``; never ``bytes(n)`` (n zero bytes)."""
    if not args:
        return b""
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin-1")
    raise UnsafePickleError(f"refusing bytes{args!r:.80}: only bytes() or bytes(str, 'latin1') are allowed")


def _bytearray_from_pickle(*args: Any) -> bytearray:
    return bytearray(_bytes_from_pickle(*args))


def _encode_from_pickle(text: Any, encoding: Any = "latin1") -> bytes:
    """Protocol 0-2 ``_codecs.encode(text, "latin1")``, the way bytes are pickled there; other codecs refused."""
    return _bytes_from_pickle(text, encoding)


def _ndarray_from_pickle(
    shape: Any,
    dtype: Any = float,
    buffer: Any = None,
    offset: int = 0,
    strides: Any = None,
    order: Any = None,
) -> np.ndarray:
    """``numpy.ndarray(shape, dtype, ...)`` called by a pickle: size-checked before numpy allocates."""
    _check_array_size(shape, dtype, "numpy.ndarray")
    return np.ndarray(shape, dtype, buffer, offset, strides, order)


def _reconstruct_from_pickle(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` with the empty shape numpy itself pickles (the data comes in __setstate__)."""
    if subtype is not np.ndarray and subtype is not _ndarray_from_pickle:
        raise UnsafePickleError(f"refusing to reconstruct array subtype {subtype!r}")
    _check_array_size((0,), dtype, "an array")
    return np.ndarray.__new__(np.ndarray, (0,), dtype)


# numpy's own scalar constructor, whatever its module path
_NUMPY_SCALAR = cast(Callable[..., Any], np.float64(0).__reduce__()[0])


def _scalar_from_pickle(dtype: Any, *args: Any) -> Any:
    """numpy's ``scalar(dtype, data)``: the dtype's item size is bounded like an array of one element."""
    _check_array_size((1,), dtype, "a numpy scalar")
    return _NUMPY_SCALAR(dtype, *args)


def _frombuffer_from_pickle(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's protocol-5 ``_frombuffer``: a view of bytes the pickle holds, size-checked like every array."""
    _check_array_size(shape, dtype, "an array")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _check_array_state(state: Any) -> None:
    """Bound ``ndarray.__setstate__``'s shape before numpy allocates it (an object array of any shape is
    allocated before its list of items is checked)."""
    if isinstance(state, tuple) and len(state) in (4, 5):
        shape, dtype = state[-4], state[-3]
        _check_array_size(shape, dtype, "an array state")


# Globals a ground-truth pickle may name: builtin containers and numpy arrays/scalars/dtypes (numpy 1 and 2
# module paths). Lists, dicts, tuples, str, int, float, bool and None need no global at all. Constructors that
# could allocate arbitrary amounts from a tiny file (bytes(n), an array of any shape) are replaced by wrappers.
_SAFE_BUILTINS: dict[str, Any] = {
    "set": set,
    "frozenset": frozenset,
    "complex": complex,
    "bytes": _bytes_from_pickle,
    "bytearray": _bytearray_from_pickle,
}
_REPLACED_GLOBALS: dict[tuple[str, str], Any] = {
    **{
        (module, name): value
        for module in ("builtins", "__builtin__")
        for name, value in _SAFE_BUILTINS.items()
    },
    ("_codecs", "encode"): _encode_from_pickle,
    ("numpy", "ndarray"): _ndarray_from_pickle,
    **{
        (module, "_reconstruct"): _reconstruct_from_pickle
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{
        (module, "scalar"): _scalar_from_pickle
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{
        (module, "_frombuffer"): _frombuffer_from_pickle
        for module in ("numpy.core.numeric", "numpy._core.numeric")
    },
}
_NUMPY_GLOBALS = frozenset({("numpy", "dtype")})


_LOAD_BUILD: Callable[[Any], None] = pickle._Unpickler.dispatch[pickle.BUILD[0]]


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that resolves only builtin containers and numpy array/scalar/dtype reconstruction.

    It is the pure-Python unpickler (ground-truth files are small) because two of its opcodes need guards the C
    one cannot take: BUILD, which hands an array its shape (numpy allocates that before checking the data), and
    BYTEARRAY8, which allocates the size the file declares before reading it.
    """

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)
    # the pure-Python unpickler's working state (set by load(); not in the type stubs)
    stack: list[Any]
    read: Callable[[int], bytes]
    append: Callable[[Any], None]

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self._size = len(file.getbuffer())

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REPLACED_GLOBALS:
            return _REPLACED_GLOBALS[module, name]
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load global {module}.{name}: ground-truth pickles may only contain lists, "
            "dicts, strings, numbers and numpy arrays"
        )

    def _load_build(self) -> None:
        if isinstance(self.stack[-2], np.ndarray):
            _check_array_state(self.stack[-1])
        _LOAD_BUILD(self)

    def _load_bytearray8(self) -> None:
        declared = int.from_bytes(self.read(8), "little")
        if declared > self._size:
            raise UnsafePickleError(
                f"refusing a bytearray of {declared} bytes declared in a {self._size}-byte file"
            )
        self.append(bytearray(self.read(declared)))

    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8


def load_restricted_pickle(path: str | Path) -> Any:
    """Load a pickle file through :class:`RestrictedUnpickler`.

    Raises:
        UnsafePickleError: the pickle names a disallowed global (e.g. ``os.system``), or asks for an array or
            byte string above the limits (:data:`MAX_ARRAY_ELEMENTS`, :data:`MAX_ARRAY_BYTES`); nothing was
            executed or allocated.
        DatasetFormatError: the file is not a valid pickle.
    """
    data = Path(path).read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,  # an unknown opcode (the pure-Python unpickler's dispatch table)
        struct.error,  # a truncated opcode argument
        OverflowError,
        RecursionError,
    ) as exc:
        raise DatasetFormatError(
            f"{path} is not a valid ground-truth pickle: {type(exc).__name__}: {exc}"
        ) from exc


def _ids(values: Any, key: str, path: Path) -> tuple[str, ...]:
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, list | tuple):
        raise DatasetFormatError(
            f"{path}: {key!r} must be a list of image names, got {type(values).__name__}"
        )
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise DatasetFormatError(f"{path}: {key}[{i}] must be a string, got {value!r}")
    return tuple(values)


def _refuse_nested(values: Any, where: str, path: Path) -> None:
    """A flat list is as long as the file allows; nested lists sharing one list through the pickle memo are
    not (ten levels of ten references to one list are 10**10 elements for ``np.asarray``): refuse them."""
    if isinstance(values, list | tuple) and any(
        isinstance(v, list | tuple | dict | np.ndarray) for v in values
    ):
        raise DatasetFormatError(f"{path}: {where} must be a flat list, got nested sequences")


def _indices_to_ids(values: Any, where: str, db_ids: Sequence[str], path: Path) -> tuple[str, ...]:
    _refuse_nested(values, where, path)
    array = np.asarray(values if values is not None else [])
    if array.ndim != 1 and array.size:
        raise DatasetFormatError(f"{path}: {where} must be a flat list of indices, got shape {array.shape}")
    ids = []
    for j, value in enumerate(array.reshape(-1).tolist()):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise DatasetFormatError(f"{path}: {where}[{j}] = {value!r} is not an integer index")
        index = int(value)
        if not 0 <= index < len(db_ids):
            raise DatasetFormatError(
                f"{path}: {where}[{j}] = {index} is out of range for imlist of {len(db_ids)} images"
            )
        ids.append(db_ids[index])
    return tuple(ids)


def _bbox(value: Any, where: str, path: Path) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    _refuse_nested(value, where, path)
    box = np.asarray(value, dtype=np.float64).reshape(-1)
    if box.shape != (4,):
        raise DatasetFormatError(f"{path}: {where} must be [x0, y0, x1, y1], got {value!r}")
    return float(box[0]), float(box[1]), float(box[2]), float(box[3])


def read_gnd(pkl_path: str | Path) -> tuple[tuple[str, ...], tuple[str, ...], tuple[QueryTruth, ...]]:
    """Read a ``gnd_<name>.pkl`` ground-truth file, turning indices into image ids.

    Returns:
        (db_ids, query_ids, queries): index image ids (imlist), query ids (qimlist), and one
        :class:`QueryTruth` per query in qimlist order.

    Raises:
        UnsafePickleError: the pickle tries to load a disallowed global.
        DatasetFormatError: missing keys, wrong types, duplicate index names, or out-of-range indices.
    """
    path = Path(pkl_path)
    content = load_restricted_pickle(path)
    if not isinstance(content, dict):
        raise DatasetFormatError(
            f"{path}: expected a dict with imlist, qimlist, gnd; got {type(content).__name__}"
        )
    missing = [key for key in ("imlist", "qimlist", "gnd") if key not in content]
    if missing:
        raise DatasetFormatError(f"{path}: missing keys {missing}")
    db_ids = _ids(content["imlist"], "imlist", path)
    query_ids = _ids(content["qimlist"], "qimlist", path)
    if len(set(db_ids)) != len(db_ids):
        duplicates = sorted(i for i, n in Counter(db_ids).items() if n > 1)[:5]  # linear: imlist may be huge
        raise DatasetFormatError(
            f"{path}: imlist has duplicate names {duplicates}; indices would be ambiguous"
        )
    gnd = content["gnd"]
    if not isinstance(gnd, list | tuple) or len(gnd) != len(query_ids):
        size = len(gnd) if isinstance(gnd, list | tuple) else type(gnd).__name__
        raise DatasetFormatError(
            f"{path}: gnd must be a list with one entry per query ({len(query_ids)}), got {size}"
        )
    queries = []
    for i, (query_id, entry) in enumerate(zip(query_ids, gnd, strict=True)):
        if not isinstance(entry, dict):
            raise DatasetFormatError(f"{path}: gnd[{i}] must be a dict, got {type(entry).__name__}")
        lists = {
            key: _indices_to_ids(entry.get(key), f"gnd[{i}][{key!r}]", db_ids, path)
            for key in ("easy", "hard", "junk")
        }
        bbox = _bbox(entry.get("bbx"), f"gnd[{i}]['bbx']", path)
        try:
            queries.append(QueryTruth(query_id, lists["easy"], lists["hard"], lists["junk"], bbox))
        except ValueError as exc:
            raise DatasetFormatError(f"{path}: gnd[{i}]: {exc}") from exc
    return db_ids, query_ids, tuple(queries)


def write_gnd(pkl_path: str | Path, db_ids: Sequence[str], queries: Sequence[QueryTruth]) -> Path:
    """Write a ``gnd_<name>.pkl`` file (plain lists and dicts, pickle protocol 4), atomically.

    A query whose ``bbox`` is None is written without a ``bbx`` key.

    Raises:
        ValueError: duplicate db ids, or a query referring to an id that is not in ``db_ids``.
    """
    db_list = [str(i) for i in db_ids]
    position = {image_id: k for k, image_id in enumerate(db_list)}
    if len(position) != len(db_list):
        raise InputError("db_ids has duplicates; indices would be ambiguous")
    gnd = []
    for truth in queries:
        entry: dict[str, Any] = {}
        if truth.bbox is not None:
            entry["bbx"] = [float(v) for v in truth.bbox]
        for key in ("easy", "hard", "junk"):
            unknown = [i for i in getattr(truth, key) if i not in position]
            if unknown:
                raise InputError(f"query {truth.query_id!r}: {key} ids not in db_ids: {unknown[:5]}")
            entry[key] = [position[i] for i in getattr(truth, key)]
        gnd.append(entry)
    content = {"imlist": db_list, "qimlist": [t.query_id for t in queries], "gnd": gnd}
    path = Path(pkl_path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(pickle.dumps(content, protocol=4))
    return path


def gnd_path(root: str | Path, name: str) -> Path:
    """``<root>/<name>/gnd_<name>.pkl``; ``name`` must be a safe file name."""
    validate_image_id(name)
    return Path(root) / name / f"gnd_{name}.pkl"


def image_uri(image_id: str) -> str:
    """Manifest uri of a revisitop image, relative to ``<root>/<name>``: ``jpg/<id>.jpg``."""
    return f"jpg/{image_id}.jpg"


def _split_manifest(
    ids: Sequence[str], boxes: Sequence[tuple[float, float, float, float] | None]
) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for image_id, box in zip(ids, boxes, strict=True):
        if not is_safe_image_id(image_id):
            rows.append(quarantined_row(image_id, "unsafe_id", repr(image_id)))
            continue
        if image_id in seen:
            rows.append(quarantined_row(image_id, "duplicate_id", repr(image_id)))
            continue
        seen.add(image_id)
        row: dict[str, Any] = {"image_id": image_id, "landmark_id": NO_LANDMARK, "uri": image_uri(image_id)}
        if box is not None:
            row.update(bbox_x0=box[0], bbox_y0=box[1], bbox_x1=box[2], bbox_y1=box[3])
        rows.append(row)
    return make_manifest(rows)


def read_revisitop(root: str | Path, name: str) -> LandmarkDataset:
    """Read a revisited Oxford/Paris dataset at ``<root>/<name>``.

    Returns:
        A dataset rooted at ``<root>/<name>`` with split "index" (imlist) and "test" (qimlist, bbox columns
        set from bbx), landmark_id -1, uris ``jpg/<id>.jpg``, and ``retrieval`` with the query ground truth.

    Raises:
        FileNotFoundError: no ``gnd_<name>.pkl``.
        DatasetFormatError: see :func:`read_gnd`.
    """
    path = gnd_path(root, name)
    if not path.is_file():
        raise FileNotFoundError(f"no revisitop ground truth at {path}")
    db_ids, query_ids, queries = read_gnd(path)
    manifests = {
        "index": _split_manifest(db_ids, [None] * len(db_ids)),
        "test": _split_manifest(query_ids, [q.bbox for q in queries]),
    }
    return LandmarkDataset(root=path.parent, manifests=manifests, retrieval=queries)


def write_revisitop(dataset: LandmarkDataset, root: str | Path, name: str) -> Path:
    """Write ``<root>/<name>/gnd_<name>.pkl`` from a dataset's "index" ok rows and its ``retrieval``.

    imlist = ok image ids of the "index" split in manifest order; qimlist and bbx come from ``retrieval``.
    Images are not copied (whoever holds the pixels writes ``<root>/<name>/jpg/<id>.jpg``).

    Returns:
        The path of the pickle written.

    Raises:
        KeyError: the dataset has no "index" split.
        ValueError: ground truth referring to ids missing from the index split.
    """
    index = dataset.manifest("index")
    db_ids = list(index.loc[index["status"] == STATUS_OK, "image_id"])
    return write_gnd(gnd_path(root, name), db_ids, dataset.retrieval)


def find_gnd_files(directory: str | Path) -> list[Path]:
    """``gnd_*.pkl`` files directly in ``directory``, sorted."""
    return sorted(Path(directory).glob("gnd_*.pkl"))
