"""scripts/verify.py's comparison on constructed numbers: within, beyond, missing."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("verify", Path(__file__).resolve().parents[1] / "scripts/verify.py")
verify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verify)


def test_compare_applies_each_metrics_tolerance():
    f = "eval/timit/zforcing/s0/metrics.json"
    committed = verify.numbers({f: '{"bound": -1000.0, "kl": 5.0, "active_units": 10, "note": "x"}'})
    assert set(committed) == {(f, "bound"), (f, "kl"), (f, "active_units")}  # numbers only
    within = {(f, "bound"): -1019.0, (f, "kl"): 6.4, (f, "active_units"): 12}
    assert verify.compare(committed, within)["ok"].all()
    beyond = {(f, "bound"): -1021.0, (f, "kl"): 6.6, (f, "active_units"): 13}
    assert not verify.compare(committed, beyond)["ok"].any()
    missing = verify.compare(committed, {(f, "bound"): -1000.0})
    assert missing.set_index("metric")["ok"].to_dict() == {"active_units": False, "bound": True, "kl": False}
