"""Put the workspace back to the last commit after an experiment, failed or not.

    python scripts/restore.py

An experiment (`dvc exp run`, or `dvc repro` on an edited params.yaml) rewrites files in
git (params.yaml, dvc.lock, the tables' files under metrics/, the pages under reports/, the
.gitignore entries DVC adds for new cells) and outputs in DVC's cache (models, data, eval). This script restores the first from git,
removes the outputs of cells the commit does not have (a seed or row added by the
experiment; DVC's cache and the experiment's own commit keep them), then `dvc checkout`s
the rest. Your code and conf/ are left alone. Nothing is retrained.

In a fresh clone the cache is empty: the script then says so in one line (the files in
git are restored all the same) and exits 1. `dvc pull` fetches the outputs from a
remote; `dvc repro` retrains them. An output DVC never saved (a stage killed while
writing it) is kept, and named, unless you pass --force.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

IN_GIT = ["params.yaml", "dvc.lock", "data", "models", "eval", "metrics", "reports"]
OUTPUTS = ["models", "eval", "metrics", "reports"]  # only stages write here: stale entries can go


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def restore_from_git() -> None:
    tracked = [p for p in IN_GIT if git("ls-tree", "--name-only", "HEAD", "--", p).strip()]
    git("checkout", "HEAD", "--", *tracked)


def remove_stale_outputs() -> list[str]:
    """Untracked, unignored entries under the output folders: with the commit's
    .gitignore files back, these are outputs of cells the commit does not declare."""
    stale = git("ls-files", "--others", "--exclude-standard", "--directory", "-z", "--",
                *OUTPUTS).split("\0")
    for entry in filter(None, stale):
        path = Path(entry)
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return [s for s in stale if s]


def dvc_checkout(force: bool) -> int:
    cmd = [sys.executable, "-m", "dvc", "checkout"] + (["--force"] if force else [])
    res = subprocess.run(cmd, capture_output=True, text=True)
    out = res.stdout + res.stderr
    if res.returncode and "without confirmation" in out:
        # an output DVC never saved (a stage killed while writing it): keep it unless told
        unsaved = [os.path.relpath(s) for s in map(str.strip, out.splitlines()[1:]) if s]
        print(f"error: {', '.join(unsaved)}: not saved in DVC's cache; `dvc commit` keeps "
              f"it, `python scripts/restore.py --force` discards it", file=sys.stderr)
        return 1
    if res.returncode and "Checkout failed for following targets" in out:
        # DVC lists every missing output (over 100 lines in a fresh clone), then a hint
        listed = out.split("Checkout failed for following targets:", 1)[1].splitlines()
        missing = [s for s in map(str.strip, listed) if s and " " not in s and s[0] != "<"]
        print(f"error: {len(missing)} outputs not in the local cache: run `dvc pull` (remote) "
              f"or `dvc repro` (retrains); params, lock, metrics and pages are back to the commit",
              file=sys.stderr)
        return 1
    if res.returncode:  # anything else is DVC's own message, shown whole
        sys.stderr.write(out)
    return res.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true",
                    help="discard outputs that differ from the cache and are not saved in it")
    args = ap.parse_args()
    os.chdir(git("rev-parse", "--show-toplevel").strip())
    restore_from_git()
    stale = remove_stale_outputs()
    rc = dvc_checkout(args.force)
    if rc == 0:
        extra = f"; removed {len(stale)} outputs the commit lacks" if stale else ""
        print(f"restored params.yaml, dvc.lock, metrics, pages and outputs to HEAD{extra}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
