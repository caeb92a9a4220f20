"""Synthetic world generation speed: the default world (SynthConfig defaults) rendered into a temporary folder.

python benchmarks/synth_speed.py [--workers 2] [--seed 0] [--out-json benchmarks/results/synth_speed.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result

from landmark.config import SynthConfig, config_to_dict
from landmark.data.synthetic import generate_world


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-json", type=Path, default=RESULTS / "synth_speed.json", help="result file")
    parser.add_argument(
        "--workers", type=int, default=SynthConfig().workers, help="render processes (0 = inline)"
    )
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    args = parser.parse_args(argv)
    cfg = dataclasses.replace(SynthConfig(), workers=args.workers)
    with tempfile.TemporaryDirectory(prefix="synth_speed_") as tmp:
        summary = generate_world(cfg, Path(tmp), seed=args.seed, progress=False)
    write_result(
        "synth_speed",
        {
            "images": summary.images,
            "seconds": round(summary.seconds, 3),
            "images_per_s": round(summary.images_per_s, 2),
            "workers": args.workers,
            "cpu_count": os.cpu_count(),
            "seed": args.seed,
            "splits": {"train": summary.train, "index": summary.index, "test": summary.test},
            "config": config_to_dict(cfg),
        },
        out=args.out_json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
