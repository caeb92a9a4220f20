"""Revisited Oxford/Paris ground truth: id conversion, validation, round trips, and refusing unsafe pickles."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from landmark.data.groundtruth import DatasetFormatError, LandmarkDataset, QueryTruth
from landmark.data.manifest import make_manifest
from landmark.data.revisitop import (
    UnsafePickleError,
    gnd_path,
    load_restricted_pickle,
    read_gnd,
    read_revisitop,
    write_gnd,
    write_revisitop,
)

DB = ["all_souls_000001", "all_souls_000002", "ashmolean_000003", "bodleian_000004", "radcliffe_000005"]


def original_style_gnd() -> dict[str, Any]:
    """A gnd dict shaped like the published files: numpy index arrays and numpy boxes."""
    return {
        "imlist": list(DB),
        "qimlist": ["all_souls_000001", "bodleian_000004"],
        "gnd": [
            {
                "bbx": np.array([10.5, 20.0, 300.0, 400.25]),
                "easy": np.array([1], dtype=np.int64),
                "hard": np.array([2], dtype=np.int32),
                "junk": np.array([], dtype=np.int64),
            },
            {"bbx": [1.0, 2.0, 3.0, 4.0], "easy": [], "hard": [0, 4], "junk": [2]},
        ],
    }


def dump(path: Path, content: object, protocol: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_read_gnd_turns_indices_into_ids(tmp_path: Path, protocol: int) -> None:
    db_ids, query_ids, queries = read_gnd(dump(tmp_path / "gnd_x.pkl", original_style_gnd(), protocol))
    assert db_ids == tuple(DB)
    assert query_ids == ("all_souls_000001", "bodleian_000004")
    assert queries == (
        QueryTruth(
            "all_souls_000001", ("all_souls_000002",), ("ashmolean_000003",), (), (10.5, 20.0, 300.0, 400.25)
        ),
        QueryTruth(
            "bodleian_000004",
            (),
            ("all_souls_000001", "radcliffe_000005"),
            ("ashmolean_000003",),
            (1, 2, 3, 4),
        ),
    )


def test_write_then_read_gnd(tmp_path: Path) -> None:
    queries = [
        QueryTruth("q1", ("all_souls_000002",), (), ("bodleian_000004",), (0.0, 0.0, 5.0, 6.0)),
        QueryTruth("q2", (), ("radcliffe_000005", "all_souls_000001"), ()),
    ]
    path = write_gnd(tmp_path / "gnd_t.pkl", DB, queries)
    assert read_gnd(path) == (tuple(DB), ("q1", "q2"), tuple(queries))
    raw = pickle.loads(path.read_bytes())
    assert raw["gnd"][1] == {"easy": [], "hard": [4, 0], "junk": []}  # indices, no bbx when the box is None
    with pytest.raises(ValueError, match="not in db_ids"):
        write_gnd(tmp_path / "gnd_u.pkl", DB, [QueryTruth("q1", ("missing",), (), ())])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda g: g["gnd"][0].update(hard=np.array([5])),
            r"gnd\[0\]\['hard'\]\[0\] = 5 is out of range for imlist",
        ),
        (lambda g: g["gnd"][1].update(junk=[-1]), "out of range"),
        (lambda g: g["gnd"][1].update(easy=[1.5]), "not an integer index"),
        (lambda g: g["gnd"].pop(), "one entry per query"),
        (lambda g: g.pop("qimlist"), r"missing keys \['qimlist'\]"),
        (lambda g: g["imlist"].append("all_souls_000001"), "duplicate names"),
        (lambda g: g["imlist"].append(7), r"imlist\[5\] must be a string"),
        (lambda g: g["gnd"][0].update(bbx=[1, 2, 3]), r"\[x0, y0, x1, y1\]"),
        (lambda g: g["gnd"][0].update(bbx=[5, 2, 3, 9]), "bbox"),
    ],
)
def test_read_gnd_rejects_bad_ground_truth(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    content: dict[str, Any] = original_style_gnd()
    change(content)
    with pytest.raises(DatasetFormatError, match=message):
        read_gnd(dump(tmp_path / "gnd_x.pkl", content))


def test_not_a_pickle_or_not_a_dict(tmp_path: Path) -> None:
    bad = tmp_path / "gnd_bad.pkl"
    bad.write_bytes(b"this is not a pickle")
    with pytest.raises(DatasetFormatError, match="not a valid ground-truth pickle"):
        read_gnd(bad)
    with pytest.raises(DatasetFormatError, match="expected a dict"):
        read_gnd(dump(tmp_path / "gnd_list.pkl", [1, 2]))


class RunsShell:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


class RunsSubprocess:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[list[str]]]:
        return subprocess.call, (["touch", str(self.marker)],)


class CallsEval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return eval, (f"open({str(self.marker)!r}, 'w')",)


@pytest.mark.parametrize("payload", [RunsShell, RunsSubprocess, CallsEval])
@pytest.mark.parametrize("protocol", [0, 4])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, payload: type, protocol: int) -> None:
    marker = tmp_path / "pwned"
    content = {"imlist": [], "qimlist": [], "gnd": [], "x": payload(marker)}
    path = dump(tmp_path / "evil" / "gnd_evil.pkl", content, protocol)
    with pytest.raises(UnsafePickleError, match=r"refusing to load global .*(system|call|eval)") as info:
        read_gnd(path)
    assert "gnd_evil.pkl" in str(info.value)
    assert isinstance(info.value, DatasetFormatError)
    assert not marker.exists()
    with pytest.raises(UnsafePickleError):
        read_revisitop(tmp_path, "evil")
    assert not marker.exists()


def test_restricted_pickle_allows_plain_data(tmp_path: Path) -> None:
    content = {"a": [1, 2.5, "x", None, True], "b": (1, 2), "c": {1, 2}, "d": np.arange(4, dtype=np.uint16)}
    loaded = load_restricted_pickle(dump(tmp_path / "ok.pkl", content, protocol=2))
    assert loaded["a"] == [1, 2.5, "x", None, True]
    assert loaded["c"] == {1, 2}
    np.testing.assert_array_equal(loaded["d"], np.arange(4))
    assert loaded["d"].dtype == np.uint16


def test_read_revisitop_builds_index_and_test_manifests(tmp_path: Path) -> None:
    dump(gnd_path(tmp_path, "roxford5k"), original_style_gnd())
    data = read_revisitop(tmp_path, "roxford5k")
    assert data.root == tmp_path / "roxford5k"
    index, test = data.manifest("index"), data.manifest("test")
    assert list(index["image_id"]) == DB
    assert list(index["uri"]) == [f"jpg/{i}.jpg" for i in DB]
    assert set(index["landmark_id"]) == {-1}
    assert index[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].isna().all().all()
    assert list(test["image_id"]) == ["all_souls_000001", "bodleian_000004"]
    assert test[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].iloc[0].tolist() == [10.5, 20.0, 300.0, 400.25]
    assert (
        data.image_path("test", "bodleian_000004") == tmp_path / "roxford5k" / "jpg" / "bodleian_000004.jpg"
    )
    assert [q.query_id for q in data.retrieval] == ["all_souls_000001", "bodleian_000004"]
    with pytest.raises(FileNotFoundError, match=r"gnd_rparis6k\.pkl"):
        read_revisitop(tmp_path, "rparis6k")


def test_unsafe_names_in_imlist_are_quarantined(tmp_path: Path) -> None:
    content = original_style_gnd()
    content["imlist"] = [*DB, "../../etc/passwd"]
    dump(gnd_path(tmp_path, "r"), content)
    index = read_revisitop(tmp_path, "r").manifest("index")
    assert index.loc[5, "status"] == "quarantined"
    assert index.loc[5, "reason"] == "unsafe_id: '../../etc/passwd'"
    assert index.loc[5, "uri"] == ""


def test_revisitop_round_trip(tmp_path: Path) -> None:
    dump(gnd_path(tmp_path / "a", "rpar"), original_style_gnd())
    source = read_revisitop(tmp_path / "a", "rpar")
    write_revisitop(source, tmp_path / "b", "rpar")
    back = read_revisitop(tmp_path / "b", "rpar")
    for split in ("index", "test"):
        pd.testing.assert_frame_equal(back.manifest(split), source.manifest(split))
    assert back.retrieval == source.retrieval


def test_write_revisitop_from_other_dataset(tmp_path: Path) -> None:
    index = make_manifest([{"image_id": i, "uri": f"somewhere/{i}.png"} for i in DB])
    truth = (QueryTruth("query_1", ("ashmolean_000003",), (), (), (0.0, 0.0, 8.0, 8.0)),)
    data = LandmarkDataset(root=tmp_path, manifests={"index": index}, retrieval=truth)
    write_revisitop(data, tmp_path, "mine")
    back = read_revisitop(tmp_path, "mine")
    assert back.ok_ids("index") == tuple(DB)
    assert back.ok_ids("test") == ("query_1",)
    assert back.retrieval == truth


class HugeBytes:
    def __reduce__(self) -> tuple[object, tuple[int]]:
        return bytes, (10**12,)


class HugeArray:
    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        reconstruct = np.arange(1).__reduce__()[0]  # numpy's own _reconstruct, whatever its module path
        return reconstruct, (np.ndarray, (10**6, 10**6), b"b")


def test_allocation_bombs_in_allowed_globals_are_defused(tmp_path: Path) -> None:
    with pytest.raises(UnsafePickleError, match="refusing bytes"):
        load_restricted_pickle(dump(tmp_path / "bytes.pkl", {"x": HugeBytes()}, protocol=2))
    loaded = load_restricted_pickle(dump(tmp_path / "array.pkl", {"x": HugeArray()}, protocol=4))
    assert loaded["x"].shape == (0,)


class Reduces:
    """Pickles as ``fn(*args)`` (then ``__setstate__(state)`` when a state is given): a crafted payload."""

    def __init__(self, fn: object, args: tuple[object, ...], state: object = None) -> None:
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self) -> tuple[object, ...]:
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


_RECONSTRUCT = np.arange(1).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
ALLOCATION_BOMBS: dict[str, bytes] = {
    # the 265-byte file: numpy.ndarray((300000000,), dtype('O')) would allocate 2.4 GB
    "ndarray": pickle.dumps(Reduces(np.ndarray, ((300_000_000,), np.dtype("O"))), protocol=2),
    # an empty array given a huge shape by __setstate__: numpy allocates object arrays before checking the items
    "array_state": pickle.dumps(
        Reduces(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (300_000_000,), np.dtype("O"), False, [1, 2])),
        protocol=2,
    ),
    # few elements of a huge subarray dtype
    "subarray_dtype": pickle.dumps(Reduces(np.ndarray, ((4,), np.dtype(("f8", (50_000_000,))))), protocol=4),
    "void_scalar": pickle.dumps(Reduces(_SCALAR, (np.dtype("V1000000000"), b"")), protocol=4),
    # BYTEARRAY8 declaring 3 GiB: the unpickler would allocate it before reading
    "bytearray8": b"\x80\x05\x96" + (3 * 2**30).to_bytes(8, "little") + b".",
}
CHILD = """
import json, resource, sys
from landmark.data.revisitop import UnsafePickleError, load_restricted_pickle
vm = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, vm + 2**30))  # a bomb that gets through fails, not the host
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = {}
for path in sys.argv[1:]:
    try:
        load_restricted_pickle(path)
        results[path] = "loaded"
    except UnsafePickleError as exc:
        results[path] = f"refused: {exc}"
    except Exception as exc:
        results[path] = f"{type(exc).__name__}: {exc}"
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
print(json.dumps({"results": results, "grown_kib": grown}))
"""


def test_allocation_bombs_are_refused_before_allocating(tmp_path: Path) -> None:
    paths = {name: tmp_path / f"gnd_{name}.pkl" for name in ALLOCATION_BOMBS}
    for name, data in ALLOCATION_BOMBS.items():
        assert len(data) < 400, f"{name}: {len(data)} bytes"
        paths[name].write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, paths.values())], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    for name, path in paths.items():
        outcome = report["results"][str(path)]
        assert outcome.startswith("refused: ") and str(path) in outcome, f"{name}: {outcome}"
    assert "300000000 elements" in report["results"][str(paths["ndarray"])]
    assert "declared in a" in report["results"][str(paths["bytearray8"])]
    assert report["grown_kib"] < 50_000, f"memory grew by {report['grown_kib']} KiB while refusing"


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_arrays_within_the_limits_still_load(tmp_path: Path, protocol: int) -> None:
    content = {
        "easy": np.arange(1000, dtype=np.int64),
        "bbx": np.array([1.0, 2.0, 3.0, 4.0]),
        "s": np.int32(7),
    }
    loaded = load_restricted_pickle(dump(tmp_path / "ok.pkl", content, protocol=protocol))
    np.testing.assert_array_equal(loaded["easy"], np.arange(1000))
    assert loaded["easy"].dtype == np.int64 and loaded["s"] == 7 and loaded["bbx"].shape == (4,)


def test_nested_index_lists_are_refused_before_np_asarray(tmp_path: Path) -> None:
    shared: list[object] = [1]
    for _ in range(9):  # ten levels of ten references to one list: 10**9 elements for np.asarray
        shared = [shared] * 10
    content = original_style_gnd()
    content["gnd"][1]["easy"] = shared
    path = dump(tmp_path / "gnd_nested.pkl", content)
    assert path.stat().st_size < 2000
    with pytest.raises(DatasetFormatError, match=r"gnd\[1\]\['easy'\] must be a flat list"):
        read_gnd(path)
