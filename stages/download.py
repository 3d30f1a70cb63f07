"""Stage `download@<bench>`: obtain and verify the raw data of one benchmark's source.

    python -m stages.download timit --params params.yaml --out data/timit/raw

Reads benchmarks.<bench>.source and benchmarks.<bench>.data. The embedded sources are
generated offline (seeded, byte-identical); real sources are downloaded and verified, or
read in place from a licensed local path. Hashes learnt on a first download are kept with
the data (<out>/checksums.json).
"""
import argparse
import json
import sys
import time

from stages import params as P
from stages.common import run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", help="timit, blizzard, mnist or imdb")
    ap.add_argument("--params", default="params.yaml", help="parameters file (%(default)s)")
    ap.add_argument("--out", required=True, help="raw data folder, e.g. data/timit/raw")
    args = ap.parse_args()
    from pipeline.datasets.registry import download
    cfg = P.data_config(P.read(args.params), args.bench)
    t0 = time.perf_counter()
    print(json.dumps(download(cfg, args.out), indent=1)[:2000])
    print(f"download {args.bench}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    run(main)
