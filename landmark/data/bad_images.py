"""Images a per-image stage could not decode: skipped, recorded next to the stage's output, and bounded.

``extract``, ``local`` and ``train`` treat an undecodable image the way ingestion does: the image is skipped, the
stage goes on, and the image is recorded with its reason code (:data:`landmark.data.images.DECODE_REASONS`) in a
``quarantined.json`` next to what the stage wrote (``<features>/<split>/``, ``<local>/<split>/``, the model
directory). The file exists exactly when the output has skipped images. A stage fails only when the share of
skipped images of a split passes its bound (``extract.max_bad_share``, ``local.max_bad_share``,
``train.max_bad_share``); it writes its outputs and the record first, so the good images' work is kept.

Readers of those outputs (``index``, ``evaluate``, ``clean``) subtract :func:`quarantined_ids` from the images
they load, so a skipped image is left out with a note instead of failing as "no features".
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from landmark.data.atomic import atomic_path
from landmark.data.groundtruth import LandmarkDataset
from landmark.data.images import ImageDecodeError
from landmark.data.manifest import STATUS_OK, STATUS_QUARANTINED, format_reason, make_manifest
from landmark.errors import InputError, LandmarkError

QUARANTINE_FILE = "quarantined.json"
SHOWN_FILES = 3  # files named in the one-line error


class TooManyBadImagesError(LandmarkError, ValueError):
    """The share of undecodable images of a split passed the stage's configured bound."""


@dataclass(frozen=True)
class BadImage:
    """One image a stage skipped.

    Attributes:
        image_id: the image's id in its split.
        split: the split it belongs to.
        reason: the decode reason code, e.g. "truncated".
        file: the file that failed to decode.
        detail: what went wrong, in words.
    """

    image_id: str
    split: str
    reason: str
    file: str
    detail: str

    @classmethod
    def from_error(cls, image_id: str, split: str, error: ImageDecodeError) -> BadImage:
        """The record of ``error``, raised while decoding image ``image_id`` of ``split``."""
        return cls(image_id, split, error.reason, error.name, error.detail)


def reason_counts(bad: Iterable[BadImage]) -> dict[str, int]:
    """Reason code -> number of images, codes sorted."""
    return dict(sorted(Counter(b.reason for b in bad).items()))


def bad_share_message(stage: str, key: str, bound: float, bad: Sequence[BadImage], total: int) -> str:
    """One line: the stage, how many images failed, the share against the bound ``key``, the first files."""
    share = len(bad) / total if total else 0.0
    shown = ", ".join(f"{b.file} ({b.reason})" for b in bad[:SHOWN_FILES])
    more = f" and {len(bad) - SHOWN_FILES} more" if len(bad) > SHOWN_FILES else ""
    return (
        f"{stage}: {len(bad)} of {total} images could not be decoded, share {share:.4g} > {key}={bound:g}: "
        f"{shown}{more}"
    )


def check_bad_share(stage: str, key: str, bound: float, bad: Sequence[BadImage], total: int) -> None:
    """Fail when more than ``bound`` of ``total`` images are bad.

    Args:
        stage: the stage (and split) named in the message, e.g. "extract train".
        key: the params key of the bound, e.g. "extract.max_bad_share".
        bound: the largest accepted share of bad images, in [0, 1].
        bad: the skipped images, first skipped first.
        total: images the stage was asked to process (bad ones included).

    Raises:
        TooManyBadImagesError: ``len(bad) / total > bound``, with :func:`bad_share_message`.
    """
    if total and len(bad) / total > bound:
        raise TooManyBadImagesError(bad_share_message(stage, key, bound, bad, total))


def merge_bad_images(
    earlier: Iterable[BadImage], new: Sequence[BadImage], stored: Collection[str], wanted: Collection[str]
) -> list[BadImage]:
    """The skipped images of an output after a run: the earlier records of images that are still wanted, still
    not stored and were not tried again (e.g. past a ``--limit``), then this run's records.

    Args:
        earlier: records read from the output before the run.
        new: images this run skipped.
        stored: ids the output holds after the run.
        wanted: ids the output is for (e.g. the split's ok images).
    """
    retried = {b.image_id for b in new}
    kept = [
        b for b in earlier if b.image_id in wanted and b.image_id not in stored and b.image_id not in retried
    ]
    return kept + list(new)


def write_quarantine(directory: Path, bad: Sequence[BadImage], *, stage: str, images: int) -> Path | None:
    """Record ``bad`` in ``directory/quarantined.json`` (atomically), or remove an old record when ``bad`` is
    empty; returns the file written (None when there is nothing to record).

    Args:
        directory: the stage's output directory (created when needed).
        bad: the skipped images.
        stage: the stage that skipped them.
        images: how many images the output is for (bad ones included).
    """
    path = Path(directory) / QUARANTINE_FILE
    if not bad:
        path.unlink(missing_ok=True)
        return None
    payload: dict[str, Any] = {
        "stage": stage,
        "images": images,
        "quarantined": len(bad),
        "by_reason": reason_counts(bad),
        "rows": [asdict(b) for b in bad],
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def read_quarantine(directory: Path) -> list[BadImage]:
    """The skipped images recorded in ``directory/quarantined.json`` (none when the file is absent).

    Raises:
        ValueError: a file that is not such a record (naming the file).
    """
    path = Path(directory) / QUARANTINE_FILE
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())["rows"]
        return [BadImage(**{k: str(row[k]) for k in BadImage.__dataclass_fields__}) for row in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{path} is not a record of quarantined images: {type(exc).__name__}: {exc}"
        ) from exc


def quarantined_ids(directory: Path) -> set[str]:
    """Ids of the images skipped by the stage that wrote ``directory`` (see :func:`read_quarantine`)."""
    return {b.image_id for b in read_quarantine(directory)}


def without_quarantined(ids: Sequence[str], directories: Iterable[Path]) -> tuple[list[str], list[str]]:
    """``ids`` minus the images recorded as quarantined in any of ``directories``.

    Returns:
        The remaining ids (in order) and the removed ones (in order).
    """
    skipped: set[str] = set()
    for directory in directories:
        skipped |= quarantined_ids(directory)
    return [i for i in ids if i not in skipped], [i for i in ids if i in skipped]


def usable_ids(dataset: LandmarkDataset, split: str, root: Path) -> tuple[list[str], list[str]]:
    """The ok images of ``split`` that a stage's output under ``root/<split>`` holds: all but those the stage
    recorded as undecodable.

    Returns:
        The usable ids and the skipped ones, both in manifest order.
    """
    return without_quarantined(dataset.ok_ids(split), [Path(root) / split])


def quarantine_bad_images(manifest: pd.DataFrame, bad: Iterable[BadImage]) -> pd.DataFrame:
    """A copy of ``manifest`` with the ok rows of ``bad`` quarantined under their decode reason (``"<code>:
    <detail>"``, as ingestion writes it); an image recorded twice keeps its first record."""
    reasons: dict[str, str] = {}
    for b in bad:
        reasons.setdefault(b.image_id, format_reason(b.reason, b.detail))
    frame = manifest.reset_index(drop=True).copy()
    mask = (frame["status"] == STATUS_OK) & frame["image_id"].isin(list(reasons))
    frame.loc[mask, "status"] = STATUS_QUARANTINED
    frame.loc[mask, "reason"] = frame.loc[mask, "image_id"].map(reasons)
    return make_manifest(frame)


def skipped_note(removed: Mapping[str, Sequence[str]]) -> str:
    """A note naming how many images of each split were left out as undecodable ("" when none)."""
    parts = [
        f"{len(ids)} {split} (e.g. {', '.join(ids[:SHOWN_FILES])})" for split, ids in removed.items() if ids
    ]
    if not parts:
        return ""
    return (
        f"images left out because their stage could not decode them ({QUARANTINE_FILE}): {'; '.join(parts)}"
    )
