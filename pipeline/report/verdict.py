"""Does a claim of the paper hold in our runs? A three-valued verdict over seeds.

A claim is a list of pairs "worse, better" (e.g. RNN-Gauss worse than RNN-GMM in
log-likelihood, where higher is better). Each side holds one number per seed. A pair is
*ordered* when the two min-max ranges over seeds do not overlap: then either as the paper
claims or reversed. With one seed a range is a single point, so the pair is decided by a
single run: the page says "one seed".

Verdict: "holds" when every required pair is ordered our way; "does not hold" when any
pair (required or not) is reversed; otherwise "not resolved at this budget".
"""
from __future__ import annotations

from dataclasses import dataclass

HOLDS, FAILS, OPEN, NONE = "holds", "does not hold", "not resolved at this budget", "not checked"


@dataclass(frozen=True)
class Pair:
    worse: str                  # the side the paper puts behind
    better: str
    worse_values: tuple         # one number per seed
    better_values: tuple
    higher: bool = True         # higher values are better (log-likelihood, KL); False: NLL, ppl
    required: bool = True       # False: only a reversal counts (non-adjacent pairs of an order)
    what: str = ""              # the quantity compared, for the page

    @property
    def outcome(self) -> str:
        """'as claimed' | 'reversed' | 'overlap'."""
        lo, hi = (self.worse_values, self.better_values) if self.higher else \
            (self.better_values, self.worse_values)
        if max(lo) < min(hi):
            return "as claimed"
        if max(hi) < min(lo):
            return "reversed"
        return "overlap"

    @property
    def one_seed(self) -> bool:
        return min(len(self.worse_values), len(self.better_values)) == 1


def pairs_from_order(order: list, values: dict, higher: bool = True, what: str = "") -> list:
    """Pairs of a worst-to-best ordering over the rows present in `values` (row -> per-seed
    numbers): adjacent pairs are required, the others count only if reversed (a reversal
    two steps apart can hide behind two overlapping adjacent pairs)."""
    rows = [r for r in order if values.get(r)]
    return [Pair(a, b, tuple(values[a]), tuple(values[b]), higher, required=(j == i + 1),
                 what=what)
            for i, a in enumerate(rows) for j, b in enumerate(rows) if j > i]


def verdict(pairs: list) -> tuple:
    """(verdict, the pairs behind it). 'not checked' only when no pair could be formed."""
    if not pairs:
        return NONE, []
    reversed_ = [p for p in pairs if p.outcome == "reversed"]
    if reversed_:
        return FAILS, reversed_
    required = [p for p in pairs if p.required]
    if all(p.outcome == "as claimed" for p in required):
        return HOLDS, required
    return OPEN, [p for p in required if p.outcome == "overlap"]
