"""The three-valued ordering verdict on constructed numbers."""
from pipeline.report.verdict import FAILS, HOLDS, NONE, OPEN, Pair, pairs_from_order, verdict

ORDER = ["a", "b", "c"]   # worst to best


def names(pairs):
    return [(p.worse, p.better) for p in pairs]


def test_holds_when_adjacent_ranges_are_separated():
    v, pairs = verdict(pairs_from_order(ORDER, {"a": [1, 2], "b": [3, 4], "c": [5, 6]}))
    assert v == HOLDS
    assert names(pairs) == [("a", "b"), ("b", "c")]     # the adjacent pairs behind it
    assert not any(p.one_seed for p in pairs)


def test_reversed_pair_means_does_not_hold():
    v, pairs = verdict(pairs_from_order(ORDER, {"a": [1, 2], "b": [7, 8], "c": [5, 6]}))
    assert v == FAILS
    assert names(pairs) == [("b", "c")]


def test_reversal_two_steps_apart_behind_overlapping_neighbours():
    # a and c overlap b, but c lies wholly below a: the ordering is contradicted
    v, pairs = verdict(pairs_from_order(ORDER, {"a": [10, 20], "b": [0, 30], "c": [5, 8]}))
    assert v == FAILS
    assert names(pairs) == [("a", "c")]


def test_overlap_is_not_resolved_and_names_the_overlapping_pair():
    v, pairs = verdict(pairs_from_order(ORDER, {"a": [1, 2], "b": [3, 6], "c": [5, 9]}))
    assert v == OPEN
    assert names(pairs) == [("b", "c")]
    # touching ranges are not separated either
    v, _ = verdict(pairs_from_order(["a", "b"], {"a": [1, 3], "b": [3, 4]}))
    assert v == OPEN


def test_one_seed_decides_by_a_single_run_and_says_so():
    v, pairs = verdict(pairs_from_order(ORDER, {"a": [1.0], "b": [2.0], "c": [3.0, 4.0]}))
    assert v == HOLDS
    assert [p.one_seed for p in pairs] == [True, True]
    v, pairs = verdict(pairs_from_order(["a", "b"], {"a": [2.0], "b": [1.0]}))
    assert v == FAILS and pairs[0].one_seed


def test_lower_is_better_and_missing_rows():
    # NLL: the better row has the lower numbers
    v, _ = verdict(pairs_from_order(["plain", "aux"], {"plain": [81, 82], "aux": [79, 80]},
                                    higher=False))
    assert v == HOLDS
    v, _ = verdict(pairs_from_order(["plain", "aux"], {"plain": [79, 80], "aux": [81, 82]},
                                    higher=False))
    assert v == FAILS
    # rows that were not run are skipped; with fewer than two nothing is checked
    v, pairs = verdict(pairs_from_order(ORDER, {"a": [1], "c": [2]}))
    assert v == HOLDS and names(pairs) == [("a", "c")]
    assert verdict(pairs_from_order(ORDER, {"b": [1]})) == (NONE, [])


def test_pair_outcomes_directly():
    assert Pair("x", "y", (1, 2), (3,)).outcome == "as claimed"
    assert Pair("x", "y", (1, 2), (0.5,)).outcome == "reversed"
    assert Pair("x", "y", (1, 4), (3,)).outcome == "overlap"
    assert Pair("x", "y", (5, 6), (3, 4), higher=False).outcome == "as claimed"
