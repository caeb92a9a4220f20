"""Evaluation plots: precision-recall curves (CSV for ``dvc plots`` and PNG) and a grid of queries with their
top results framed green (correct), red (wrong) or grey (junk: ignored by the protocol).

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend state), so this
works headless and in worker processes. Pixels come in as arrays; reading images is the caller's job.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from landmark.data.atomic import atomic_path
from landmark.retrieval.metrics import PROTOCOLS, revisitop_pr_curve

if TYPE_CHECKING:  # annotations only: the ground-truth module loads pandas
    from landmark.data.groundtruth import QueryTruth

Verdict = Literal["correct", "wrong", "junk"]
VERDICT_COLORS: dict[str, tuple[float, float, float]] = {
    "correct": (0.1, 0.7, 0.2),
    "wrong": (0.85, 0.1, 0.1),
    "junk": (0.55, 0.55, 0.55),
}
RECALL_LEVELS = np.round(np.linspace(0.0, 1.0, 21), 4)


def write_curve_csv(path: Path, recall: np.ndarray, precision: np.ndarray) -> None:
    """Write one curve as ``recall,precision`` rows (the layout ``dvc plots`` reads), atomically.

    Args:
        path: CSV file to write.
        recall: x values, shape (L,).
        precision: y values, shape (L,).
    """
    recall, precision = np.asarray(recall).reshape(-1), np.asarray(precision).reshape(-1)
    if recall.shape != precision.shape:
        raise ValueError(
            f"recall and precision must have one shape, got {recall.shape} and {precision.shape}"
        )
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["recall", "precision"])
        writer.writerows([f"{r:.4f}", f"{p:.6f}"] for r, p in zip(recall, precision, strict=True))


def _save(fig: Figure, path: Path, dpi: int) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def plot_precision_recall(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, *, title: str = "Precision-recall"
) -> None:
    """Save a PNG with one precision-recall line per protocol.

    Args:
        curves: protocol name -> (recall (L,), precision (L,)).
        path: PNG file to write.
        title: figure title.
    """
    fig = Figure(figsize=(5.0, 4.0))
    ax = fig.add_subplot()
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, marker=".", label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    _save(fig, path, dpi=110)


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """Letterboxed ``size`` x ``size`` RGB uint8 thumbnail of an HxWx3 image, aspect kept."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"image must be HxWx3 with H, W >= 1, got shape {image.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    scale = size / max(image.shape[:2])
    h, w = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
    small = cv2.resize(image.astype(np.uint8), (w, h), interpolation=cv2.INTER_AREA)
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    y0, x0 = (size - h) // 2, (size - w) // 2
    canvas[y0 : y0 + h, x0 : x0 + w] = small
    return canvas


@dataclass(frozen=True)
class GridRow:
    """One query and its top results for :func:`plot_result_grid`.

    Attributes:
        query: HxWx3 uint8 query image (already cropped to its box).
        results: (HxWx3 uint8 image, verdict) per result, best first.
        title: caption of the query (e.g. its id).
    """

    query: np.ndarray
    results: Sequence[tuple[np.ndarray, Verdict]]
    title: str = ""


def plot_result_grid(rows: Sequence[GridRow], path: Path, *, cell: int = 128) -> None:
    """Save a PNG grid: one row per query (query first, blue frame), its results framed by verdict.

    Args:
        rows: the queries to show.
        path: PNG file to write.
        cell: thumbnail side in pixels.
    """
    if not rows:
        raise ValueError("need at least one row to draw a result grid")
    columns = 1 + max(len(r.results) for r in rows)
    fig = Figure(figsize=(columns * cell / 100, len(rows) * (cell + 22) / 100))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        cells: list[tuple[np.ndarray, tuple[float, float, float], str]] = [
            (row.query, (0.1, 0.3, 0.9), row.title or "query")
        ]
        cells += [
            (image, VERDICT_COLORS[verdict], f"#{i + 1}") for i, (image, verdict) in enumerate(row.results)
        ]
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(cells):
                ax.set_axis_off()
                continue
            image, color, caption = cells[c]
            ax.imshow(thumbnail(image, cell))
            ax.set_title(caption, fontsize=7)
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(4)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.01, wspace=0.08, hspace=0.25)
    _save(fig, path, dpi=100)


def write_pr_plots(ranks: np.ndarray, gnd: Sequence[Mapping[str, Sequence[int]]], plots_dir: Path) -> None:
    """Per-protocol precision-recall CSVs (``pr_<protocol>.csv``) and one PNG with all three curves.

    Args:
        ranks: (n_database, n_queries) database indices, best first.
        gnd: per query, index lists ``easy``, ``hard`` and ``junk``.
        plots_dir: where the files go.
    """
    curves = {}
    for protocol in PROTOCOLS:
        precision = np.nan_to_num(revisitop_pr_curve(ranks, gnd, protocol, RECALL_LEVELS))
        write_curve_csv(plots_dir / f"pr_{protocol}.csv", RECALL_LEVELS, precision)
        curves[protocol] = (RECALL_LEVELS, precision)
    plot_precision_recall(
        curves, plots_dir / "precision_recall.png", title="Precision-recall (revisited protocols)"
    )


def result_verdicts(
    truth: QueryTruth | None, relevant: Sequence[str], result_ids: Sequence[str]
) -> list[Verdict]:
    """Verdict of each result of a query: by its revisited truth when it has one (junk = ignored), else by its
    retrieval solution's relevant ids."""
    if truth is not None:
        positives, junk = set(truth.positives), set(truth.junk)
        return ["correct" if i in positives else "junk" if i in junk else "wrong" for i in result_ids]
    rel = set(relevant)
    return ["correct" if i in rel else "wrong" for i in result_ids]
