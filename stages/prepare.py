"""Stage `prepare@<bench>`: the benchmark's protocol, raw data -> the arrays the trainer reads.

    python -m stages.prepare timit --params params.yaml --raw data/timit/raw --out data/timit/prepared

Speech: decode, resample to 16 kHz, one global mean/std from the training audio, 200-sample
frames (TIMIT: 40-frame rows and whole test utterances; Blizzard: parallel streams of 0.5 s
rows). MNIST: raster-order pixels. IMDB: tokens and a vocabulary. Writes <out>/ atomically:
manifest.json plus the split arrays (layouts: pipeline/datasets/batches.py).
"""
import argparse
import sys
import time

from stages import params as P
from stages.common import run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", help="timit, blizzard, mnist or imdb")
    ap.add_argument("--params", default="params.yaml", help="parameters file (%(default)s)")
    ap.add_argument("--raw", required=True, help="the download stage's folder, e.g. data/timit/raw")
    ap.add_argument("--out", required=True, help="prepared arrays folder, e.g. data/timit/prepared")
    args = ap.parse_args()
    from pipeline.datasets.registry import prepare
    cfg = P.data_config(P.read(args.params), args.bench)
    t0 = time.perf_counter()
    m = prepare(cfg, args.raw, args.out)
    print(f"{args.bench} ({cfg.source}): {m['split_sizes']} sequences, "
          f"{m.get('skipped_count', 0)} files skipped -> {args.out}")
    print(f"prepare {args.bench}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    run(main)
