"""Does a claim of the paper hold in our runs? A paired test over seeds, stated once (RULE).

A claim is a list of pairs "behind, ahead" (e.g. Z-Forcing behind Z-Forcing + aux in
log-likelihood). Each side holds one number per seed index. Cells with the same seed index
share the data order and the initialisation seed, so a pair is compared on the seed indices
both sides ran: d_i = ahead_i - behind_i (behind_i - ahead_i when lower is better), and
d > 0 is the paper's way round.

Seed-to-seed noise in these tables is often far larger than the gaps the paper reports, so
a pair is ordered only when a paired t interval of mean(d) excludes zero, at a level
corrected for the number of pairs in the claim (Bonferroni), so that a claim whose rows do
not differ is called "does not hold" at most ALPHA of the time (tests/test_report_verdict.py
measures it). Below MIN_SEEDS shared seeds nothing is ordered.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05        # family-wise rate of a false ordering, per claim
MIN_SEEDS = 3       # fewer shared seeds: the pair is not resolved, whatever the numbers

HOLDS, FAILS, NONE = "holds", "does not hold", "not checked"
AS_CLAIMED, REVERSED, OPEN = "as claimed", "reversed", "not resolved"

RULE = (f"A pair of rows is compared on the seed indices both ran (same index: same data order "
        f"and initialisation), by the mean of the paired differences and its two-sided Student t "
        f"interval at level 1 − {ALPHA:g}/k, where k is the number of pairs in the claim with at "
        f"least {MIN_SEEDS} shared seeds (Bonferroni: rows that do not differ make a claim "
        f"“does not hold” at most {ALPHA:.0%} of the time). A pair is ordered when its interval "
        f"excludes zero; with fewer than {MIN_SEEDS} shared seeds it is “not resolved (N "
        f"seeds)”. A claim <b>holds</b> when every required pair is ordered the paper's way, "
        f"<b>does not hold</b> when any pair (required or not) is ordered the other way, and is "
        f"<b>not resolved</b> otherwise. Required: the adjacent rows of an ordering; rows further "
        f"apart count only when they clear the same bar reversed.")


def seeds_word(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class Pair:
    worse: str                  # the side the paper puts behind
    better: str
    worse_values: dict          # seed index -> number
    better_values: dict
    higher: bool = True         # higher values are better (log-likelihood, KL); False: NLL, ppl
    required: bool = True       # False: only a reversal counts (non-adjacent pairs of an order)
    what: str = ""              # the quantity compared, for the page

    @property
    def seeds(self) -> list:
        return sorted(set(self.worse_values) & set(self.better_values))

    @property
    def diffs(self) -> list:
        """Paired differences, positive the paper's way round."""
        sign = 1.0 if self.higher else -1.0
        return [sign * (self.better_values[s] - self.worse_values[s]) for s in self.seeds]


@dataclass(frozen=True)
class Result:
    pair: Pair
    outcome: str                # AS_CLAIMED | REVERSED | OPEN
    n: int                      # shared seeds
    mean: float                 # mean paired difference (nan without a shared seed)
    lo: float                   # its interval (nan below MIN_SEEDS)
    hi: float
    level: float                # the interval's confidence level (nan below MIN_SEEDS)
    k: int                      # the claim's tested pairs: the level is 1 - ALPHA / k

    @property
    def label(self) -> str:
        return self.outcome if self.n >= MIN_SEEDS else f"{OPEN} ({seeds_word(self.n)})"


@functools.lru_cache(maxsize=None)
def t_quantile(q: float, df: int) -> float:
    return float(stats.t.ppf(q, df))


def paired_interval(pair: Pair, k: int, alpha: float = ALPHA) -> Result:
    """The pair's paired t interval at level 1 - alpha / k (k: the claim's tested pairs)."""
    d, nan = pair.diffs, float("nan")
    n, mean = len(d), (sum(d) / len(d) if d else nan)
    if n < MIN_SEEDS:
        return Result(pair, OPEN, n, mean, nan, nan, nan, k)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = t_quantile(1 - alpha / (2 * k), n - 1) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    outcome = AS_CLAIMED if lo > 0 else REVERSED if hi < 0 else OPEN
    return Result(pair, outcome, n, mean, lo, hi, 1 - alpha / k, k)


def seeds_needed(pair: Pair, k: int, alpha: float = ALPHA, power: float = 0.8,
                 cap: int = 10_000) -> int | None:
    """Seeds at which a pair whose true gap and paired spread were what these seeds show
    would be ordered with probability `power` (the t approximation: the smallest n with
    (t_{1-alpha/2k} + t_power) * sd / sqrt(n) <= |mean|, both with n - 1 degrees of
    freedom); `cap` when even that many would not do, None without two shared seeds."""
    d = pair.diffs
    if len(d) < 2:
        return None
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    if sd == 0:
        return max(MIN_SEEDS, len(d)) if mean else cap
    for n in range(MIN_SEEDS, cap):
        need = (t_quantile(1 - alpha / (2 * k), n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)
        if need <= abs(mean):
            return n
    return cap


def pairs_from_order(order: list, values: dict, higher: bool = True, what: str = "") -> list:
    """Pairs of a worst-to-best ordering over the rows present in `values` (row -> {seed
    index: number}, or a list: seed indices 0, 1, ...): adjacent pairs are required, the
    others count only if reversed (a reversal two steps apart can hide behind two unresolved
    adjacent pairs)."""
    by_seed = {r: dict(v) if isinstance(v, dict) else dict(enumerate(v))
               for r, v in values.items() if v}
    rows = [r for r in order if r in by_seed]
    return [Pair(a, b, by_seed[a], by_seed[b], higher, required=(j == i + 1), what=what)
            for i, a in enumerate(rows) for j, b in enumerate(rows) if j > i]


def verdict(pairs: list, alpha: float = ALPHA) -> tuple:
    """(verdict, every pair's Result). 'not checked' only when no pair could be formed."""
    if not pairs:
        return NONE, []
    k = max(1, sum(len(p.seeds) >= MIN_SEEDS for p in pairs))
    results = [paired_interval(p, k, alpha) for p in pairs]
    if any(r.outcome == REVERSED for r in results):
        return FAILS, results
    required = [r for r in results if r.pair.required]
    if all(r.outcome == AS_CLAIMED for r in required):
        return HOLDS, results
    n = min(r.n for r in required)
    return (f"{OPEN} ({seeds_word(n)})" if n < MIN_SEEDS else
            f"{OPEN} at this budget ({seeds_word(n)})"), results

