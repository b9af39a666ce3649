"""One self-contained HTML report of a run: tables (ours beside the paper's), plots embedded as
base64 PNG, the configuration and the software versions. No external file, script or font.

Entry points:

* :func:`build_run_report`: a run of the results store (``perturbscope reproduce``), read
  through :class:`~perturbscope.experiments.store.ResultsStore`;
* :func:`report_from_records`: the same from a records DataFrame and a config dict (the
  adapter for records that are not in a store);
* :func:`noise_report`: the noise-training experiment (:mod:`perturbscope.experiments.noise`);
* :class:`HtmlReport`: the page builder they share.

Every table is a ``<table data-kind="table" id=...>`` and every figure an
``<img data-kind="figure" id=...>`` so tests and scripts can list them.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from perturbscope.audit.config import box_mode
from perturbscope.audit.schema import alpha_keys
from perturbscope.audit.summary import summarize_groups
from perturbscope.experiments.tables import (
    long_metrics,
    pair_sort_key,
    paper_long,
    protocol_rows,
    side_by_side,
    wide_table,
)
from perturbscope.fileio import atomic_write_text
from perturbscope.paper import PAPER_PROTOCOL

__all__ = ["HtmlReport", "report_from_records", "build_run_report", "noise_report", "paper_reference",
           "current_versions", "PAPER_PROTOCOL"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1400px;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0 1.2em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f2f2f2} td:first-child,th:first-child{text-align:left}
tbody tr:nth-child(even){background:#fafafa}
.scroll{overflow-x:auto} figure{margin:1em 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.caption{color:#555;font-size:.9em;max-width:1100px}
.warn{background:#fff4e5;border-left:4px solid #f90;padding:.5em 1em}
pre{background:#f6f8fa;padding:1em;overflow-x:auto;font-size:.8em} nav li{margin:.1em 0}
"""


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "item"
    slug, k = base, 2
    while slug in taken:
        slug, k = f"{base}-{k}", k + 1
    taken.add(slug)
    return slug


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


@dataclass
class HtmlReport:
    """A page built section by section; :meth:`render` returns the HTML, :meth:`write` saves it.

    ``tables`` and ``figures`` list the ids of what was added, in order.
    """

    title: str
    subtitle: str = ""
    _body: list[str] = field(default_factory=list)
    _toc: list[tuple[str, str]] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set)
    tables: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def add_section(self, heading: str) -> str:
        sid = _slug(heading, self._ids)
        self._toc.append((sid, heading))
        self._body.append(f'<h2 id="{sid}">{_esc(heading)}</h2>')
        return sid

    def add_paragraph(self, text: str, css_class: str = "") -> None:
        cls = f' class="{_esc(css_class)}"' if css_class else ""
        self._body.append(f"<p{cls}>{_esc(text)}</p>")

    def add_table(self, df: pd.DataFrame, title: str, caption: str = "") -> str:
        """Add ``df`` (index shown, MultiIndex columns as grouped headers) under a ``<h3>``."""
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
        tid = _slug("table " + title, self._ids)
        body = df.to_html(escape=True, na_rep="n/a", border=0, table_id=tid)
        body = body.replace("<table ", '<table data-kind="table" ', 1)
        cap = f'<p class="caption">{_esc(caption)}</p>' if caption else ""
        self._body.append(f"<h3>{_esc(title)}</h3>{cap}<div class=\"scroll\">{body}</div>")
        self.tables.append(tid)
        return tid

    def add_figure(self, png: bytes | str | os.PathLike, title: str, caption: str = "") -> str:
        """Embed a PNG (bytes or a file path) as a base64 data URI."""
        data = png if isinstance(png, bytes | bytearray) else Path(png).read_bytes()
        if not bytes(data[:8]) == PNG_MAGIC:
            raise ValueError(f"figure {title!r} is not a PNG image")
        fid = _slug("figure " + title, self._ids)
        b64 = base64.b64encode(bytes(data)).decode("ascii")
        cap = f"<figcaption><b>{_esc(title)}.</b> {_esc(caption)}</figcaption>"
        self._body.append(f'<figure><img data-kind="figure" id="{fid}" alt="{_esc(title)}" '
                          f'src="data:image/png;base64,{b64}">{cap}</figure>')
        self.figures.append(fid)
        return fid

    def add_key_values(self, items: Mapping[str, Any], title: str, caption: str = "") -> str:
        """A two-column table of ``items`` (nested dicts flattened to ``a.b.c`` keys)."""
        flat = _flatten(items)
        df = pd.DataFrame({"value": [_short(v) for v in flat.values()]},
                          index=pd.Index(list(flat.keys()), name="setting"))
        return self.add_table(df, title, caption)

    def add_pre(self, text: str) -> None:
        self._body.append(f"<pre>{_esc(text)}</pre>")

    def render(self) -> str:
        toc = "".join(f'<li><a href="#{sid}">{_esc(h)}</a></li>' for sid, h in self._toc)
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        sub = f"<p>{_esc(self.subtitle)}</p>" if self.subtitle else ""
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{_esc(self.title)}</title><style>{_CSS}</style></head><body>"
                f"<h1>{_esc(self.title)}</h1>{sub}<p class=\"caption\">Generated {stamp} by perturbscope. "
                f"All norms in pixel units of images in [0, 1].</p><nav><ul>{toc}</ul></nav>"
                + "\n".join(self._body) + "</body></html>\n")

    def write(self, path: str | os.PathLike) -> Path:
        """Write :meth:`render` to ``path`` atomically."""
        return atomic_write_text(Path(path), self.render())


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _short(v: Any) -> str:
    if isinstance(v, list | tuple):
        s = ", ".join(json.dumps(x) if isinstance(x, list | dict) else str(x) for x in v)
        return s if len(s) < 300 else s[:297] + "..."
    return "None" if v is None else str(v)


def current_versions() -> dict[str, str]:
    """Software versions of this process (python, platform, perturbscope, torch, numpy, ...)."""
    from perturbscope.experiments.store import software_versions

    return software_versions(extra=("matplotlib",))


# ---------------------------------------------------------------------------------------------
# the paper's reference values
# ---------------------------------------------------------------------------------------------

def paper_reference(dataset: str = "fashion-mnist", doc: Mapping[str, Any] | None = None
                    ) -> pd.DataFrame | None:
    """The paper's tables in long form ``(metric, split, pair, value, sd)``:
    :func:`perturbscope.experiments.tables.paper_long`."""
    return paper_long(dataset, doc)


# ---------------------------------------------------------------------------------------------
# report of a sweep
# ---------------------------------------------------------------------------------------------

def _scale_table(config: Mapping[str, Any]) -> pd.DataFrame | None:
    rows = protocol_rows(config)
    if all(r["ours"] in (None, "all", 0) for r in rows):
        return None
    table = {r["setting"]: {"this run": _short(r["ours"]), "paper": _short(r["paper"]),
                            "differs": "" if r["same"] else "yes"} for r in rows}
    return pd.DataFrame.from_dict(table, orient="index").rename_axis("setting")


def _panel_figures(report: HtmlReport, panels: Sequence[tuple[str, bytes | Path, str]]) -> None:
    for pair, png, caption in panels:
        report.add_figure(png, f"Image panel, {pair.replace('-', ' vs ')}", caption)


def report_from_records(
    records: pd.DataFrame,
    config: Mapping[str, Any],
    versions: Mapping[str, str] | None = None,
    *,
    title: str = "perturbscope report",
    paper: pd.DataFrame | None | str = "auto",
    panels: Sequence[tuple[str, bytes | Path, str]] = (),
    workdir: str | os.PathLike | None = None,
    notes: Sequence[str] = (),
    histories: Mapping[str, Mapping[str, Any]] | None = None,
) -> HtmlReport:
    """Build the report of a sweep from its per-image ``records``.

    Args:
        records: one row per image per unit with ``pair`` ("7-8"), ``split`` and the columns of
            :func:`perturbscope.audit.audit` (``correct, adv_success, eps_{l1,l2,linf},
            flips_a*, rand_min_{l1,l2,linf}_a*``).
        config: the run's configuration (shown in full; ``source`` picks the paper's dataset).
        versions: software versions (default: this process's, :func:`current_versions`).
        paper: the paper's values in long form (:func:`paper_reference`), ``None`` for none,
            ``"auto"`` to look them up for ``config["source"]``.
        panels: ``(pair, png, caption)`` image panels (Figures 11/12 style) to embed.
        workdir: where plot PNGs are drawn (default: a temporary folder, removed after).
        notes: extra paragraphs shown at the top (e.g. an incomplete run).
        histories: per pair (``"7-8"``) its training history (``attempts``, ``seed``): a retried
            (collapsed) training is warned about.

    Returns:
        The :class:`HtmlReport` (call ``.write(path)``).

    Raises:
        ValueError: records empty or lacking columns.
    """
    from perturbscope.audit.quality import outside_summary, quality_warnings
    from perturbscope.report.audit_plot import plot_eps_vs_flip_rate
    from perturbscope.report.plots import plot_norm_violins

    if not isinstance(records, pd.DataFrame):
        raise TypeError(f"records must be a pandas DataFrame, got {type(records).__name__}")
    if records.empty:
        raise ValueError("records are empty: no finished unit to report on")
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    summary = summarize_groups(records, ("pair", "split"))  # checks the columns
    source = str(config.get("source", ""))
    if isinstance(paper, str):
        if paper != "auto":
            raise ValueError(f"paper must be a DataFrame, None or 'auto', got {paper!r}")
        paper = paper_reference(str(config.get("paper") or source))  # None for a data set the paper lacks
    rep = HtmlReport(title, subtitle=f"data: {source or 'unknown'}; pairs: "
                     + ", ".join(sorted(dict.fromkeys(map(str, records["pair"])))))
    rep.add_section("Summary")
    for n in notes:
        rep.add_paragraph(n, "warn")
    for w in quality_warnings(records, paper=paper, histories=histories, config=config):
        rep.add_paragraph("Warning: " + w, "warn")
    n_img = records.groupby("split").size().to_dict()
    rep.add_paragraph("Images audited: " + ", ".join(f"{k} {v}" for k, v in n_img.items())
                      + f"; {records['pair'].nunique()} pair(s).")
    au = config.get("audit") or {}
    bounds = au.get("bounds", (0, 1))
    rep.add_paragraph(f"Attack: {box_mode(bool(au.get('clip_attack', False)), bounds)}; "
                      f"random probe: {box_mode(bool(au.get('clip_probe', False)), bounds)}. "
                      "The paper's line search and probe are unclipped: x + delta may leave [0, 1]; the "
                      "clipped variants (--clip-attack, --clip-probe) measure distances as foolbox and ART "
                      "do.")
    scale = _scale_table(config)
    if scale is not None:
        rep.add_table(scale, "Scale of this run vs the paper's protocol",
                      "Numbers differ from the paper's where this run is scaled down (fewer images, "
                      "epochs, draws or a narrower network).")

    long = side_by_side(long_metrics(summary), paper)
    have_paper = paper is not None and long["paper"].notna().any()
    rand = [f"random_{k}" for k in alpha_keys(records.columns)]
    note = ("Cells: ours | paper | diff = ours - paper; diff marked * where the paper's value lies outside "
            "our 95% interval." if have_paper
            else "The paper's values are not shown (none for this data set, or left out); ours only.")
    rep.add_section("Tables")
    rep.add_table(wide_table(long, ["accuracy", "adversarial_susceptibility", *rand], with_paper=have_paper),
                  "Accuracy and susceptibility (%), paper Table 20 layout",
                  "accuracy = 100|C|/|T|, adversarial = 100|A|/|C|, random(alpha) = 100|R_alpha|/|A| "
                  "(paper eqs 6-8). Ours: percentage [95% Clopper-Pearson interval] (k/n). "
                  f"{note}")
    rep.add_table(wide_table(long, ["eps_l1", "eps_l2", "eps_linf"], with_paper=have_paper),
                  "Norms of the smallest adversarial perturbation, mean (sd), paper Table 21 layout",
                  "Over the adversarially susceptible images; ours: mean (sd, ddof=1) [95% Student-t "
                  f"interval of the mean]. {note}")
    if have_paper:
        d = long.dropna(subset=["diff"])
        worst = d.loc[d["diff"].abs().idxmax()] if len(d) else None
        if worst is not None:
            n_out = int(d["paper_outside"].sum()) if "paper_outside" in d.columns else 0
            rep.add_paragraph(f"{len(d)} numbers compared with the paper; the paper's value lies outside our "
                              f"95% interval for {n_out} of them; largest absolute difference "
                              f"{worst['diff']:+.2f} ({worst['metric']}, {worst['split']}, "
                              f"pair {worst['pair']}).")
    box = outside_summary(records)
    if len(box):
        bt = box.assign(**{"outside, median %": (100 * box["outside_median"]).round(1),
                           "outside, 90th percentile %": (100 * box["outside_p90"]).round(1),
                           "radius alpha*eps_adv, median": box["radius_median"].round(3)})
        keys = [c for c in ("pair", "split") if c in bt.columns]
        rep.add_table(bt[[*keys, "alpha", "images", "radius alpha*eps_adv, median", "outside, median %",
                          "outside, 90th percentile %"]].set_index([*keys, "alpha"]),
                      "How far the random perturbations leave [0, 1]",
                      "Per image, the share of a random draw's L2 norm that lies outside the box, "
                      "||x + d - clip(x + d)|| / ||d|| (mean over its first 16 draws; column "
                      "probe_outside_a*). "
                      "The paper's probe is unclipped, so these inputs are not images; a clipped probe "
                      "(--clip-probe) removes exactly this part.")

    rep.add_section("Plots")
    with tempfile.TemporaryDirectory(prefix="perturbscope-report-") as tmp:
        wd = Path(workdir) if workdir is not None else Path(tmp)
        alphas = [float(k[1:]) for k in alpha_keys(records.columns)]
        if alphas:
            pe = plot_eps_vs_flip_rate(records, alphas, wd / "eps_vs_flip_rate.png",
                                       draws=au.get("draws"), s_max=au.get("s_max"))
            rep.add_figure(pe, "The paradox: adversarial vs random susceptibility",
                           "Left: share of correctly classified images the attack flips, and share of those "
                           "that at least one random draw of size alpha * eps_adv flips, with 95% "
                           "Clopper-Pearson intervals, per split (pairs pooled). Right: per attacked image, "
                           "the fraction of flipping draws against eps_adv, one panel per split.")
        p17 = plot_norm_violins(records, wd / "violin_adversarial.png", source="adversarial")
        rep.add_figure(p17, "Norms of the smallest adversarial perturbations (paper Figure 17)",
                       "L1, L2 and Linf norms per pair; blue train, orange test; lines: median and range.")
        keys = alpha_keys(records.columns)
        if keys:
            p18 = plot_norm_violins(records, wd / "violin_random.png", source="random")
            rep.add_figure(p18, f"Norms of the smallest flipping random perturbations, alpha={keys[-1][1:]} "
                           "(paper Figure 18)",
                           "Per image, the flipping random draw with the smallest L2 norm; images that no "
                           "draw flips are absent.")
        _panel_figures(rep, panels)
    if not panels:
        rep.add_paragraph("No image panels (Figures 11/12): they need the trained models.")

    rep.add_section("Configuration")
    rep.add_key_values(dict(config), "Run configuration")
    rep.add_pre(json.dumps(dict(config), indent=2, default=str))
    rep.add_section("Software versions")
    rep.add_key_values(dict(versions) if versions else current_versions(), "Software versions")
    return rep


def _store_panels(store: Any, run_id: str, config: Mapping[str, Any], records: pd.DataFrame,
                  workdir: Path, data_path: str | None, max_pairs: int | None,
                  device: Any = None) -> tuple[list, list[str]]:
    """Image panels from the models kept in the store (artifacts ``model/pair=i-j``), computed on
    ``device`` (default: the CPU)."""
    import io

    import torch

    from perturbscope.data.sources import load_source
    from perturbscope.models.pair_cnn import PairCNN
    from perturbscope.report.plots import compute_panel_example, plot_image_panel

    panels, notes = [], []
    audit = config.get("audit") or {}
    model_cfg = config.get("model") or {}
    keys = alpha_keys(records.columns)
    if not keys:
        return panels, ["no random-probe columns: no image panels"]
    key = keys[-1]
    pairs = sorted(dict.fromkeys(records["pair"]), key=pair_sort_key)
    for pair in pairs[:max_pairs] if max_pairs is not None else pairs:
        art = store.get_artifact(run_id, f"model/pair={pair}")
        if art is None:
            notes.append(f"pair {pair}: no stored model, no image panel")
            continue
        rec = records[(records["pair"] == pair) & (records["split"] == "test")]
        if rec.empty:
            rec = records[records["pair"] == pair]
        good = rec[rec["adv_success"].astype(bool) & rec["correct"].astype(bool)]
        some = good[(good[f"flips_{key}"] > 0) & (good[f"flips_{key}"] < int(audit.get("draws", 0) or 1))]
        pick = some if len(some) else good
        if pick.empty:
            notes.append(f"pair {pair}: no attacked image, no image panel")
            continue
        row = pick.iloc[0]
        split = str(row["split"])
        try:
            i, j = (int(x) for x in str(pair).split("-"))
            # test: the audited subset itself; train: all training images of the pair
            opts = {"size": config["image_size"]} if config.get("image_size") else {}  # GTSRB's crops
            task = load_source(config["source"], split, classes=(i, j), path=data_path,
                               limit=config.get("audit_images") if split == "test" else None,
                               seed=config.get("data_seed", 0), **opts)
            if "source_index" in row.index and pd.notna(row["source_index"]):
                hit = (task.indices == int(row["source_index"])).nonzero()
                if len(hit) == 0:
                    raise ValueError(f"image {int(row['source_index'])} not found in the {split} data")
                index = int(hit[0, 0])
            else:
                index = int(row["index"])
        except (FileNotFoundError, ValueError, KeyError) as exc:
            notes.append(f"pair {pair}: data not available for an image panel ({exc})")
            continue
        if model_cfg.get("arch", "PairCNN") != "PairCNN":
            notes.append(f"pair {pair}: model {model_cfg.get('arch')!r} is not PairCNN, no image panel")
            continue
        model = PairCNN(in_channels=task.x.shape[1], width=float(model_cfg.get("width", 1.0)),
                        deep=bool(model_cfg.get("deep", False)), dropout=float(model_cfg.get("dropout", 0.4)))
        try:
            model.load_state_dict(torch.load(io.BytesIO(art[0]), map_location="cpu", weights_only=True))
        except (RuntimeError, ValueError) as exc:
            notes.append(f"pair {pair}: stored weights do not fit the configured model ({exc})")
            continue
        model.eval()
        if device is not None:
            from dataclasses import replace

            model = model.to(device)
            task = replace(task, x=task.x.to(device), y=task.y.to(device))
        try:
            ex = compute_panel_example(model, task, index=index, alpha=float(key[1:]),
                                       draws=int(audit.get("draws", 2000)), seed=int(audit.get("seed", 0)),
                                       s_max=float(audit.get("s_max", 10.0)),
                                       steps=int(audit.get("steps", 256)), refine_tol=audit.get("refine_tol"))
        except ValueError as exc:  # e.g. the stored model disagrees with the records
            notes.append(f"pair {pair}: no image panel ({exc})")
            continue
        png = plot_image_panel(ex, workdir / f"panel_{pair}.png",
                               title=f"{pair.replace('-', ' vs ')} ({split})")
        recorded = int(row[f"flips_{key}"])
        panels.append((pair, png.read_bytes(),
                       f"{split} image {ex.index}: (a) original, (b) adversarial, (c) a random perturbation "
                       f"of L2 size alpha*eps_adv that does not flip it, (d) one that does. Recomputed: "
                       f"{ex.flip_count} of {ex.draws} draws flip it (the run recorded {recorded})."))
    return panels, notes


def build_run_report(store: Any, run: str, out: str | os.PathLike, *, panels: bool = True,
                     max_panels: int | None = None, data_path: str | None = None,
                     paper: pd.DataFrame | None | str = "auto", device: Any = None) -> Path:
    """Write the HTML report of ``run`` of ``store`` to ``out``; returns the path.

    Args:
        store: a :class:`~perturbscope.experiments.store.ResultsStore` (or a path to one).
        run: run id, name, or an unambiguous prefix.
        panels: add an image panel per pair from the models stored with the run (needs the
            data set; skipped with a note when unavailable).
        max_panels: at most this many pairs get a panel (default all).
        data_path: folder of the Fashion-MNIST IDX files for the panels.
        paper: see :func:`report_from_records`.
        device: where the panels' models run (default: the CPU).
    """
    from perturbscope.experiments.store import ResultsStore

    own = not hasattr(store, "records")
    if own:
        if not Path(store).is_file():
            raise FileNotFoundError(f"results store {store} does not exist")
        store = ResultsStore(store, read_only=True)
    try:
        rid = store.resolve(run)
        config = store.run_config(rid)
        records = store.records(rid)
        versions = store.versions(rid)
        name = store.run_name(rid) if hasattr(store, "run_name") else rid
        notes = []
        if hasattr(store, "units"):
            u = store.units(rid)
            done = int((u["status"] == "done").sum())
            if done < len(u):
                notes.append(f"Incomplete run: {done} of {len(u)} units finished; tables cover the "
                             f"finished ones only. Rerun the same command to finish it.")
        if records.empty:
            raise ValueError(f"run {name} ({rid}) has no finished unit yet: nothing to report")
        if config.get("experiment") == "noise-training":
            return _noise_run_report(store, rid, name, versions, notes, out)
        with tempfile.TemporaryDirectory(prefix="perturbscope-report-") as tmp:
            figs: list = []
            if panels and hasattr(store, "get_artifact"):
                figs, pnotes = _store_panels(store, rid, config, records, Path(tmp), data_path, max_panels,
                                             device=device)
                notes.extend(pnotes)
            histories = {}
            for key in (store.artifact_keys(rid) if hasattr(store, "artifact_keys") else []):
                if key.startswith("model/pair="):
                    art = store.get_artifact(rid, key)
                    histories[key.split("=", 1)[1]] = (art[1] if art else {}).get("history") or {}
            rep = report_from_records(records, config, versions, title=f"perturbscope report: run {name}",
                                      paper=paper, panels=figs, workdir=tmp, notes=notes,
                                      histories=histories)
            rep.subtitle = f"run {name} ({rid}); " + rep.subtitle
            return rep.write(out)
    finally:
        if own:
            store.close()


# ---------------------------------------------------------------------------------------------
# report of the noise-training experiment
# ---------------------------------------------------------------------------------------------

def _paper_noise_trend() -> pd.DataFrame | None:
    """Medians over pairs of the paper's Tables 13-18 (test accuracy, adversarial susceptibility, L2)."""
    import statistics

    from perturbscope.experiments.tables import paper_tables

    ref = paper_tables().get("cifar10-noise")
    if not isinstance(ref, Mapping):
        return None
    rows = []
    for table, t in sorted(ref.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 99):
        def med(metric: str, split: str, stat: str | None = None, t=t) -> float:
            vals = [c[split][stat] if stat else c[split] for c in t.get(metric, {}).values() if split in c]
            return round(statistics.median(vals), 2) if vals else math.nan
        rows.append({"paper table": table, "noise": f"{t.get('noise')}-{t.get('level')}",
                     "accuracy train": med("accuracy", "train"), "accuracy test": med("accuracy", "test"),
                     "adv. susceptibility test": med("adversarial_susceptibility", "test"),
                     "attack L2 mean, test": med("eps_l2", "test", "mean")})
    return pd.DataFrame(rows).set_index("paper table") if rows else None


def _noise_run_report(store: Any, rid: str, name: str, versions: Mapping[str, str], notes: list[str],
                      out: str | os.PathLike) -> Path:
    from perturbscope.experiments.noise import result_from_store
    from perturbscope.report.plots import plot_noise_curves

    res = result_from_store(store, rid)
    with tempfile.TemporaryDirectory(prefix="perturbscope-report-") as tmp:
        figures = {}
        for kind, fig in (("cube", 15), ("ball", 16)):
            if (res.summary["noise_kind"] == kind).any():
                figures[f"Noise uniform in the {kind} against its size (paper Figure {fig})"] = \
                    plot_noise_curves(res.summary, kind, Path(tmp) / f"noise_{kind}.png")
        rep = noise_report(res, figures, versions, notes=notes)
        rep.subtitle = f"run {name} ({rid}); " + rep.subtitle
        return rep.write(out)


def noise_report(result: Any, figures: Mapping[str, str | os.PathLike] | None = None,
                 versions: Mapping[str, str] | None = None, notes: Sequence[str] = ()) -> HtmlReport:
    """Report of a :class:`~perturbscope.experiments.noise.NoiseTrainingResult`.

    ``figures`` maps a title to a PNG (e.g. the noise curves); tables are the analogues of the
    paper's Tables 13-18, one per noise level, plus the noise levels themselves.
    """
    cfg = result.config
    rep = HtmlReport("perturbscope: training with additive noise (paper Section 7.1.4)",
                     subtitle=f"data: {cfg.source}; pairs: " + ", ".join(f"{i}-{j}" for i, j in cfg.pairs))
    rep.add_section("Summary")
    for n in notes:
        rep.add_paragraph(n, "warn")
    rep.add_paragraph("Each model is trained with fresh additive noise on every training image, uniform in "
                      "the cube [-rho, rho]^d or in the L2 ball of radius R = rho sqrt(d/3) (matched mean L2 "
                      "norm), inactive at test time; then audited as in the paper. The paper's rho values "
                      "are lost from its text; these are ours.")
    lv = pd.DataFrame([{"noise": x.name, "kind": x.kind, "rho": x.rho, "sampler size (rho or R)": x.size,
                        "mean L2 norm": round(x.mean_l2, 4)} for x in result.levels]).set_index("noise")
    rep.add_table(lv, "Noise levels", f"Input dimension d = {result.meta.get('input_dim')}.")
    paper = _paper_noise_trend()
    if paper is not None:
        rep.add_table(paper, "The paper's noise-training results (CIFAR-10, Tables 13-18), medians over "
                      "its nine pairs",
                      "For the trend only: another data set, d = 3072, and rho values lost from the text. "
                      "Percent; L2 in pixel units.")
    units = [u for u in result.meta.get("units", []) if isinstance(u, Mapping) and "noise" in u]
    if units:
        tr = pd.DataFrame(units).drop_duplicates(["pair", "noise"])
        want = ("pair", "noise", "attempts", "seed", "final_train_loss", "final_train_accuracy_noisy",
                "train_seconds", "audit_seconds")
        cols = [c for c in want if c in tr.columns]
        rep.add_table(tr[cols].set_index(["pair", "noise"]).round(4), "Training runs",
                      "One model per pair and noise level: training attempts (a CNN that collapsed to one "
                      "constant answer is retrained from seed + 7919 k), the seed kept, the last epoch's "
                      "MSE and accuracy on noisy training images (%), seconds.")
    acc = result.summary
    bad = acc[acc["accuracy"] <= 55.0][["pair", "noise"]].drop_duplicates()
    for r in bad.itertuples():
        rep.add_paragraph(f"Pair {r.pair}, noise {r.noise}: accuracy <= 55% (a model that answers one "
                          "class); its susceptibilities are not meaningful.", "warn")
    rep.add_section("Tables (analogue of the paper's Tables 13-18)")
    for name, t in result.tables().items():
        rep.add_table(t, f"Noise {name}", "Percentages per paper eqs 6-8; attack norms mean (sd).")
    if figures:
        rep.add_section("Plots (analogue of the paper's Figures 15, 16)")
        for title, png in figures.items():
            rep.add_figure(png, title)
    rep.add_section("Configuration")
    rep.add_key_values(cfg.to_dict(), "Configuration")
    rep.add_section("Software versions")
    rep.add_key_values(dict(versions) if versions else current_versions(), "Software versions")
    return rep
