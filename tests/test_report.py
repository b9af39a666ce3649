"""Tables, plots and the HTML report (perturbscope.report), against hand-computed truths."""

from __future__ import annotations

import base64
import math
import re
import struct
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from perturbscope.audit.summary import summarize_groups
from perturbscope.cli.main import main
from perturbscope.experiments.tables import long_metrics, side_by_side, wide_table
from perturbscope.models.pair_cnn import LinearBinary
from perturbscope.report.browser import check_rendering, find_chromium
from perturbscope.report.html import HtmlReport, build_run_report, paper_reference, report_from_records
from perturbscope.report.plots import (
    compute_panel_example,
    plot_image_panel,
    plot_noise_curves,
    plot_norm_violins,
)
from perturbscope.sampling import uniform_ball

torch.set_num_threads(1)
ALPHAS = ("a1", "a2", "a5", "a10")


def _unit(pair: str, split: str, n: int, correct: list[bool], adv: list[bool], eps_l2: list[float],
          flips: dict[str, list[int]]) -> pd.DataFrame:
    """Audit-like records of one unit; eps_l1 = 10 * eps_l2, eps_linf = eps_l2 / 10."""
    e = np.array([v if a else np.nan for v, a in zip(eps_l2, adv, strict=True)], dtype=float)
    df = pd.DataFrame({"pair": pair, "split": split, "index": np.arange(n), "label": 0, "pred": 0,
                       "correct": correct, "adv_success": adv, "eps_l2": e, "eps_l1": 10 * e,
                       "eps_linf": e / 10, "source_index": np.arange(n) + 100})
    for k in ALPHAS:
        f = np.array(flips.get(k, [0] * n))
        df[f"flips_{k}"] = f
        df[f"rand_frac_{k}"] = f / 100
        scale = float(k[1:])
        for norm, m in (("l2", 1.0), ("l1", 40.0), ("linf", 0.3)):
            df[f"rand_min_{norm}_{k}"] = np.where(f > 0, m * scale * np.nan_to_num(e), np.nan)
        df[f"rand_min_index_{k}"] = np.where(f > 0, 3, -1)
    return df


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    # pair 7-8 train: 10 images, 8 correct; adv on 6 correct ones + 1 misclassified (ignored)
    correct = [True] * 8 + [False] * 2
    adv = [True] * 6 + [False, False, True, False]
    eps = [1, 2, 3, 4, 5, 6, 0, 0, 9, 0]
    a1 = [1, 0, 0, 0, 0, 0, 0, 0, 5, 0]
    a10 = [5, 9, 1, 0, 0, 0, 0, 0, 7, 0]
    u1 = _unit("7-8", "train", 10, correct, adv, eps, {"a1": a1, "a2": a1, "a5": a10, "a10": a10})
    # pair 7-8 test: 4 images, all correct, adv on 2 (eps 2 and 4), random a10 on one
    u2 = _unit("7-8", "test", 4, [True] * 4, [True, True, False, False], [2, 4, 0, 0],
               {"a10": [0, 3, 0, 0], "a5": [0, 3, 0, 0]})
    # pair 0-1: train 5 images all correct all adv; test 5 images, none attacked
    u3 = _unit("0-1", "train", 5, [True] * 5, [True] * 5, [1, 1, 1, 1, 1],
               {k: [2, 2, 2, 2, 2] for k in ALPHAS})
    u4 = _unit("0-1", "test", 5, [True, True, True, False, False], [False] * 5, [0] * 5, {})
    return pd.concat([u1, u2, u3, u4], ignore_index=True)


def test_summarize_groups_hand_computed(records):
    s = summarize_groups(records).set_index(["pair", "split"])
    r = s.loc[("7-8", "train")]
    assert (r.n_images, r.n_correct, r.n_adversarial) == (10, 8, 6)
    assert r.accuracy == pytest.approx(80.0)
    assert r.adversarial_susceptibility == pytest.approx(75.0)
    assert r.random_a1 == pytest.approx(100 / 6)  # image 8 (misclassified) must not count
    assert r.random_a10 == pytest.approx(50.0)
    assert (r.accuracy_k, r.accuracy_n, r.adversarial_susceptibility_k, r.adversarial_susceptibility_n) == (
        8, 10, 6, 8)
    assert (r.random_a10_k, r.random_a10_n, r.eps_l2_n) == (3, 6, 6)
    # eps_l2 = 1..6: mean 3.5, sd 1.8708, t(0.975, 5) = 2.5706 -> 3.5 -+ 1.9633
    assert (r.eps_l2_mean_lo, r.eps_l2_mean_hi) == pytest.approx((1.5367, 5.4633), abs=1e-4)
    assert r.eps_l2_mean == pytest.approx(3.5)
    assert r.eps_l2_sd == pytest.approx(np.std([1, 2, 3, 4, 5, 6], ddof=1))
    assert r.eps_l1_mean == pytest.approx(35.0) and r.eps_linf_mean == pytest.approx(0.35)
    t = s.loc[("7-8", "test")]
    assert t.random_a10 == pytest.approx(50.0) and t.random_a1 == 0.0
    z = s.loc[("0-1", "test")]  # nothing attacked: percentages over |A| are NaN, never 0
    assert z.accuracy == pytest.approx(60.0) and z.adversarial_susceptibility == 0.0
    assert math.isnan(z.random_a10) and math.isnan(z.eps_l2_mean)
    assert s.loc[("0-1", "train")].eps_l2_sd == 0.0  # 5 equal values: sd 0, not NaN


def test_side_by_side_and_wide_table(records):
    long = long_metrics(summarize_groups(records))
    paper = pd.DataFrame([("accuracy", "train", "7-8", 99.84, math.nan),
                          ("eps_l2", "test", "7-8", 2.24, 1.01)],
                         columns=["metric", "split", "pair", "value", "sd"])
    sbs = side_by_side(long, paper).set_index(["metric", "split", "pair"])
    assert sbs.loc[("accuracy", "train", "7-8"), "diff"] == pytest.approx(80.0 - 99.84)
    assert sbs.loc[("eps_l2", "test", "7-8"), "diff"] == pytest.approx(3.0 - 2.24)
    assert math.isnan(sbs.loc[("accuracy", "test", "7-8"), "diff"])
    w = wide_table(side_by_side(long, paper), ["accuracy", "eps_l2"])
    assert list(w.columns.get_level_values(0).unique()) == ["0 vs 1", "7 vs 8"]  # numeric pair order
    assert w.loc[("Accuracy %", "train"), ("7 vs 8", "paper")] == "99.84"
    # 8 of 10 correct: Clopper-Pearson [44.39, 97.48]; the paper's 99.84 lies outside: marked *
    assert w.loc[("Accuracy %", "train"), ("7 vs 8", "ours")] == "80.00 [44.4, 97.5] (8/10)"
    assert w.loc[("Accuracy %", "train"), ("7 vs 8", "diff")] == "-19.84*"
    # eps_l2 2 and 4: mean 3, sd sqrt(2), t(0.975, 1) = 12.706: the mean's interval 3 -+ 12.71
    l2 = w.loc[("Adv. attack norm L2, mean (sd)", "test"), "7 vs 8"]
    assert (l2["ours"], l2["paper"], l2["diff"]) == ("3.00 (1.41) [-9.71, 15.71]", "2.24 (1.01)", "+0.76")
    assert sbs.loc[("accuracy", "train", "7-8"), "paper_outside"]
    assert not sbs.loc[("eps_l2", "test", "7-8"), "paper_outside"]
    r = sbs.loc[("random_a10", "train", "7-8")]  # 3 of the 6 attacked correct images
    assert (r["k"], r["n"]) == (3, 6) and r["lo"] == pytest.approx(11.81, abs=0.01)
    with pytest.raises(ValueError, match="lack columns"):
        side_by_side(long.drop(columns="pair"), None)


def test_paper_reference_holds_the_papers_fashion_mnist_tables():
    p = paper_reference("fashion-mnist-subset").set_index(["metric", "split", "pair"])
    # values of the paper's Tables 20 and 21 (spec section 5.2/5.3)
    assert p.loc[("accuracy", "train", "7-8"), "value"] == 99.84
    assert p.loc[("adversarial_susceptibility", "test", "2-3"), "value"] == 27.36
    assert p.loc[("random_a10", "test", "7-8"), "value"] == 84.58
    assert p.loc[("random_a5", "train", "4-5"), "value"] == 10.71
    assert tuple(p.loc[("eps_l2", "test", "7-8"), ["value", "sd"]]) == (2.24, 1.01)
    assert tuple(p.loc[("eps_linf", "train", "0-1"), ["value", "sd"]]) == (0.45, 0.22)
    assert len(p) == 9 * 2 * (2 + 4 + 3)
    assert paper_reference("digits") is None


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.images = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("data-kind") == "table":
            self.tables.append(a["id"])
        if tag == "img":
            self.images.append((a.get("id"), a.get("src", "")))


def _png_size(src: str) -> tuple[int, int]:
    assert src.startswith("data:image/png;base64,")
    raw = base64.b64decode(src.split(",", 1)[1], validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


@pytest.fixture(scope="module")
def report_file(records, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    paper = pd.DataFrame([("accuracy", "train", "7-8", 99.84, math.nan)],
                         columns=["metric", "split", "pair", "value", "sd"])
    cfg = {"source": "fashion-mnist", "train_images": 200, "audit_images": 10, "model": {"width": 0.25},
           "train": {"epochs": 3}, "audit": {"draws": 100, "alphas": [1, 2, 5, 10], "steps": 64},
           "marker": "cfg-marker-123"}
    rep = report_from_records(records, cfg, {"torch": "9.9.9-test", "python": "3.x"}, paper=paper)
    return rep.write(tmp / "report.html")


def test_report_contains_every_table_and_plot(report_file):
    text = report_file.read_text()
    c = _Collect()
    c.feed(text)
    assert len(c.tables) == 5  # scale, Table 20, Table 21, configuration, versions
    assert len(c.images) == 3  # the paradox (eps_vs_flip_rate), Figures 17 and 18
    for _, src in c.images:
        w, h = _png_size(src)
        assert w > 300 and h > 300
    for needle in ("Table 20 layout", "Table 21 layout", "Figure 17", "Figure 18", "Run configuration",
                   "cfg-marker-123", "9.9.9-test", "Software versions", "-19.84*", "99.84",
                   "80.00 [44.4, 97.5] (8/10)", "Clopper-Pearson", "Attack: unclipped (paper); random probe: "
                   "unclipped (paper)", "random probe and the [0, 1] box",
                   # 0-1 test: 3 of 5 correct (near chance) and none of the 3 flipped by the attack
                   "Warning: Weak model", "pair 0-1 test 60.0%", "The attack flipped at most half",
                   "line-search largest L2 scale", "restarts of a collapsed training", "dropout"):
        assert needle in text, needle
    assert not re.search(r"(src|href)=\"(?!data:|#)", text), "the report must not reference other files"


@pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (Debian package chromium)")
def test_report_renders_in_chromium_with_all_images(report_file, tmp_path):
    chk = check_rendering(report_file)
    assert chk.tables == 5 and len(chk.images) == 3
    assert chk.all_loaded, chk.failed
    assert all(im.width > 300 for im in chk.images)
    # the check can fail: a page with a corrupt image is caught
    bad = tmp_path / "bad.html"
    bad.write_text(report_file.read_text().replace("base64,iVBORw0KGgo", "base64,AAAAiVBORw0KGgo", 1))
    chk2 = check_rendering(bad)
    assert not chk2.all_loaded and len(chk2.failed) == 1


def test_violin_plots_write_pngs_and_reject_bad_input(records, tmp_path):
    p = plot_norm_violins(records, tmp_path / "v.png", source="random", alpha=10)
    assert _png_size("data:image/png;base64," + base64.b64encode(p.read_bytes()).decode())[0] > 300
    with pytest.raises(ValueError, match="alpha=3"):
        plot_norm_violins(records, tmp_path / "x.png", source="random", alpha=3)
    with pytest.raises(ValueError, match="source"):
        plot_norm_violins(records, tmp_path / "x.png", source="universal")
    with pytest.raises(ValueError, match="lack columns"):
        plot_norm_violins(records.drop(columns="eps_l1"), tmp_path / "x.png")
    with pytest.raises(ValueError, match="no 'ball'"):
        cols = ("pair", "split", "noise_kind", "noise_mean_l2", "accuracy", "adversarial_susceptibility",
                "eps_l2_mean", "eps_l2_sd")
        plot_noise_curves(pd.DataFrame({c: [] for c in cols}), "ball", tmp_path / "n.png")
    with pytest.raises(ValueError, match="not a PNG"):
        HtmlReport("t").add_figure(b"GIF89a....", "x")
    with pytest.raises(ValueError, match="empty"):
        report_from_records(records.iloc[:0], {})
    with pytest.raises(TypeError):
        report_from_records(records, ["not", "a", "dict"])
    with pytest.raises(ValueError, match="split"):
        report_from_records(records.drop(columns="split"), {})


def test_image_panel_on_a_linear_model_matches_the_geometry(tmp_path):
    """Known truth: for a plane, eps_adv is the distance (up to one step) and a draw flips iff it
    crosses the plane, which we count independently."""
    g = torch.Generator().manual_seed(3)
    d_shape = (1, 4, 4)
    w = torch.randn(16, generator=g, dtype=torch.float64)
    x = torch.rand((12, *d_shape), generator=g)
    model = LinearBinary(w, bias=-float(w @ x[0].reshape(-1).double()) + 0.2)
    y = (model(x) >= 0.5).long()
    task = SimpleNamespace(x=x, y=y, class_names=("zero", "one"))
    s_max, steps, alpha, draws = 4.0, 400, 2.0, 400
    ex = compute_panel_example(model, task, index=0, alpha=alpha, draws=draws, seed=5, s_max=s_max,
                               steps=steps)
    dist = float(model.distance(x[:1])[0])
    assert dist <= ex.eps_l2 <= dist + s_max / steps + 1e-6
    assert ex.predictions["original"] == int(y[0])
    assert ex.predictions["adversarial"] != int(y[0])
    zeta = uniform_ball(draws, d_shape, seed=5).double().reshape(draws, -1)
    margin = float(w @ x[0].reshape(-1).double() + model.bias)
    crosses = np.sign(margin + alpha * ex.eps_l2 * (zeta @ w).numpy()) != np.sign(margin)
    assert ex.flip_count == int(crosses.sum()) and 0 < ex.flip_count < draws
    assert ex.predictions["random_flip"] != int(y[0]) and ex.predictions["random_no_flip"] == int(y[0])
    l1, l2, linf = ex.norms["random_flip"]
    assert l2 <= alpha * ex.eps_l2 + 1e-5 and linf <= l2 <= l1
    assert ex.norms["adversarial"][1] == pytest.approx(ex.eps_l2, rel=1e-5)
    p = plot_image_panel(ex, tmp_path / "panel.png", title="plane")
    assert p.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="index"):
        compute_panel_example(model, task, index=99)


def _store_with_run(tmp_path, records):
    from perturbscope.experiments.store import ResultsStore

    st = ResultsStore(tmp_path / "s.sqlite")
    cfg = {"experiment": "test", "source": "fashion-mnist-subset", "audit_images": 10,
           "audit": {"alphas": [1, 2, 5, 10], "draws": 100, "seed": 0}, "model": {"width": 0.125}}
    rid, _ = st.open_run("unit-test", cfg)
    keys = [f"pair={p}/split={s}" for p, s in (("7-8", "train"), ("7-8", "test"), ("0-1", "train"),
                                               ("0-1", "test"))]
    st.plan_units(rid, keys + ["pair=1-2/split=test"])
    for k in keys:
        p, s = k[5:8], k.split("=")[-1]
        part = records[(records.pair == p) & (records.split == s)].drop(columns=["pair"])
        st.commit_unit(rid, k, part)
    return st, rid


def test_build_run_report_from_store_and_cli(records, tmp_path):
    st, rid = _store_with_run(tmp_path, records)
    out = build_run_report(st, "unit", tmp_path / "r.html")  # name prefix
    st.close()
    text = out.read_text()
    c = _Collect()
    c.feed(text)
    assert len(c.tables) == 5 and len(c.images) == 3
    assert "Incomplete run: 4 of 5 units" in text
    assert "no stored model" in text
    assert "retried" not in text


def test_store_report_warns_about_a_retried_training(records, tmp_path):
    """The training history kept with a pair's model says it collapsed and was retrained."""
    st, rid = _store_with_run(tmp_path, records)
    st.put_artifact(rid, "model/pair=7-8", b"weights", {"history": {"attempts": 3, "seed": 15838}})
    text = build_run_report(st, rid, tmp_path / "r.html", panels=False).read_text()
    st.close()
    assert "Training collapsed to one class and was retried for pair 7-8 (trained 3 times, kept seed 15838)" \
        in text
    rc = main(["report", rid, "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "c.html"),
               "--no-panels", "--no-paper"])
    assert rc == 0 and (tmp_path / "c.html").stat().st_size > 10_000
    assert main(["report", "nope", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert main(["report", rid, "--store", str(tmp_path / "missing.sqlite")]) == 2


def test_store_report_draws_an_image_panel_from_the_stored_model(records, tmp_path):
    """The panel is recomputed from the model kept with the run, on the image the records name."""
    import io

    from perturbscope.data import load_pair_task
    from perturbscope.experiments.store import ResultsStore
    from perturbscope.models.classifier import as_classifier
    from perturbscope.models.pair_cnn import PairCNN

    task = load_pair_task("fashion-mnist-subset", "test", 7, 8, limit=6, seed=0)
    torch.manual_seed(0)
    model = PairCNN(width=0.125).eval()
    with torch.no_grad():  # centre the logits on the 6 images: some correct, all close to the boundary
        model.head[-1].bias -= model.logit(task.x).median()
    ok = (as_classifier(model, "sigmoid").predict(task.x).cpu() == task.y).numpy()
    assert ok.any()
    k = int(np.flatnonzero(ok)[0])
    n = len(task)
    rec = _unit("7-8", "test", n, [True] * n, [i == k for i in range(n)], [1.0] * n,
                {"a10": [3 if i == k else 0 for i in range(n)]})
    rec["source_index"] = task.indices.numpy()
    cfg = {"source": "fashion-mnist-subset", "audit_images": 6, "data_seed": 0,
           "model": {"width": 0.125, "dropout": 0.4},
           "audit": {"alphas": [1, 2, 5, 10], "draws": 50, "seed": 0, "s_max": 10.0, "steps": 128}}
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    with ResultsStore(tmp_path / "p.sqlite") as st:
        rid, _ = st.open_run("panel", cfg)
        st.commit_unit(rid, "pair=7-8/split=test", rec.drop(columns=["pair", "split"]))
        st.put_artifact(rid, "model/pair=7-8", buf.getvalue())
        out = build_run_report(st, rid, tmp_path / "p.html")
    text = out.read_text()
    c = _Collect()
    c.feed(text)
    assert [i for i, _ in c.images][-1] == "figure-image-panel-7-vs-8", text[:3000]
    assert f"test image {k}:" in text
    assert "the run recorded 3)" in text
