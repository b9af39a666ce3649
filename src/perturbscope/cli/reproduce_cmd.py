"""``perturbscope reproduce fashion-mnist|cifar10|gtsrb|imagenet``: the paper's tables, resumable.

Fashion-MNIST (Tables 20-21), CIFAR-10 (all 45 pairs, Tables 4-12) and GTSRB (pairs 0-1 .. 4-5,
Tables 23-24) train the paper's network per pair and audit it; ImageNet (Table 25) audits a
pre-trained model (``--model``, ``--weights``) on sampled validation images, streamed.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from perturbscope.audit.config import AuditConfig
from perturbscope.cli import options as o
from perturbscope.cli.common import set_threads, use_device
from perturbscope.cli.main import UsageError
from perturbscope.experiments.executors import EXECUTORS
from perturbscope.experiments.reproduce_config import (
    DATASETS,
    EXPERIMENTS,
    IMAGENET_PAPER_MODELS,
    NUM_CLASSES,
    ImageNetReproduceConfig,
    ReproduceConfig,
    parse_pairs,
)

DEFAULT_STORE = "perturbscope-results.sqlite"


def _count_or_all(text: str) -> int | None:
    if text.lower() == "all":
        return None
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', got {text!r}") from None
    if v < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 images or 'all', got {v}")
    return v


#: flags of the pair sweeps that a pre-trained ImageNet model has no use for
_TRAINING_FLAGS = ("epochs", "width", "batch_size", "lr", "seed", "restarts", "init", "pairs")
_UNSET_COUNTS = ("train_images",)


def _source(args: argparse.Namespace) -> str:
    if args.experiment == "fashion-mnist":
        return args.data or o.SCALED.source
    if args.data is not None and args.data != args.experiment:
        raise ValueError(f"--data {args.data} belongs to 'reproduce fashion-mnist'; 'reproduce "
                         f"{args.experiment}' reads {args.experiment} (give its files with --data-path)")
    return args.experiment


def _paper_model(args: argparse.Namespace) -> str | None:
    if args.paper_model == "none":
        return None
    if args.paper_model != "auto":
        return args.paper_model
    spec = (args.model or "").lower()
    hits = [k for k in IMAGENET_PAPER_MODELS if k in spec.replace("_", "").replace("-", "")]
    return hits[0] if len(hits) == 1 else None


def _given(*settings: tuple[str, object], unset: object = None) -> dict[str, object]:
    """The ``(field, flag value)`` pairs whose flag was given (its value is not ``unset``)."""
    return {k: v for k, v in settings if v is not unset}


def _audit_config(args: argparse.Namespace, au: AuditConfig) -> AuditConfig:
    """The preset's audit settings ``au`` with the audit flags given (``--draws``, ``--alphas``, ...)."""
    changes = _given(("draws", args.draws), ("steps", args.steps), ("s_max", args.s_max),
                     ("seed", args.probe_seed), ("batch_size", args.forward_batch),
                     ("saturated", args.saturated), ("search", args.search), ("precision", args.precision),
                     ("draw_chunk", args.draw_chunk), ("clip_probe", args.clip_probe or None),
                     ("clip_attack", args.clip_attack or None))
    if args.alphas is not None:
        changes["alphas"] = tuple(float(a) for a in args.alphas)
    return AuditConfig(**{**au.__dict__, **changes})


def build_imagenet_config(args: argparse.Namespace) -> ImageNetReproduceConfig:
    """The ImageNet run's :class:`ImageNetReproduceConfig` (``--full`` or scaled-down), flags applied."""
    given = [f"--{k.replace('_', '-')}" for k in _TRAINING_FLAGS if getattr(args, k) is not None]
    given += [f"--{k.replace('_', '-')}" for k in _UNSET_COUNTS if getattr(args, k) is not False]
    if given:
        raise ValueError(f"{', '.join(given)} do(es) not apply to 'reproduce imagenet': its model is "
                         "pre-trained (give --model and --weights)")
    if not args.model:
        raise ValueError("'reproduce imagenet' needs the pre-trained model: --model MODULE:CALLABLE "
                         "(or path/to/file.py:callable) and --weights FILE")
    base = ImageNetReproduceConfig.paper if args.full else ImageNetReproduceConfig.scaled_down
    preset = base(model=args.model)
    au = _audit_config(args, preset.audit)
    gs = args.group_size if args.group_size is not None else max(1, preset.group_size // au.batch_size) * \
        au.batch_size
    cfg = replace(preset, audit=au, device=args.device, data_seed=args.data_seed, group_size=gs,
                  model_kwargs=args.model_kwargs, paper_model=_paper_model(args),
                  normalize=tuple(tuple(v) for v in args.normalize) if args.normalize else None,
                  **_given(("images", args.images), unset=False),  # None: every validation image
                  **_given(("crop", args.image_size)))
    if args.resize != o.RESIZE.default:
        cfg = replace(cfg, resize=args.resize)
    return cfg.validated()


def build_config(args: argparse.Namespace) -> ReproduceConfig:
    """The run's :class:`ReproduceConfig`: the preset (``--full`` or scaled-down) of the experiment's
    data set with the flags given."""
    source = _source(args)
    for flag, value in (("--model", args.model), ("--weights", args.weights), ("--normalize", args.normalize),
                        ("--model-kwargs", args.model_kwargs), ("--group-size", args.group_size)):
        if value is not None:
            raise ValueError(f"{flag} applies to 'reproduce imagenet' (a pre-trained model); "
                             f"'reproduce {args.experiment}' trains the paper's network")
    if args.image_size is not None and source != "gtsrb":
        raise ValueError(f"--image-size applies to gtsrb and imagenet, not {source}")
    base = ReproduceConfig.for_dataset(source, full=args.full)
    tr = replace(base.train, **_given(("epochs", args.epochs), ("lr", args.lr),
                                      ("batch_size", args.batch_size), ("seed", args.seed)))
    au = _audit_config(args, base.audit)
    pairs = None if args.pairs is None else parse_pairs(args.pairs, NUM_CLASSES[source])
    cfg = replace(base, source=source, train=tr, audit=au, device=args.device,
                  data_seed=args.data_seed,
                  **_given(("pairs", pairs), ("image_size", args.image_size), ("width", args.width),
                           ("restarts", args.restarts), ("init", args.init)),
                  **_given(("train_images", args.train_images), ("audit_images", args.images),
                           unset=False))
    return cfg.validated()


def _configured(build, args: argparse.Namespace):
    """``build(args)``; a flag that does not fit the experiment is a usage error (exit code 2)."""
    try:
        return build(args)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc


def _print_tables(args: argparse.Namespace, store, run_id: str, tables: dict) -> None:
    """Print the run's tables; write them to ``--out`` and its records to ``--export`` if given."""
    from perturbscope.experiments.reproduce import write_reproduction_tables

    print("\n" + tables["text"].split("\n\n", 1)[1])
    if args.out:
        files = write_reproduction_tables(args.out, tables)
        print(f"\ntables: {files['tables']}, {files['table20']}, {files['table21']}")
    if args.export:
        print(f"records: {store.export(run_id, args.export)}")


def run(args: argparse.Namespace) -> int:
    from perturbscope.experiments.executors import make_executor
    from perturbscope.experiments.reproduce import reproduction_tables, run_reproduction
    from perturbscope.experiments.store import ResultsStore
    from perturbscope.experiments.tables import protocol_note

    if args.experiment == "imagenet":
        return run_imagenet(args)
    cfg = _configured(build_config, args)
    use_device(cfg.device)  # the jobs move the model and inputs there
    set_threads(args.threads)
    kwargs = {}
    if args.executor == "ray":
        kwargs = {"address": args.ray_address, "num_cpus": args.ray_cpus,
                  "gpus_per_job": 1.0 if cfg.device.startswith("cuda") else 0.0}
    try:
        executor = make_executor(args.executor, **kwargs)
    except (ImportError, ConnectionError, RuntimeError) as exc:  # no Ray, or no cluster at --ray-address
        raise UsageError(f"cannot start the {args.executor} executor: {exc}") from exc
    note = protocol_note(cfg.to_dict())
    print(f"perturbscope reproduce {args.experiment}: {len(cfg.pairs)} pairs x {len(cfg.splits)} splits, "
          f"executor {args.executor}, store {args.store}\n{note}")
    with ResultsStore(args.store) as store:
        try:
            out = run_reproduction(cfg, store, executor=executor, name=args.name or args.experiment,
                                   data_path=args.data_path, threads=args.threads,
                                   progress=not args.no_progress, verify=not args.no_verify)
        finally:
            executor.close()
        name = store.run_name(out.run_id)
        print(f"run {name} ({out.run_id}): {'new' if out.created else 'resumed'}; "
              f"{len(out.units_run)} units run, {out.units_skipped} already done, "
              f"{len(out.models_trained)} models trained, {out.seconds:.1f} s")
        for k in out.units_failed:
            err = store.units(out.run_id).set_index("unit_key").loc[k, "meta"].get("error")
            print(f"FAILED {k}: {err}")
        _print_tables(args, store, out.run_id, reproduction_tables(store, out.run_id, cfg))
    if out.units_failed:
        print(f"{len(out.units_failed)} units failed (kept as 'failed' in the store); run the same command "
              "again to retry them")
        return 1
    return 0


def run_imagenet(args: argparse.Namespace) -> int:
    """``perturbscope reproduce imagenet``: the streamed audit of a pre-trained model, Table 25."""
    from perturbscope.experiments.imagenet import imagenet_note, imagenet_tables, run_imagenet_reproduction
    from perturbscope.experiments.store import ResultsStore

    cfg = _configured(build_imagenet_config, args)
    if args.executor != "local":
        raise UsageError("'reproduce imagenet' runs locally (one model, streamed images): drop --executor")
    use_device(cfg.device)
    set_threads(args.threads)
    print(f"perturbscope reproduce imagenet: {cfg.model} (weights {args.weights or 'as built'}), "
          f"{cfg.images or 'all'} validation images in groups of {cfg.group_size}, "
          f"store {args.store}\n{imagenet_note(cfg.to_dict())}")
    with ResultsStore(args.store) as store:
        out = run_imagenet_reproduction(cfg, store, data_path=args.data_path, weights=args.weights,
                                        name=args.name or "imagenet", threads=args.threads,
                                        progress=not args.no_progress)
        name = store.run_name(out.run_id)
        print(f"run {name} ({out.run_id}): {'new' if out.created else 'resumed'}; "
              f"{len(out.units_run)} groups audited, {out.units_skipped} already done, {out.seconds:.1f} s")
        _print_tables(args, store, out.run_id,
                      imagenet_tables(store, out.run_id, store.run_config(out.run_id)))
    return 0


def _scaled(get) -> str:
    """``scaled default X; paper Y`` of one setting, read from the two presets."""
    def fmt(v):
        return "all" if v is None else o.format_default(v)
    return f"scaled default {fmt(get(o.SCALED))}; paper {fmt(get(o.PAPER))}"


def register(sub) -> None:
    sc, pa = o.SCALED, o.PAPER
    im = ImageNetReproduceConfig.scaled_down(model="x:y")
    p = sub.add_parser(
        "reproduce", help="the paper's tables: Fashion-MNIST, CIFAR-10, GTSRB (train + audit each pair) "
                          "and ImageNet (a pre-trained model), resumable",
        description="fashion-mnist (Tables 20, 21; pairs i vs i+1), cifar10 (Tables 4-12; all 45 pairs, the "
                    "network with Conv-5/6), gtsrb (Tables 23, 24; the paper's classes, pairs 0-1 .. 4-5): "
                    "train the paper's network on each pair and audit it on train and test images. "
                    "imagenet (Table 25): audit a pre-trained 1000-class model (--model, --weights, "
                    "--normalize) on sampled validation images with every class present, one vs all, "
                    "alpha = 10, streamed. The paper's values and the differences are printed beside "
                    "ours. Results go to a SQLite store as each unit (pair x split, or group of ImageNet "
                    "images) finishes: rerunning the same command after an interruption continues where "
                    "it stopped; a changed setting starts a new run. "
                    f"Default: a SCALED-DOWN protocol for a CPU ({sc.train_images} training images, "
                    f"{sc.audit_images} audited images per split, {sc.train.epochs} epochs, batch "
                    f"{sc.train.batch_size}, width {sc.width:g}, {sc.audit.draws} draws; ImageNet "
                    f"{im.images} images, {im.audit.draws} draws); --full is the paper's.")
    p.add_argument("experiment", choices=EXPERIMENTS, help="experiment to reproduce")
    g = p.add_argument_group("scale (defaults: scaled-down preset, or the paper's with --full)")
    g.add_argument("--full", action="store_true",
                   help=f"the paper's protocol: all images, width {pa.width:g}, {pa.train.epochs} epochs, "
                        f"{pa.audit.draws} draws (days on a CPU)")
    g.add_argument("--pairs", nargs="+", default=None, metavar="I-J",
                   help="pairs to run, 'I-J' or 'I' for I vs I+1 (default: fashion-mnist 0-1 ... 8-9, "
                        "cifar10 all 45 pairs, gtsrb 0-1 ... 4-5)")
    g.add_argument("--train-images", type=_count_or_all, default=False, metavar="N|all",
                   help=f"training images per pair ({_scaled(lambda c: c.train_images)})")
    g.add_argument("--images", type=_count_or_all, default=False, metavar="N|all",
                   help=f"images audited per split ({_scaled(lambda c: c.audit_images)}; imagenet: "
                        f"validation images, scaled default {im.images}, paper 20480)")
    # the preset's value when not given (default None)
    o.EPOCHS.add(g, default=None, help=f"training epochs ({_scaled(lambda c: c.train.epochs)})")
    o.WIDTH.add(g, default=None,
                help=f"channel multiplier of the network ({_scaled(lambda c: c.width)})")
    o.DRAWS.add(g, default=None,
                help=f"random draws per image and alpha ({_scaled(lambda c: c.audit.draws)})")
    o.STEPS.add(g, default=None, help=f"line-search scales ({_scaled(lambda c: c.audit.steps)})")
    o.S_MAX.add(g, default=None, help=f"largest line-search L2 scale, pixel units "
                                      f"({_scaled(lambda c: c.audit.s_max)})")
    o.ALPHAS.add(g, default=None, help=f"random sizes / eps_adv ({_scaled(lambda c: c.audit.alphas)})")
    o.BATCH_SIZE.add(g, default=None, help=f"SGD batch ({_scaled(lambda c: c.train.batch_size)})")
    o.LR.add(g, default=None, help=f"initial learning rate ({_scaled(lambda c: c.train.lr)})")
    o.SEED.add(g, default=None, help=f"training seed ({_scaled(lambda c: c.train.seed)})")
    o.RESTARTS.add(g, default=None,
                   help="retrain a pair from a new seed if training collapses to one class, at most N "
                        f"times ({_scaled(lambda c: c.restarts)})")
    o.INIT.add(g, default=None,
               help=f"initial weights ({_scaled(lambda c: c.init)}, the paper's Keras default)")
    o.PROBE_SEED.add(g, default=None, help=f"seed of the random draws ({_scaled(lambda c: c.audit.seed)})")
    o.DATA_SEED.add(g, default=sc.data_seed, help="seed of the image subsets (default: %(default)s)")
    o.FORWARD_BATCH.add(g, default=None,
                        help=f"inputs per forward pass ({_scaled(lambda c: c.audit.batch_size)})")
    o.SATURATED.add(g, default=None,
                    help="where the paper's MSE gradient underflows to zero: fail = its literal rule, not "
                         "susceptible; logit = the direction from the logit margin (the paper's protocol, "
                         f"hence {_scaled(lambda c: c.audit.saturated)}; 'perturbscope audit' defaults to "
                         f"{o.AUDIT.saturated})")
    o.SEARCH.add(g, default=None, help=f"the line search, grid or coarse "
                                       f"({_scaled(lambda c: c.audit.search)}; both give the paper's "
                                       "smallest flipping scale, docs/audit.md)")
    o.PRECISION.add(g, default=None, help=f"arithmetic of the probe ({_scaled(lambda c: c.audit.precision)})")
    o.DRAW_CHUNK.add(g)
    o.CLIP_PROBE.add(g)
    o.CLIP_ATTACK.add(g)
    mg = p.add_argument_group("imagenet: the pre-trained model (docs/reproduce.md)")
    o.MODEL.add(mg)
    o.MODEL_KWARGS.add(mg)
    o.WEIGHTS.add(mg)
    o.NORMALIZE.add(mg, help="per-channel normalisation inside the classifier, e.g. torchvision's "
                             "0.485,0.456,0.406 0.229,0.224,0.225 (norms stay in [0, 1] pixel units)")
    mg.add_argument("--paper-model", choices=(*IMAGENET_PAPER_MODELS, "auto", "none"), default="auto",
                    help="whose column of Table 25 to print beside ours; auto: from the --model name "
                         "(default: %(default)s)")
    o.GROUP_SIZE.add(mg, help=f"validation images per group, one store unit each, a multiple of "
                              f"--forward-batch (default: {im.group_size} scaled, 1024 --full)")
    o.IMAGE_SIZE.add(mg, help="gtsrb: side of the resized crops (default 32, the paper does not say); "
                              "imagenet: the centre crop (default 224)")
    o.RESIZE.add(mg)
    d = p.add_argument_group("data and execution")
    o.DATA.add(d, choices=DATASETS, default=None,
               help=f"fashion-mnist only: the full Fashion-MNIST (IDX files) or the subset shipped with "
                    f"perturbscope (default: {sc.source})")
    o.DATA_PATH.add(d, help="the data set's files: Fashion-MNIST's IDX folder, the CIFAR-10 archive or "
                            "folder, the folder of the GTSRB zips, the ImageNet validation folder "
                            "(default: auto-detected / $PERTURBSCOPE_CIFAR10, $PERTURBSCOPE_GTSRB, "
                            "$PERTURBSCOPE_IMAGENET; docs/data.md)")
    o.NO_VERIFY.add(d)
    o.STORE.add(d, default=DEFAULT_STORE, metavar="PATH", help="SQLite results store (default: %(default)s)")
    o.RUN_NAME.add(d, help="name of a new run (default: the experiment)")
    d.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="run jobs here (local) or on a Ray cluster (needs perturbscope[ray])")
    d.add_argument("--ray-address", default=None,
                   help="Ray cluster to join, e.g. auto or ray://head:10001 (default: start a local one)")
    d.add_argument("--ray-cpus", type=o.COUNT, default=None, help="CPUs of a local Ray instance")
    o.DEVICE.add(d, default=sc.device)
    o.THREADS.add(d, help="torch threads per job (default: %(default)s)")
    o.OUT.add(d, help="also write the tables (txt, csv) here")
    d.add_argument("--export", default=None, metavar="FILE", type=o.out_file_type(".csv", ".parquet", ".pq"),
                   help="also export the run's records (.csv or .parquet)")
    o.add_progress_arg(p)
    p.set_defaults(func=run)
