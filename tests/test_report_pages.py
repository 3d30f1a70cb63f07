"""Report stage end to end on a fake eval/models/data tree (the evaluate stage's contract).

Rendering costs a kernel per page, so one module-scoped project is rendered once (and its
TIMIT page a second time, for byte stability) and shared by the checks. TIMIT is a
stand-in corpus (the paper's values apart), MNIST the paper's own (difference column); TIMIT's
rows have one or two seeds (too few for a verdict), MNIST's three (a verdict), IMDB's one.
"""
import json
import os
import re
import shutil

import numpy as np
import pytest
import yaml

from stages import report as stage

H = "ab" * 32
SPEECH = {  # row -> per-seed bound (nats / utterance); rnn_gmm, vrnn_gauss one seed
    "rnn_gauss": [100.0, 110.0], "rnn_gmm": [200.0], "rnn_ar": [250.0], "vrnn_gauss": [300.0],
    "zforcing": [400.0, 420.0], "zforcing_aux": [410.0, 430.0]}
MNIST = {"lstm": [85.0, 85.5, 85.2], "zforcing": [82.0, 83.0, 82.5],
         "zforcing_aux": [80.1, 81.0, 80.4]}   # aux ahead by 1.9, 2.0, 2.1: resolved
IMDB = {"lstm": (60.0, 0.0), "zforcing": (58.0, 0.5), "zforcing_aux": (59.0, 6.0),
        "zforcing_beta_hi": (70.0, 9.0)}   # row -> (ppl, kl)


def dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


EXACT = ("rnn_gauss", "rnn_gmm", "rnn_ar", "lstm")


def cell(root, bench, row, seed, metrics, data, quirk=False, seconds=12.5):
    d = os.path.join(root, "eval", bench, row, f"s{seed}")
    exact = row in EXACT
    latent = not exact
    metrics = {**metrics, "kl": 0.0} if exact else metrics
    test = {"sequences": 8, "elbo_per_seq": metrics["bound"] - (0 if exact else 1),
            "kl_per_seq": metrics["kl"], **({} if exact else {"iwae_per_seq": metrics["bound"]})}
    dump(os.path.join(d, "metrics.json"), metrics)
    dump(os.path.join(d, "info.json"), {
        "bench": bench, "row": row, "seed": seed, "train_seed": 1000 + seed,
        "paper_name": row.replace("_", " ").title(), "exact": exact,
        "bound_kind": "exact" if exact else "iwae", "iwae_k": 5, "params": 12345, "test": test,
        "test_quirk": {k: (v * 0.99 if isinstance(v, float) else v) for k, v in test.items()}
        if quirk else None, "valid": None,
        "settings": {"model": {"name": row.split("_")[0], "rnn_dim": 16}, "train": {"lr": 0.002},
                     "aux": "aux" in row or "beta" in row, "kla": False, "aux_weight": 0.005,
                     "profile": "test", "precision": "fp32", "threads": 1,
                     "hardware": {"train_device": "cpu", "eval_device": "cpu", "machine": "x86_64"}},
        "data": data, "train": {"updates": 40, "skipped": 0, "seconds": seconds,
                                "best_valid": None},
        "provenance": {"prepared_manifest_sha256": H, "model_sha256": "cd" * 32,
                       "params_sha256": "ef" * 32, "code_sha256": "01" * 32}})
    if latent:
        dump(os.path.join(d, "latent.json"), {"kl_per_dim": [3.0, 0.5, 0.001, 0.0]})
    hist = [{"kind": "train", "update": u, "loss": -metrics["bound"] + 50 / u,
             "elbo_per_seq": metrics["bound"] - 50 / u, "kl_per_seq": metrics["kl"] if latent else 0.0,
             "aux_per_seq": 3.0 / u if "aux" in row else 0.0, "kl_weight": min(1.0, u / 20),
             "aux_weight": 0.005 * min(1.0, u / 20) if "aux" in row else 0.0}
            for u in range(4, 44, 4)]
    hist += [{"kind": "valid", "update": u, "valid_elbo_per_seq": metrics["bound"] - 30 / u,
              "lr": 0.002} for u in (20, 40)]
    dump(os.path.join(root, "models", bench, row, f"s{seed}", "history.json"), {"history": hist})
    return d


def make_project(root):
    root = str(root)
    speech = {"dataset": "synthetic", "source": "embedded", "comparable": False,
              "title_note": "embedded corpus: espeak-ng speech, a stand-in, not TIMIT",
              "protocol": {"frame": 200}, "split_sizes": {"test": 2}}
    rng = np.random.default_rng(0)
    for row, bounds in SPEECH.items():
        for seed, b in enumerate(bounds):
            d = cell(root, "timit", row, seed, {"bound": b, "elbo": b - 1, "kl": 5.0, "per_step": b / 40,
                                                 "active_units": None if row in EXACT else 2},
                     speech, quirk=True,
                     seconds=None if row == "rnn_ar" else 12.5)
            if seed == 0:
                np.savez(os.path.join(d, "samples.npz"), sample_rate=np.int64(16000),
                         generated=(0.2 * rng.standard_normal((2, 16000))).astype(np.float32))
    prepared = os.path.join(root, "data", "timit", "prepared")
    os.makedirs(prepared)
    frames = (3000 * np.sin(np.arange(60 * 200) / 9.0)).astype(np.int16).reshape(60, 200)
    np.save(os.path.join(prepared, "test.npy"), frames)
    np.save(os.path.join(prepared, "test_offsets.npy"), np.array([0, 30, 60], np.int64))
    dump(os.path.join(prepared, "manifest.json"), {
        "kind": "audio", "sample_rate": 16000, "frame_size": 200, "mean": 0.0, "std": 1000.0,
        "x_dim": 200, "splits": {"test": {"layout": "utterances", "file": "test.npy",
                                          "offsets": "test_offsets.npy"}}})
    mnist = {"dataset": "binarized_mnist", "source": "binarized_mnist", "comparable": True,
             "title_note": "binarized MNIST (Larochelle's fixed binarisation)",
             "protocol": {"name": "binarized_mnist", "steps": 784}, "split_sizes": {}}
    for row, nlls in MNIST.items():
        for seed, nll in enumerate(nlls):
            d = cell(root, "mnist", row, seed, {"bound": -nll, "elbo": -nll - 1, "kl": 2.0,
                                                "per_step": -nll / 784, "active_units": 3, "nll": nll},
                     mnist)
            recon = {} if row in EXACT else {"originals": (rng.random((2, 784)) > .5) * 1.0,
                                             "recon": rng.random((2, 784))}
            np.savez(os.path.join(d, "samples.npz"), side=np.int64(28),
                     generated=rng.random((4, 784)), **recon)
    imdb = {"dataset": "imdb", "source": "textfile", "comparable": False,
            "title_note": "sentences from a text file, a stand-in for the IMDB dump",
            "protocol": {}, "split_sizes": {}}
    for row, (ppl, kl) in IMDB.items():
        d = cell(root, "imdb", row, 0, {"bound": -40.0, "elbo": -41.0, "kl": kl, "per_step": -4.0,
                                        "active_units": 1, "ppl": ppl, "ppl_elbo": ppl + 2,
                                        "kl_per_word": kl / 10}, imdb)
    dump(os.path.join(d, "text.json"), {
        "samples": ["the film was <fine>", "a long story"],
        "reconstructions": [{"original": "i liked it", "recon": "i loved it"}],
        "perturb": {"dim": 3, "kl": 1.25, "rows": [{"delta_sd": -2.0, "greedy": "bad film",
                                                    "sample": "poor film"}]}})
    # cells params.yaml does not ask for (another profile's, or committed and stale) stay off
    # the pages, even incomplete: an unlisted row, and a seed beyond `seeds`
    dump(os.path.join(root, "eval", "timit", "srnn", "s0", "metrics.json"), {"bound": 1e6})
    cell(root, "timit", "rnn_gauss", 5, {"bound": 1e6, "elbo": 1e6, "kl": 0.0, "per_step": 1.0,
                                         "active_units": None}, speech)
    with open(os.path.join(root, "params.yaml"), "w") as f:
        speech_rows = [r for r in SPEECH if "aux" not in r]
        yaml.safe_dump({"profile_name": "test", "numerics": "exact", "aux_weight": 0.005, "seeds": [0, 1, 2],
                        "benchmarks": {"timit": {"source": "embedded", "rows": speech_rows,
                                                 "aux_rows": ["zforcing_aux"]},
                                       "mnist": {"source": "binarized_mnist", "rows": ["lstm", "zforcing"],
                                                 "aux_rows": ["zforcing_aux"]},
                                       "imdb": {"source": "textfile", "rows": ["lstm", "zforcing"],
                                                "aux_rows": ["zforcing_aux"],
                                                "beta_rows": ["zforcing_beta_hi"]}},
                        "model": {}, "train": {}, "eval": {},
                        "report": {"audio_examples": 1, "audio_seconds": 0.5, "dpi": 40}}, f)
    return root


def render(root, out):
    old = os.getcwd()
    os.chdir(root)     # the stage runs from the project root with relative paths
    try:
        stage.main(["--params", "params.yaml", "--eval", "eval", "--models", "models",
                    "--data", "data", "--out", out])
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("proj"))
    render(root, "reports")
    # a second render, of a copy holding only the TIMIT cells: a page is a function of its
    # own bench's inputs, byte for byte
    again = str(tmp_path_factory.mktemp("again"))
    for sub in ("eval/timit", "models/timit", "data/timit"):
        shutil.copytree(os.path.join(root, sub), os.path.join(again, sub))
    shutil.copy(os.path.join(root, "params.yaml"), again)
    render(again, "reports")
    return root, again


def page(project, name):
    with open(os.path.join(project[0], "reports", name), encoding="utf-8") as f:
        return f.read()


def test_pages_exist_self_contained_small_and_byte_stable(project):
    names = sorted(os.listdir(os.path.join(project[0], "reports")))
    assert names == ["imdb.html", "index.html", "mnist.html", "timit.html"]
    for name in names:
        text = page(project, name)
        assert len(text.encode()) < 2_000_000
        assert not re.search(r"<script|<link|cdn\.|https?://", text, re.I), name
        assert "jp-Notebook" not in text and len(re.findall(r"<style", text)) == 1   # no nbconvert CSS
        for leak in ("SPEC", "NOTES", "/tmp", "/work", "dvc.lock", "Traceback", "papermill"):
            assert leak not in text, (name, leak)
    with open(os.path.join(project[0], "reports", "timit.html"), "rb") as a, \
            open(os.path.join(project[1], "reports", "timit.html"), "rb") as b:
        assert a.read() == b.read(), "timit.html differs between two renders"


def test_speech_page_spread_seeds_and_no_difference_on_a_stand_in(project):
    text = page(project, "timit.html")
    assert "TIMIT: embedded corpus: espeak-ng speech, a stand-in, not TIMIT</h1>" in text
    ours, published = text.split("Published (other data)</h3>")
    ours = ours[ours.index("<table"):]
    # our rows carry ours only (then the quirk, KL and active-unit columns)
    assert re.search(r"<td>rnn_gauss</td>\s*<td>Rnn Gauss</td>\s*<td>2</td>\s*<td>=</td>\s*"
                     r"<td>105.00 \[100.00 – 110.00\]</td>\s*<td>103.95 \[99.00 – 108.90\]</td>", ours)
    assert re.search(r"<td>rnn_gmm</td>\s*<td>Rnn Gmm</td>\s*<td>1</td>\s*<td>=</td>\s*"
                     r"<td>200.00</td>", ours)
    assert re.search(r"<td>zforcing_aux</td>\s*<td>Zforcing Aux</td>\s*<td>2</td>\s*"
                     r"<td>≥ IWAE-5</td>\s*<td>420.00 \[410.00 – 430.00\]</td>\s*"
                     r"<td>415.80 \[405.90 – 425.70\]</td>\s*<td>5.00 \[5.00 – 5.00\]</td>\s*"
                     r"<td>2 \[2 – 2\]</td>", ours)   # active units: a count, no decimals
    assert "1,900" not in ours and "69,530" not in ours and ">paper<" not in ours
    # the paper's values apart: its rows this run has, then those it does not train
    assert re.search(r"<td>Rnn Gauss</td>\s*<td>rnn_gauss</td>\s*<td>= -1,900</td>\s*"
                     r"<td>high</td>", published)
    assert "≥ 69,530" in published and "Variational Bi-LSTM" in published
    assert "not trained here" in published and "published, not trained here" not in text
    assert "ours − paper" not in text and "<b>not</b> the paper's benchmark" in text
    assert "1,000,000" not in text and "(seed 5)" not in text  # cells params.yaml did not ask for
    assert "padded mean (quirk)" in text and "toward zero by 1.0 % here" in text
    assert "0.9 %" not in text
    # training runs: the train seed without a thousands separator; no time column (models/
    # records none); a missing value is a dash, never None
    assert re.search(r"<td>rnn_ar</td>\s*<td>0</td>\s*<td>1000</td>\s*<td>40</td>"
                     r"\s*<td>0</td>\s*<td>—</td>\s*</tr>", text)
    assert ">seconds</th>" not in text
    # rendered outside the repository, with no conf/ to compose the profile from
    assert "profile <b>test</b> (overrides unknown: conf/ could not be composed to compare)" in text
    assert not re.search(r"\bNone\b|\bnan\b", text)
    assert "<details><summary>Provenance" in text and "abababababababab" in text
    # one real clip and one generated clip per row, as Ogg; spectrograms, curves, latents
    assert text.count("data:audio/ogg;base64,") == 1 + 6 and "audio/wav" not in text
    assert text.count("data:image/png;base64,") == 7 + 2 + 1


def claim_section(text):
    return text[text.index("claims hold here?"):text.index("Training runs")]


def pair_rows(table):
    """(behind, ahead, seeds, mean difference, interval, outcome) of each pair's line."""
    return re.findall(r"<tr>\s*<td>([^<]+)</td>\s*<td>(\w+)</td>\s*<td>[^<]+</td>\s*<td>(\d+)</td>"
                      r"(?:\s*<td>[^<]+</td>){2}\s*<td>([^<]+)</td>\s*<td>([^<]+)</td>"
                      r"(?:\s*<td>[^<]+</td>){2}\s*<td>([^<]+)</td>\s*<td>[^<]+</td>\s*</tr>", table)


def test_speech_claims_one_per_line_and_too_few_seeds_resolve_nothing(project):
    text = claim_section(page(project, "timit.html"))
    assert "Rule: A pair of rows is compared on the seed indices both ran" in text
    assert ("<b>Table 1 order</b>. The paper claims: RNN-Gauss &lt; RNN-GMM &lt; VRNN-Gauss &lt; "
            "SRNN &lt; Z-Forcing &lt; Z-Forcing + aux in log-likelihood (Table 1). Here: "
            "<b>not resolved (1 seed)</b>. Not run here: srnn.") in text
    assert ("<b>aux beats KL annealing</b>. The paper claims: the auxiliary cost does better than "
            "KL annealing: Z-Forcing + aux above Z-Forcing + kla. Here: <b>not checked (row "
            "zforcing_kla not in this run)</b>.") in text
    assert "Here: <b>not checked (row srnn not in this run)</b>." in text
    # adjacent pairs of the paper's order among the rows run (srnn missing, rnn_ar not in it):
    # a pair with two seeds shows its mean difference, but no interval below three seeds
    assert pair_rows(text) == [
        ("rnn_gauss", "rnn_gmm", "1", "+100.00", "—", "not resolved (1 seed)"),   # seed 0 only
        ("rnn_gmm", "vrnn_gauss", "1", "+100.00", "—", "not resolved (1 seed)"),
        ("vrnn_gauss", "zforcing", "1", "+100.00", "—", "not resolved (1 seed)"),
        ("zforcing", "zforcing_aux", "2", "+10.00", "—", "not resolved (2 seeds)")]
    lines = text[text.index("<b>Table 1 order</b>"):]     # the claims, after the rule
    assert "does not hold" not in lines and "reversed" not in lines
    # too few seeds: the page points to where runs with enough seeds put their pages
    assert '<a href="../findings/index.html">findings/index.html</a>.' in text


def test_mnist_page_difference_and_verdict(project):
    text = page(project, "mnist.html")
    assert "Sequential MNIST: binarized MNIST (Larochelle's fixed binarisation)</h1>" in text
    assert "negative log-likelihood per image (28×28 = 784 pixels)" in text   # from the cells
    assert "ours − paper" in text and "+1.90" in text and "+0.41" in text   # 82.5-80.6, 80.5-80.09
    assert "≤ 80.60" in text and "Published (other data)" not in text
    assert "published, not trained here" in text   # comparable: the published rows below ours
    assert "≤ IWAE-5" in text
    claim = claim_section(text)
    assert "Here: <b>holds</b>.</p>" in claim
    # differences 1.9, 2.0, 2.1: mean 2, t(0.975, 2) = 4.303 x 0.1 / sqrt(3) = 0.248
    assert pair_rows(claim) == [("zforcing", "zforcing_aux", "3", "+2.00", "[+1.75, +2.25]",
                                 "as claimed")]
    assert "<td>95.00%</td>" in claim and "<td>1.00 / 0.90</td>" in claim   # level, seed spread
    assert "findings/index.html" not in claim     # three seeds: resolved here
    for published in ("DRAW", "PixelRNN", "PixelVAE"):
        assert published in text
    # curves, latents, and per row a sample grid (+ reconstructions for the two latent rows)
    assert text.count("data:image/png;base64,") == 3 + 3 + 2


def test_imdb_claim_checked_as_ours_not_the_papers(project):
    text = page(project, "imdb.html")
    claim = claim_section(text)
    said, checked = claim[claim.index("<b>aux keeps the latents in use</b>"):].split("Checked here as:")
    # the paper's words carry no threshold; ours are labelled as ours
    assert "The paper claims: the auxiliary cost keeps the latent variables in use" in said
    assert "%" not in said and "floor" not in said
    assert ("zforcing_aux against zforcing: a KL above zforcing's and above 1 nat per sentence, "
            "active units above zero, and an IWAE perplexity at most 5% above zforcing's") in checked
    assert "Here: <b>not resolved (1 seed)</b>" in checked
    assert "zforcing_beta_hi" not in claim          # the fixed-β rows are not the claim
    assert "the film was &lt;fine&gt;" in text and "i loved it" in text and "poor film" in text
    assert "KL / word" in text and "perplexity (ELBO)" in text


def test_index_is_a_summary(project):
    text = page(project, "index.html")
    for name in ("timit.html", "mnist.html", "imdb.html"):
        assert f'href="{name}"' in text
    items = re.findall(r"<li>(.*?)</li>", text)
    assert items == ["Table 1 order: <b>not resolved (1 seed)</b>",
                     "aux beats KL annealing: <b>not checked (row zforcing_kla not in this run)</b>",
                     "Z-Forcing beats SRNN: <b>not checked (row srnn not in this run)</b>",
                     "aux lowers the NLL: <b>holds</b>",
                     "aux keeps the latents in use: <b>not resolved (1 seed)</b>"]
    assert all(len(re.sub("<[^>]+>", "", i)) <= 100 for i in items)   # each fits on a line
    # a figure of our rows per table, the rule once, the findings pointer
    assert text.count("data:image/png;base64,") == 3
    assert "How a verdict is reached</h2><p>A pair of rows" in text
    assert 'href="../findings/index.html"' in text
    assert "Larochelle's fixed binarisation" in text and "profile <b>test</b>" in text
    assert "105.00 [100.00 – 110.00]" in text and "≥ 68,132" in text
    # a stand-in's table (TIMIT, IMDB) has ours alone and the paper's apart; MNIST's side by side
    timit = text[text.index('href="timit.html"'):text.index('href="mnist.html"')]
    ours, published = timit.split("<summary>Published (other data)</summary>")
    assert "<summary>Ours</summary>" in ours and "68,132" not in ours and ">paper<" not in ours
    assert "≥ 68,132" in published
    mnist = text[text.index('href="mnist.html"'):text.index('href="imdb.html"')]
    assert "<summary>Ours beside the paper's</summary>" in mnist and "≤ 80.60" in mnist
    assert "Published (other data)" not in mnist
    assert "high</b>:" in text and "low</b>:" in text          # the confidence tags explained


def test_findings_pointer_only_when_seeds_are_short():
    """The pointer is a fixed link (the findings pages are committed), never read from the
    disk at render time: DVC would not know to render the page again when they change."""
    from pipeline.report import pages
    from pipeline.report.verdict import pairs_from_order, verdict
    short = tables_claim(verdict(pairs_from_order(["a", "b"], {"a": [1.0], "b": [2.0]})))
    enough = tables_claim(verdict(pairs_from_order(["a", "b"], {"a": [1, 2, 3], "b": [2, 3, 4.1]})))
    assert pages.findings_html([enough]) == ""
    line = pages.findings_html([short])
    assert 'href="../findings/index.html"' in line and "scripts/findings.sh" in line


def test_a_failed_claim_names_the_reversed_pair_and_nothing_else():
    from pipeline.report import pages
    from pipeline.report.verdict import pairs_from_order, verdict
    v = verdict(pairs_from_order(["a", "b", "c"], {"a": [1, 2, 3], "b": [11, 12, 13.5],
                                                    "c": [5, 6, 7.2]}, what="nats"))
    line = pages.claim_line(tables_claim(v))
    assert line.endswith("Here: <b>does not hold</b> — reversed: c behind b (nats).</p>")


def tables_claim(v_results):
    from pipeline.report.tables import Claim
    return Claim("c", "says", "", v_results[0], v_results[1], [])


@pytest.mark.parametrize("report", [{"dpi": "high"}, {"n_mels": 0}, {"colour": 1}])
def test_bad_report_setting_is_one_line(tmp_path, report):
    from pipeline.errors import UserError
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"profile_name": "x", "numerics": "exact", "aux_weight": 0, "seeds": [0],
                                 "benchmarks": {}, "model": {}, "train": {}, "eval": {},
                                 "report": report}))
    with pytest.raises(UserError, match=f"report.{next(iter(report))}"):
        stage.read_params(str(p))


def test_each_page_states_which_reproducibility_guarantee_applies(project):
    import pandas as pd

    from pipeline.report.pages import guarantee_line
    for bench in ("timit", "mnist", "imdb"):
        assert "byte for byte" in page(project, f"{bench}.html")
    assert "quirks do not apply" in page(project, "mnist.html")
    info = {"settings": {"train": {"compile": "off"},
                         "hardware": {"train_device": "cuda", "eval_device": "cpu", "machine": "x86_64"}}}
    line = guarantee_line(pd.DataFrame({"info": [info]}))
    assert "not byte-stable" in line and "cuda" in line and "scripts/verify.py" in line
    # a compiled evaluation alone also voids the byte guarantee
    info = {"settings": {"train": {"compile": "off"}, "eval": {"compile": "default"},
                         "hardware": {"train_device": "cpu", "eval_device": "cpu", "machine": "x86_64"}}}
    line = guarantee_line(pd.DataFrame({"info": [info]}))
    assert "not byte-stable" in line and "compile default" in line
