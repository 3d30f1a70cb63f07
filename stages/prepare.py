"""Stage `prepare`: decode, resample, normalise, frame and split into the arrays the trainer reads.

Usage (from the repo root):
  python -m stages.prepare --params params.yaml --raw data/raw --out data/prepared

Reads params.yaml `data:` (see stages/download.py for name, seed, minutes, speakers,
timit_path, blizzard_path) plus:
  data.on_bad_file   error | skip: a bad audio file stops the stage, or is left out and
                     listed in the manifest                          (default error)
  data.target_mode   correct | faithful: Blizzard-protocol targets   (default correct)
  data.streams       Blizzard-protocol parallel streams              (default 128)
Writes <out>/ atomically: manifest.json plus the split arrays (layout: docstring of
pipeline/datasets/batches.py). The trainer opens it with pipeline.datasets.open_split.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stages.common import load_params, run  # noqa: E402

from pipeline.datasets.registry import DataConfig, prepare  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", default="data/raw")
    ap.add_argument("--out", default="data/prepared")
    args = ap.parse_args(argv)
    cfg = DataConfig.from_params(load_params(args.params).get("data"))
    t0 = time.perf_counter()
    m = prepare(cfg, args.raw, args.out)
    print(f"{m['dataset']}: {m['split_sizes']} sequences, mean {m['mean']:.3f}, std {m['std']:.3f}, "
          f"{m['skipped_count']} skipped -> {args.out}")
    print(f"prepare: {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    run(main)
