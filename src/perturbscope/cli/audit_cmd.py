"""``perturbscope audit``: the paper's stability audit of any model (a checkpoint, or your own) on any
data source, in memory or streamed a group at a time, with perturbations computed elsewhere."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from perturbscope.audit.config import AUDIT_ATTACKS, AuditConfig
from perturbscope.cli import options as o
from perturbscope.cli.common import check_task, load_task, place, set_threads, use_device

if TYPE_CHECKING:
    import torch

    from perturbscope.audit import AuditResult


def add_audit_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audit (paper Section 7.1)")
    o.SPLITS.add(g)
    o.ALPHAS.add(g)
    o.DRAWS.add(g)
    o.S_MAX.add(g)
    o.STEPS.add(g)
    o.REFINE_TOL.add(g)
    o.SATURATED.add(g)
    o.SEARCH.add(g)
    o.PROBE_SEED.add(g)
    o.PRECISION.add(g)
    o.DRAW_CHUNK.add(g)
    o.CLIP_PROBE.add(g)
    o.CLIP_ATTACK.add(g)
    o.FORWARD_BATCH.add(g, type=o.batch_or_auto,
                        help="perturbed inputs per forward pass of the audit, or auto (chosen from the "
                             "device's free memory; give a number for bit-reproducible records) "
                             "(default: %(default)s)")
    g.add_argument("--channels-last", action="store_true",
                   help="run conv models in the channels_last layout (faster on CPU)")
    g.add_argument("--parquet", action="store_true", help="also write records.parquet")
    g.add_argument("--attack", choices=AUDIT_ATTACKS, default=o.AUDIT.attack,
                   help="eps_adv that scales the random probe: the paper's line search (default), our "
                        "minimal-norm attack, or the best of line search, DeepFool and min-norm per image "
                        "(column attack_won; docs/bounds.md)")
    g.add_argument("--lower-bound", action="store_true",
                   help="also compute a certified lower bound eps_lower on each correct image's L2 "
                        "distance (linear relaxation; slow for CNNs, docs/bounds.md)")
    g.add_argument("--rare-event", action="store_true",
                   help="also estimate, per image and alpha, the probability that uniform noise flips "
                        "the prediction (down to 1e-12 and below) and the draws needed to see one flip "
                        "(columns p_hat_a*, p_lo_a*, p_hi_a*, draws_needed_a*; plot flip_probability.png)")
    g.add_argument("--rare-event-budget", type=o.int_type(minimum=2), default=o.AUDIT.rare_event_budget,
                   metavar="F", help="forward passes per image and alpha for --rare-event (default: "
                                     "%(default)s; resolves p down to ~1e-10, below that an upper bound)")
    g.add_argument("--rare-event-method", choices=o.RARE_METHODS, default=o.AUDIT.rare_event_method,
                   help=o.RARE_METHODS_HELP)


def audit_config(args: argparse.Namespace) -> AuditConfig:
    return AuditConfig(alphas=tuple(args.alphas), draws=args.draws, seed=args.probe_seed,
                       s_max=args.s_max, steps=args.steps, refine_tol=args.refine_tol,
                       batch_size=args.forward_batch,
                       attack=getattr(args, "attack", "line-search"),
                       lower_bound=getattr(args, "lower_bound", False),
                       rare_event=getattr(args, "rare_event", False),
                       rare_event_budget=getattr(args, "rare_event_budget", o.AUDIT.rare_event_budget),
                       rare_event_method=getattr(args, "rare_event_method", o.AUDIT.rare_event_method),
                       clip_probe=getattr(args, "clip_probe", False),
                       clip_attack=getattr(args, "clip_attack", False),
                       saturated=getattr(args, "saturated", o.AUDIT.saturated),
                       search=getattr(args, "search", o.AUDIT.search),
                       precision=getattr(args, "precision", o.AUDIT.precision),
                       draw_chunk=getattr(args, "draw_chunk", o.AUDIT.draw_chunk))


def run_audit(model: torch.nn.Module, args: argparse.Namespace, classes: tuple[int, int], out: Path,
              title: str) -> AuditResult:
    """Audit ``model`` on the requested splits, write records, summary and plot to ``out``."""
    import torch

    from perturbscope.audit import audit_splits
    from perturbscope.report.audit_plot import plot_eps_vs_flip_rate

    splits = {}
    for s in args.splits or ("train", "test"):
        task = load_task(args, s, classes)
        model, x, y = place(args, model, task.x, task.y)
        splits[s] = (x, y)
    fmt = torch.contiguous_format
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        fmt = torch.channels_last
    cfg = audit_config(args)
    result = audit_splits(model, splits, output="sigmoid", config=cfg, progress=not args.no_progress,
                          memory_format=fmt)
    paths = result.save(out, parquet=args.parquet)
    plot = plot_eps_vs_flip_rate(result.records, cfg.alphas, out / "eps_vs_flip_rate.png", title=title,
                                 draws=cfg.draws, s_max=cfg.s_max)
    if cfg.rare_event:
        from perturbscope.audit.rare_event_columns import records_to_table
        from perturbscope.probes.rare_event import plot_flip_probability

        rare_plot = plot_flip_probability(records_to_table(result.records, cfg.alphas),
                                          out / "flip_probability.png", title=title,
                                          probe_draws=cfg.draws)
        print(f"rare-event plot: {rare_plot}")
    print(result.table())
    print(f"\nrecords: {paths['records']}\nsummary: {paths['summary']}\nplot:    {plot}")
    return result


def _source_options(args: argparse.Namespace) -> dict:
    """The source's own options from the flags given (an error names a flag the source ignores)."""
    from perturbscope.cli.main import UsageError

    name = args.data
    wanted = {
        "--image-size": (args.image_size, {"gtsrb": "size", "gtsrb-all": "size", "folder": "size",
                                           "imagenet": "crop"}),
        "--resize": (args.resize if args.resize != o.RESIZE.default else None, {"imagenet": "resize"}),
        "--value-range": (tuple(args.value_range) if args.value_range else None,
                          {"npz": "value_range", "arrays": "value_range"}),
        "--layout": (args.layout, {"npz": "layout", "arrays": "layout"}),
        "--x-key": (args.x_key, {"npz": "x_key", "arrays": "x_key"}),
        "--y-key": (args.y_key, {"npz": "y_key", "arrays": "y_key"}),
        "--grayscale": (args.grayscale or None, {"folder": "grayscale"}),
    }
    opts: dict = {}
    for flag, (value, by_source) in wanted.items():
        if value is None:
            continue
        if name not in by_source:
            takes = ", ".join(sorted({s for s in by_source if s != "arrays"}))
            raise UsageError(f"{flag} applies to the source(s) {takes}, not to --data {name}")
        opts[by_source[name]] = value
    if name == "imagenet" and args.resize == o.RESIZE.default and args.image_size is not None \
            and args.image_size > o.RESIZE.default:
        opts["resize"] = args.image_size
    return opts


def _classifier(args: argparse.Namespace, device):
    """``(classifier, description, classes from a checkpoint)`` of --checkpoint or --model."""
    from perturbscope.cli.main import UsageError
    from perturbscope.models.classifier import Classifier
    from perturbscope.models.factory import classifier_from_spec

    normalize = tuple(args.normalize) if args.normalize else None
    if args.checkpoint:
        if args.model or args.weights or args.model_kwargs:
            raise UsageError("give --checkpoint (a perturbscope checkpoint) or --model [--weights], not both")
        from perturbscope.models.checkpoint import load_checkpoint

        module, meta = load_checkpoint(args.checkpoint)
        mean, std = normalize if normalize else (None, None)
        clf = Classifier(module, args.output or "sigmoid", mean=mean, std=std, device=device)
        return clf, {"checkpoint": str(args.checkpoint), "meta": meta}, tuple(meta.get("classes") or ())
    if not args.model:
        if args.weights:
            clf = classifier_from_spec(None, args.weights, output=args.output, normalize=normalize,
                                       device=device)
            return clf, {"weights": str(args.weights)}, ()
        raise UsageError("name the model: --checkpoint FILE.pt (from 'perturbscope train') or --model "
                         "MODULE:CALLABLE [--weights FILE]")
    try:
        clf = classifier_from_spec(args.model, args.weights, output=args.output, normalize=normalize,
                                   device=device, kwargs=args.model_kwargs)
    except TypeError as exc:
        raise UsageError(str(exc)) from exc
    except ValueError as exc:
        if "output is not given" in str(exc):
            raise UsageError(f"{args.model} does not say what it returns (no 'output_kind' attribute): "
                             "give --output logits, sigmoid or logit") from exc
        raise
    return clf, {"model": args.model, "model_kwargs": args.model_kwargs, "weights": args.weights,
                 "normalize": [list(v) for v in normalize] if normalize else None}, ()


def run(args: argparse.Namespace) -> int:
    import torch

    from perturbscope.attacks.external import load_given
    from perturbscope.audit.stream import model_fingerprint
    from perturbscope.cli.main import UsageError
    from perturbscope.experiments.user_audit import (
        audit_views,
        default_splits,
        open_datasets,
        open_views,
        resolve_labels,
    )
    from perturbscope.fileio import atomic_write_text
    from perturbscope.report.audit_plot import plot_eps_vs_flip_rate

    set_threads(args.threads)
    device = use_device(args.device)
    clf, model_info, ckpt_classes = _classifier(args, device)
    classes = list(args.classes) if args.classes else [str(c) for c in ckpt_classes] or None
    if args.perturbations and args.adversarial:
        raise UsageError("give --perturbations or --adversarial, not both")
    fmt = torch.contiguous_format
    if args.channels_last:
        clf.module.to(memory_format=torch.channels_last)
        fmt = torch.channels_last
    opts = _source_options(args)
    splits = tuple(args.splits) if args.splits else default_splits(args.data)
    path = args.data_path
    if args.data in ("npz", "arrays") and path and "," in path:  # a .npy pair: images.npy,labels.npy
        path = tuple(p.strip() for p in path.split(","))
    datasets = open_datasets(args.data, splits, path=path, verify=not args.no_verify,
                             channels=args.channels, options=opts)
    labels = resolve_labels(clf, next(iter(datasets.values())), classes, args.labels)
    views = open_views(datasets, classes, limit=args.limit, seed=args.data_seed, labels=labels)
    given_path = args.perturbations or args.adversarial
    given = load_given(given_path) if given_path else None
    cfg = audit_config(args)
    out = Path(args.out)
    # what is audited (the stream's manifest: a resumed run must match it); paths may move, so they
    # are recorded in audit_meta.json only
    describe = {"data": args.data, "classes": classes, "labels": labels, "limit": args.limit,
                "data_seed": args.data_seed, "channels": args.channels,
                "source_options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
                "given": None if given_path is None else
                ("adversarial" if args.adversarial else "perturbations")}
    paths_given = {"data_path": None if args.data_path is None else str(args.data_path),
                   "given_file": None if given_path is None else str(given_path),
                   "verify": not args.no_verify}
    first = next(iter(views.values()))
    mismatch: list[str] = []
    if "meta" in model_info:  # the checkpoint's recorded task vs this data: refused unless --force
        shape = tuple(first.batch([0])[0].shape[1:]) if len(first) else None
        mismatch = check_task(args, model_info["meta"], classes=args.classes, input_shape=shape)
    print(f"perturbscope audit: {clf.describe()}; data {args.data}: "
          + "; ".join(f"{k} {len(v)} images" for k, v in views.items())
          + f"; labels {labels}" + (f" ({', '.join(first.class_names[:4])}"
                                    f"{' ...' if len(first.class_names) > 4 else ''})" if labels == "task"
                                    else ""))
    result = audit_views(clf, views, cfg, out=out, stream=True if args.stream else None,
                         group_size=args.group_size, given=given,
                         given_kind="adversarial" if args.adversarial else "perturbations",
                         progress=not args.no_progress, memory_format=fmt, describe=describe)
    if mismatch:
        result.meta["forced_mismatch"] = mismatch  # summary.json meta, and a WARNING under the table
    paths = result.save(out, parquet=args.parquet)
    title = f"{model_info.get('model') or model_info.get('checkpoint') or 'model'} on {args.data}"
    plot = plot_eps_vs_flip_rate(result.records, cfg.alphas, out / "eps_vs_flip_rate.png", title=title,
                                 draws=cfg.draws, s_max=cfg.s_max)
    if cfg.rare_event:
        from perturbscope.audit.rare_event_columns import records_to_table
        from perturbscope.probes.rare_event import plot_flip_probability

        rare_plot = plot_flip_probability(records_to_table(result.records, cfg.alphas),
                                          out / "flip_probability.png", title=title, probe_draws=cfg.draws)
        print(f"rare-event plot: {rare_plot}")
    meta = {"model": model_info, "classifier": clf.describe(), "fingerprint": model_fingerprint(clf),
            "data": {**describe, **paths_given}, "streamed": result.meta.get("streamed"),
            "group_size": result.meta.get("group_size"), "forwards": result.meta.get("forwards")}
    atomic_write_text(out / "audit_meta.json", json.dumps(meta, indent=2, default=str) + "\n")
    if "meta" in model_info:
        atomic_write_text(out / "checkpoint_meta.json", json.dumps(model_info["meta"], indent=2, default=str))
    print(result.table())
    streamed = result.meta.get("streamed") or []
    if streamed:
        print(f"\nstreamed {', '.join(streamed)} in groups of {result.meta['group_size']} images "
              f"(per-group records under {out / 'stream'}; rerun the same command to resume)")
    print(f"\nrecords: {paths['records']}\nsummary: {paths['summary']}\nplot:    {plot}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("audit", help="adversarial and random susceptibility of your model on your data",
                       formatter_class=o.RawDescriptionHelpFormatter,
                       description="Audit a model as in the paper (Section 7.1): accuracy, adversarial "
                                   "susceptibility (gradient line search, or --attack) and random "
                                   "susceptibility at alpha * eps_adv.\nAll norms are in pixel units of "
                                   "images in [0, 1] (normalisation happens inside the classifier).\n\n"
                                   "  perturbscope audit --checkpoint m.pt --out audit/\n"
                                   "  perturbscope audit --model nets.py:make_net --weights w.pt --output "
                                   "logits \\\n      --data cifar10 --data-path "
                                   "~/data/cifar-10-python.tar.gz "
                                   "--classes all --splits test --out audit/\n"
                                   "  perturbscope audit --model paper-cifar10 --weights pair35.pt --data "
                                   "cifar10 --classes 3 5 --out audit/\n\nSources, files and options: "
                                   "docs/data.md; models: docs/audit.md; external attacks: docs/attacks.md.")
    m = p.add_argument_group("model (--checkpoint, or --model with optional --weights)")
    o.add_checkpoint_args(m)
    o.MODEL.add(m)
    o.MODEL_KWARGS.add(m)
    o.WEIGHTS.add(m)
    o.NORMALIZE.add(m)
    o.OUTPUT_KIND.add(m)
    d = p.add_argument_group("data (docs/data.md)")
    o.DATA.add(d, choices=o.SOURCE_CHOICES,
               help="data source: the Fashion-MNIST subset shipped with perturbscope (no files needed), "
                    "fashion-mnist, digits, cifar10, gtsrb (the paper's 7 classes), gtsrb-all, imagenet, "
                    "folder (one sub-folder per class) or npz (your arrays) (default: %(default)s)")
    o.DATA_PATH.add(d, metavar="PATH",
                    help="the data set's archive, folder or file (default: the source's environment "
                         "variable, e.g. $PERTURBSCOPE_CIFAR10; required for folder and npz; npz: an .npz "
                         "or images.npy,labels.npy)")
    o.CLASS_LIST.add(d)
    o.LABELS.add(d)
    o.LIMIT.add(d, help="audit at most N images per split (pairs: class-balanced; all / several classes: "
                        "every class present represented; seeded by --data-seed; default: %(default)s)")
    o.DATA_SEED.add(d)
    o.NO_VERIFY.add(d)
    o.CHANNELS.add(d)
    so = p.add_argument_group("source options")
    o.IMAGE_SIZE.add(so)
    o.RESIZE.add(so)
    o.VALUE_RANGE.add(so)
    o.LAYOUT.add(so)
    o.X_KEY.add(so)
    o.Y_KEY.add(so)
    o.GRAYSCALE.add(so)
    add_audit_args(p)
    st = p.add_argument_group("streaming and perturbations computed elsewhere")
    o.STREAM.add(st)
    o.GROUP_SIZE.add(st)
    o.PERTURBATIONS.add(st)
    o.ADVERSARIAL.add(st)
    o.add_runtime_args(p)
    o.OUT.add(p, required=True, help="folder for records.csv, summary.json, audit_meta.json, plot")
    o.add_progress_arg(p)
    p.set_defaults(func=run)
