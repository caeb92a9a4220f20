"""Where ingestion finds images: a GLDv2-style CSV of URLs, a local dataset folder, or an S3 prefix.

Each source is listed into :class:`SourceItem` rows in a stable order. Rows that are bad before anything is
fetched (a malformed CSV line, an unsafe id, a URL that is not http(s)) carry a quarantine ``reason`` and are
never fetched. Fetching itself lives in :mod:`landmark.data.fetch`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from landmark.data.csvtable import read_csv_table
from landmark.data.ids import UnsafeIdError, validate_image_id
from landmark.data.manifest import NO_LANDMARK, STATUS_OK, format_reason
from landmark.errors import LandmarkError

if TYPE_CHECKING:
    from landmark.platform.storage import ObjectStore

SourceKind = Literal["csv", "folder", "s3", "synth"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("csv", "folder", "s3", "synth")
SYNTH_SOURCE = "synth"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")

_LABEL = re.compile(r"^[0-9]{1,18}$")


class SourceError(LandmarkError, ValueError):
    """A source that cannot be listed at all (the message names it)."""


@dataclass(frozen=True)
class SourceItem:
    """One image a source offers.

    Attributes:
        image_id: the id as the source gives it (validated: unsafe ids carry a reason instead).
        url: where the image comes from, recorded in the manifest (``https://...``, ``s3://...``,
            ``synth://...``, ``file://...``); together with the id it identifies the item across runs.
        landmark_id: the label, -1 when the source has none.
        location: what to read when it differs from ``url`` (a local file path).
        reason: a quarantine reason known before fetching ("" = fetch it).
    """

    image_id: str
    url: str
    landmark_id: int = NO_LANDMARK
    location: str = ""
    reason: str = ""


def detect_source_kind(source: str) -> SourceKind:
    """Tell what ``source`` names: ``"synth"``, an ``s3://`` prefix, a ``.csv`` file, or a directory.

    Raises:
        SourceError: none of these (e.g. a missing path).
    """
    if source == SYNTH_SOURCE:
        return "synth"
    if source.startswith("s3://"):
        return "s3"
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".csv":
        return "csv"
    if path.is_dir():
        return "folder"
    raise SourceError(
        f"cannot tell what source {source!r} is: expected 'synth', an s3://bucket/prefix, "
        "an existing .csv file of id,url[,landmark_id], or an existing dataset directory"
    )


def _id_reason(image_id: str) -> str:
    try:
        validate_image_id(image_id)
    except UnsafeIdError:
        return format_reason("unsafe_id", repr(image_id))
    return ""


def _url_reason(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return format_reason("bad_url", f"{url!r} is not an http(s) URL")
    return ""


def _label(value: str) -> int | None:
    """A CSV landmark_id: "" -> -1 (unlabelled), digits -> int, anything else -> None (malformed)."""
    if value == "":
        return NO_LANDMARK
    return int(value) if _LABEL.match(value) else None


def csv_items(path: str | Path) -> list[SourceItem]:
    """Items of a GLDv2-style CSV with columns ``id,url`` and optionally ``landmark_id``, in file order.

    Raises:
        FileNotFoundError: no such file.
        DatasetFormatError: an empty file or a header without ``id`` and ``url``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source CSV {path} not found")
    table = read_csv_table(path, required=("id", "url"))
    labels = table.columns.get("landmark_id")
    items: list[SourceItem] = []
    for k, (image_id, url, line) in enumerate(
        zip(table.columns["id"], table.columns["url"], table.lines, strict=True)
    ):
        raw_label = labels[k] if labels is not None else ""
        label = _label(raw_label)
        reason = _id_reason(image_id) or _url_reason(url)
        if not reason and label is None:
            reason = format_reason(
                "malformed_row", f"line {line}: landmark_id {raw_label!r} is not a non-negative integer"
            )
        items.append(
            SourceItem(
                image_id=image_id, url=url, landmark_id=NO_LANDMARK if label is None else label, reason=reason
            )
        )
    id_col = table.header.index("id")
    for line, fields in table.malformed:
        image_id = fields[id_col].strip() if len(fields) > id_col else ""
        detail = f"line {line}: expected {len(table.header)} fields, got {len(fields)}"
        items.append(SourceItem(image_id=image_id, url="", reason=format_reason("malformed_row", detail)))
    return items


def folder_items(root: str | Path, split: str = "train") -> list[SourceItem]:
    """Items of one split of a local dataset in any readable format (GLDv2 layout, folder per landmark, ...).

    The recorded url is the dataset's own url column when it has one (GLDv2 CSVs, ``synth://`` ids of the
    synthetic world), else the file's ``file://`` URI. Rows the reader quarantined keep their reason.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        DatasetFormatError: the format cannot be read.
        KeyError: the dataset has no such split.
    """
    from landmark.data.formats import read_dataset
    from landmark.data.manifest import resolve_uri

    dataset = read_dataset(Path(root), "auto")
    frame = dataset.manifest(split)
    items: list[SourceItem] = []
    columns = zip(
        frame["image_id"],
        frame["landmark_id"].tolist(),
        frame["uri"],
        frame["url"],
        frame["status"],
        frame["reason"],
        strict=True,
    )
    for image_id, label, uri, url, status, reason in columns:
        path = resolve_uri(dataset.root, str(uri)).resolve() if status == STATUS_OK else None
        recorded = str(url) or (path.as_uri() if path is not None else "")
        items.append(
            SourceItem(
                image_id=str(image_id),
                url=recorded,
                landmark_id=int(label),
                location=str(path) if path is not None else "",
                reason="" if status == STATUS_OK else str(reason),
            )
        )
    return items


def s3_items(store: ObjectStore, prefix: str) -> list[SourceItem]:
    """Images under ``prefix`` of the store's bucket, in key order.

    The image id is the file stem; the label is the name of the folder directly above the file when it is a
    non-negative integer (``<prefix>/<landmark_id>/<id>.jpg``), else -1. Keys without an image suffix are
    skipped.
    """
    items: list[SourceItem] = []
    for info in store.list(prefix):
        key = PurePosixPath(info.key)
        if key.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        parent = key.parent.name
        label = int(parent) if _LABEL.match(parent) else NO_LANDMARK
        image_id = key.stem
        items.append(
            SourceItem(
                image_id=image_id, url=store.uri(info.key), landmark_id=label, reason=_id_reason(image_id)
            )
        )
    return items
