"""The paper's ImageNet experiment (Section 7.1.5, Table 25): a pre-trained model, one-vs-all.

A pre-trained 1000-class model (the paper: Keras' ResNet50 and VGG19) is audited on 20,480
validation images sampled with every class present: accuracy, adversarial susceptibility (the
line search, MSE between the softmax and the one-hot label) and random susceptibility at
alpha = 10 (the only level the paper reports); a flip is any change of the top-1 label.

The images are streamed (:func:`perturbscope.audit.stream.audit_stream`) a group at a time,
each group committed to the results store as the unit ``pair=all/split=test/group=NNNNN``
(:class:`~perturbscope.experiments.stream_store.StoreSink`), so memory holds one group and an
interrupted run resumes at its first unfinished group. The run is named by the hash of
:class:`~perturbscope.experiments.reproduce_config.ImageNetReproduceConfig`, which includes the
SHA-256 of the weights file and of the validation labels.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from perturbscope.experiments.reproduce import SweepOutcome
from perturbscope.experiments.reproduce_config import ImageNetReproduceConfig
from perturbscope.experiments.store import ResultsStore, software_versions

__all__ = ["imagenet_sample", "file_sha256", "run_imagenet_reproduction", "imagenet_tables",
           "imagenet_note", "linf_share", "PAPER_LINF_SHARE"]


def file_sha256(path: str | os.PathLike, chunk: int = 2**22) -> str:
    """SHA-256 (hex) of a file, read in chunks."""
    h = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def imagenet_sample(labels: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, bool]:
    """``(positions, every class present)``: the paper's sample of ``n`` images (every class present,
    :func:`~perturbscope.data.tasks.sample_covering`) or, when ``n`` is below the number of classes
    present, a uniform seeded sample (then not every class is represented). Positions sorted."""
    from perturbscope.data.tasks import sample_covering

    labs = np.asarray(labels)
    if n >= np.unique(labs).size or n >= labs.size:
        return sample_covering(labs, n, seed), True
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(labs.size, size=n, replace=False)).astype(np.int64), False


def run_imagenet_reproduction(config: ImageNetReproduceConfig, store: ResultsStore, *,
                              data_path: str | os.PathLike | None = None,
                              weights: str | os.PathLike | None = None, name: str = "imagenet",
                              threads: int | None = None, progress: bool = True) -> SweepOutcome:
    """Run (or resume) the ImageNet audit of ``config`` into ``store``.

    Args:
        config: the settings (``config.weights_sha256`` and ``labels_sha256`` are filled in here
            from ``weights`` and the validation folder when not set).
        data_path: the validation images (docs/data.md; default ``$PERTURBSCOPE_IMAGENET``).
        weights: the model's weights file (a state dict; read with ``weights_only=True``).
        name: run name for a new run. threads: torch threads.

    Returns:
        :class:`~perturbscope.experiments.reproduce.SweepOutcome` (units are groups of images).
    """
    import dataclasses

    import torch

    from perturbscope.audit.stream import audit_stream
    from perturbscope.data.sources import open_source
    from perturbscope.experiments.stream_store import StoreSink
    from perturbscope.models.factory import classifier_from_spec

    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        ds = open_source("imagenet", "val", path=data_path, resize=config.resize, crop=config.crop)
        labels_sha = hashlib.sha256(np.ascontiguousarray(ds.labels, dtype=np.int64).tobytes()).hexdigest()
        changes: dict[str, Any] = {}
        if config.labels_sha256 is None:
            changes["labels_sha256"] = labels_sha
        elif config.labels_sha256 != labels_sha:
            raise ValueError("the validation images' labels differ from those the configuration names")
        if config.weights_sha256 is None and weights is not None:
            changes["weights_sha256"] = file_sha256(weights)
        config = dataclasses.replace(config, **changes).validated()
        n = len(ds) if config.images is None else config.images
        pos, covering = imagenet_sample(ds.labels, n, config.data_seed)
        view = ds.subset(pos)
        run_id, created = store.open_run(name, config.to_dict(), software_versions())
        norm = tuple(tuple(v) for v in config.normalize) if config.normalize else None
        clf = classifier_from_spec(config.model, weights, output="logits", normalize=norm,  # type: ignore
                                   device=config.device, kwargs=config.model_kwargs)
        done_before = set(store.done_units(run_id))
        ran: list[str] = []
        sink = StoreSink(store, run_id, config.unit_prefix, on_commit=lambda k, n: ran.append(k))
        keys = sink.plan(-(-len(view) // config.group_size))
        res = audit_stream(clf, view, config=config.audit, sink=sink, split="test",
                           group_size=config.group_size, progress=progress)
    finally:
        torch.set_num_threads(old_threads)
    meta = {"covering": covering, "n_images": len(view), "forwards": res.meta["forwards"]}
    store.put_artifact(run_id, "imagenet/sample", np.asarray(pos, dtype=np.int64).tobytes(), meta)
    return SweepOutcome(run_id=run_id, created=created, units_total=len(keys), units_run=ran,
                        units_skipped=len(done_before & set(keys)), models_trained=[],
                        seconds=time.perf_counter() - t0)


def imagenet_note(config: dict[str, Any]) -> str:
    """The scale of an ImageNet run (its stored configuration) beside the paper's protocol."""
    au = config.get("audit") or {}
    n, draws = config.get("audit_images") or "all", au.get("draws")
    full = n == 20480 and draws == 2000
    head = ("Paper's full protocol: " if full
            else "SCALED-DOWN protocol, numbers are not the paper's setting: ")
    return (head + f"{n} validation images (paper: 20480, every class present), {draws} draws per image "
            f"(paper: 2000), alpha {', '.join(f'{a:g}' for a in au.get('alphas', []))} (paper: 10), "
            f"{au.get('steps')} line-search steps up to s_max {au.get('s_max')} (the paper does not state "
            f"its s_max); model {(config.get('model') or {}).get('arch')}, preprocessing "
            f"{config.get('preprocess')}, device {config.get('device')}.")


def imagenet_tables(store: ResultsStore, run_id: str, config: ImageNetReproduceConfig | dict[str, Any]
                    ) -> dict[str, Any]:
    """Table 25 of a run beside the paper's column (``config.paper_model``), as
    :func:`~perturbscope.experiments.reproduce.reproduction_tables` for the pair sweeps.

    Returns:
        ``{"note", "table20" (rates, long form), "table21" (norms; the paper has none),
        "summaries", "text"}``.
    """
    from perturbscope.experiments.reproduce import tables_text
    from perturbscope.experiments.tables import table20_long, table21_long

    doc = config.to_dict() if isinstance(config, ImageNetReproduceConfig) else dict(config)
    key = doc.get("paper") or "imagenet"
    alphas = tuple((doc.get("audit") or {}).get("alphas") or (10.0,))
    summ = store.summaries(run_id)
    note = imagenet_note(doc)
    t20 = table20_long(summ, alphas=alphas, pairs=["all"], dataset=key)
    t21 = table21_long(summ, pairs=["all"], dataset=key)
    head = ("one vs all: a flip is any change of the top-1 label; the validation images are the paper's "
            "test column. " + linf_share(store.records(run_id)))
    text = "\n\n".join([note, head, tables_text(t20, t21, key)])
    return {"note": note, "table20": t20, "table21": t21, "summaries": summ, "text": text}


#: the paper's share of attacked ImageNet images whose attack has Linf < 0.1 (Section 7.1.5)
PAPER_LINF_SHARE = {"resnet50": 93.3, "vgg19": 94.3}


def linf_share(records: Any, threshold: float = 0.1) -> str:
    """The sentence "Linf of the attack < 0.1 for X% of the attacked images" (the paper: 93.3% for
    ResNet50, 94.3% for VGG19), from audit records."""
    if records is None or len(records) == 0:
        return "No attacked image yet."
    att = records["adv_success"].astype(bool) & records["correct"].astype(bool)
    n = int(att.sum())
    if n == 0:
        return "No image was attacked successfully."
    k = int((records.loc[att, "eps_linf"].astype(float) < threshold).sum())
    return (f"Linf of the attack < {threshold:g} for {100 * k / n:.1f}% ({k}/{n}) of the attacked images "
            f"(paper: {PAPER_LINF_SHARE['resnet50']}% ResNet50, {PAPER_LINF_SHARE['vgg19']}% VGG19).")
