"""Stage `download`: obtain the raw data of the selected dataset and verify it.

Usage (from the repo root): python -m stages.download --params params.yaml --out data/raw

Reads params.yaml `data:` (all optional, defaults in pipeline/datasets/registry.py):
  data.name          synthetic | timit | blizzard | binarized_mnist | mnist_offline |
                     ljspeech | librispeech_dev_clean              (default synthetic)
  data.seed          generator seed of the synthetic corpus         (default 0)
  data.minutes       synthetic: minutes of training audio           (default 20)
  data.speakers      synthetic: [train, valid, test] speakers       (default [20, 4, 6])
  data.timit_path    folder holding TIMIT's TRAIN/ and TEST/         (timit only)
  data.blizzard_path folder holding the Blizzard 2013 mp3 chapters   (blizzard only)
  data.progress      show download progress bars                     (default true)
Writes <out>/<name>/ (raw files) and <out>/<name>.download.json. Hashes of files without a
publisher checksum are recorded in pipeline/datasets/checksums.json on first download.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stages.common import load_params, run  # noqa: E402

from pipeline.datasets.registry import DataConfig, download  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/raw")
    args = ap.parse_args(argv)
    cfg = DataConfig.from_params(load_params(args.params).get("data"))
    t0 = time.perf_counter()
    print(json.dumps(download(cfg, args.out), indent=1))
    print(f"download: {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    run(main)
