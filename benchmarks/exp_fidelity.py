"""Issue 17: audit full-protocol Fashion-MNIST checkpoints under variants of the measurement.

Each variant audits the same images (``--images`` train + ``--images`` test of the pair, the
same seeded choice) and writes its records to ``OUT/<name>/records.csv`` (a finished variant is
skipped on a rerun). ``summarize`` prints, per variant, the Table 20/21 cells with counts and
95% Clopper-Pearson intervals beside the paper's values.

    python benchmarks/exp_fidelity.py run --checkpoint benchmarks/results/full78/epoch100.pt \
        --out benchmarks/results/fidelity/e100 --variants base s2.5 s5 s20 logit --draws 2000
    python benchmarks/exp_fidelity.py summarize benchmarks/results/fidelity/e100

Variants: ``base`` (the paper-literal audit: s_max 10, 256 steps, a zero MSE gradient means
"not susceptible"), ``s<v>`` (s_max = v), ``logit`` (the direction from the logit margin where
the MSE gradient underflows), ``clip`` (line search and probe kept in [0, 1]).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from perturbscope.audit import AuditConfig, audit_splits
from perturbscope.audit.summary import proportion, summarize_records
from perturbscope.data import load_pair_task
from perturbscope.experiments.tables import paper_tables
from perturbscope.models import as_classifier
from perturbscope.models.checkpoint import load_checkpoint


def variant_config(name: str, draws: int) -> AuditConfig:
    base = AuditConfig(draws=draws, search="coarse", saturated="fail")
    if name == "base":
        return base
    if name == "logit":
        return replace(base, saturated="logit")
    if name == "grid":
        return replace(base, search="grid")
    if name.startswith("s"):
        return replace(base, s_max=float(name[1:]))
    if name == "clip":
        fields = AuditConfig.__dataclass_fields__
        if "clip_attack" not in fields:
            raise SystemExit("this perturbscope has no clipped audit (AuditConfig.clip_attack)")
        return replace(base, clip_attack=True, clip_probe=True)
    raise SystemExit(f"unknown variant {name!r}")


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, meta = load_checkpoint(args.checkpoint)
    model = model.to(memory_format=torch.channels_last)
    clf = as_classifier(model)
    i, j = meta.get("classes", [7, 8])
    splits = {}
    for split in ("train", "test"):
        t = load_pair_task("fashion-mnist", split, i, j, limit=args.images, seed=args.data_seed)
        splits[split] = (t.x, t.y)
    for name in args.variants:
        dest = out / name
        if (dest / "records.csv").exists():
            print(f"{name}: done already")
            continue
        cfg = variant_config(name, args.draws)
        t0 = time.time()
        res = audit_splits(clf, splits, config=cfg, progress=False, memory_format=torch.channels_last)
        res.meta.update(checkpoint=str(args.checkpoint), variant=name, seconds=time.time() - t0,
                        checkpoint_meta={k: meta.get(k) for k in ("epochs_done", "seed", "accuracy")})
        res.save(dest)
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
        print(res.table(), flush=True)


def norms(args: argparse.Namespace) -> None:
    """The line search alone (adversarial susceptibility and Table 21 norms) for several s_max
    and both saturated-gradient rules, on every checkpoint given: cheap, no random probe."""
    from perturbscope.attacks import LineSearch

    torch.set_num_threads(args.threads)
    rows = []
    for ckpt in args.checkpoints:
        model, meta = load_checkpoint(ckpt)
        clf = as_classifier(model)
        i, j = meta.get("classes", [7, 8])
        for split in ("train", "test"):
            t = load_pair_task("fashion-mnist", split, i, j, limit=args.images, seed=args.data_seed)
            pred = clf.predict(t.x)
            ok = pred == t.y
            x, y = t.x[ok], t.y[ok]
            for s_max in args.s_max:
                for sat in ("fail", "logit"):
                    res = LineSearch(s_max=s_max, search="coarse", saturated=sat)(clf, x, y)
                    k, n = int(res.success.sum()), int(ok.sum())
                    p = proportion(k, n)
                    e = res.eps_l2[res.success]
                    acc = 100 * float(ok.double().mean())
                    row = {"checkpoint": Path(ckpt).stem, "epochs": meta.get("epochs_done"), "split": split,
                           "s_max": s_max, "saturated": sat, "accuracy": f"{acc:.2f}",
                           "adversarial": f"{p['pct']:.1f} ({k}/{n}) [{p['lo']:.1f}, {p['hi']:.1f}]",
                           "zero_grad": int(res.extras["zero_gradient"].sum()),
                           "fallback": int(res.extras["gradient_fallback"].sum())}
                    for name, v in (("L2", res.eps_l2), ("L1", res.eps_l1), ("Linf", res.eps_linf)):
                        v = v[res.success]
                        row[f"{name} mean (sd)"] = (f"{float(v.mean()):.2f} ({float(v.std()):.2f})"
                                                    if v.numel() > 1 else "n/a")
                    row["L2 median"] = f"{float(e.median()):.2f}" if e.numel() else "n/a"
                    row["adv by class"] = ", ".join(
                        f"{c}: {int(res.success[y == c].sum())}/{int((y == c).sum())}" for c in (0, 1))
                    rows.append(row)
                    print(row, flush=True)
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    if args.csv:
        df.to_csv(args.csv, index=False)


def _cell(p: dict) -> str:
    return "n/a" if not p["n"] else f"{p['pct']:.1f} ({p['k']}/{p['n']}) [{p['lo']:.1f}, {p['hi']:.1f}]"


def summarize(args: argparse.Namespace) -> None:
    ref = paper_tables()["fashion-mnist"]
    rows = []
    for dest in sorted(Path(args.folder).iterdir()):
        rec_path = dest / "records.csv"
        if not rec_path.exists():
            continue
        rec = pd.read_csv(rec_path)
        cfg = json.loads((dest / "summary.json").read_text())["config"]
        for split in ("train", "test"):
            r = rec[rec["split"] == split]
            s = summarize_records(r, cfg["alphas"])
            iv = s["intervals"]
            row = {"variant": dest.name, "split": split, "s_max": cfg["s_max"], "draws": cfg["draws"],
                   "accuracy": _cell(iv["accuracy"]), "adversarial": _cell(iv["adversarial_susceptibility"])}
            for a in cfg["alphas"]:
                row[f"random a={a:g}"] = _cell(iv["random_susceptibility"][float(a)])
            adv = r["adv_success"].astype(bool) & r["correct"].astype(bool)
            for norm in ("l2", "l1", "linf"):
                v = r.loc[adv, f"eps_{norm}"]
                row[f"{norm} mean (sd)"] = f"{v.mean():.2f} ({v.std(ddof=1):.2f})" if len(v) > 1 else "n/a"
            by_class = r[r["correct"].astype(bool)].groupby("label")["adv_success"].agg(["sum", "count"])
            row["adv by class"] = ", ".join(f"{int(c)}: {int(t['sum'])}/{int(t['count'])}"
                                            for c, t in by_class.iterrows())
            rows.append(row)
    df = pd.DataFrame(rows)
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 40):
        print(df.to_string(index=False))
    t20, t21 = ref["table20"], ref["table21"]
    print("\npaper 7 vs 8 (train, test): accuracy", t20["accuracy"]["7-8"], "adversarial",
          t20["adversarial_susceptibility"]["7-8"], "random", {a: t20["random_susceptibility"][a]["7-8"]
                                                                for a in t20["random_susceptibility"]})
    print("paper L2", t21["eps_l2"]["7-8"], "L1", t21["eps_l1"]["7-8"], "Linf", t21["eps_linf"]["7-8"])
    if args.csv:
        df.to_csv(args.csv, index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--variants", nargs="+", default=["base"])
    r.add_argument("--images", type=int, default=150, help="images per split (seeded, class-balanced)")
    r.add_argument("--data-seed", type=int, default=0)
    r.add_argument("--draws", type=int, default=2000)
    r.add_argument("--threads", type=int, default=1)
    nm = sub.add_parser("norms")
    nm.add_argument("checkpoints", nargs="+")
    nm.add_argument("--images", type=int, default=500)
    nm.add_argument("--data-seed", type=int, default=0)
    nm.add_argument("--s-max", nargs="+", type=float, default=[2.5, 5.0, 10.0, 20.0])
    nm.add_argument("--threads", type=int, default=1)
    nm.add_argument("--csv", default=None)
    s = sub.add_parser("summarize")
    s.add_argument("folder")
    s.add_argument("--csv", default=None)
    args = ap.parse_args()
    {"run": run, "norms": norms, "summarize": summarize}[args.cmd](args)


if __name__ == "__main__":
    main()
