"""Every option that more than one command takes, defined once: flag, type, unit, default, help.

Each option is an :class:`Option` (flags plus ``add_argument`` keywords); a command adds it with
``OPTION.add(parser_or_group)`` and may pass a different ``default`` (its reason stated where it
is passed) or ``required=True``. Defaults come from the settings dataclasses where one exists
(:class:`~perturbscope.audit.config.AuditConfig`, :class:`~perturbscope.train_config.TrainConfig`,
:class:`~perturbscope.experiments.noise_config.NoiseTrainingConfig`,
:class:`~perturbscope.experiments.reproduce_config.ReproduceConfig`), so a default changed
there changes here. Help texts write the default as ``%(default)s``, which
:class:`HelpFormatter` prints plainly and which follows a command's ``set_defaults``.

Numbers are checked while parsing (:func:`int_type`, :func:`float_type`, built on
:func:`perturbscope.validation.check_int` / :func:`~perturbscope.validation.check_float`): a bad
value ends the command with one line, ``perturbscope CMD: error: argument --draws: must be an
int >= 1, got 0``, and exit code 2, before any model is loaded.

This module imports only the standard library and torch-free perturbscope modules: building the
parser (``perturbscope --help``) must not import torch, pandas, scipy or matplotlib.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perturbscope.audit.config import RARE_EVENT_METHODS, AuditConfig
from perturbscope.experiments.reproduce_config import ReproduceConfig
from perturbscope.experiments.universal import P_OF_NORM
from perturbscope.train_config import NOISE_KINDS, TrainConfig
from perturbscope.validation import check_float, check_int

__all__ = [
    "Option", "HelpFormatter", "RawDescriptionHelpFormatter", "int_type", "float_type", "device_type",
    "DEVICE_PATTERN", "DATA_SOURCES",
    "COUNT", "NONNEG_INT", "POSITIVE", "NONNEG", "FRACTION", "OPEN_FRACTION", "FINITE",
    "add_data_args", "add_progress_arg", "add_runtime_args", "format_default",
]

AUDIT = AuditConfig()
TRAIN = TrainConfig()
#: the paper's protocol and the scaled-down CPU protocol (``perturbscope reproduce [--full]``)
PAPER = ReproduceConfig.paper()
SCALED = ReproduceConfig.scaled_down()

#: data sources of the pair tasks (the same names as ``perturbscope.data.tasks.SOURCES``)
DATA_SOURCES: tuple[str, ...] = ("fashion-mnist-subset", "fashion-mnist", "digits")


# --------------------------------------------------------------------------------------------
# argparse types: one line of error, exit code 2
# --------------------------------------------------------------------------------------------

def _message(exc: Exception) -> str:
    return str(exc).strip()


def int_type(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[minimum, maximum]`` (``"3.0"`` is refused)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        try:
            return check_int("", value, minimum=minimum, maximum=maximum)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(_message(exc)) from None

    parse.__name__ = "int"
    return parse


def float_type(low: float | None = None, high: float | None = None, *, low_open: bool = False,
               high_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in the given interval (NaN and infinities refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            return check_float("", value, low=low, high=high, low_open=low_open, high_open=high_open)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(_message(exc)) from None

    parse.__name__ = "float"
    return parse


#: an int >= 1 (counts: draws, steps, images, threads, batch sizes)
COUNT = int_type(minimum=1)
#: an int >= 0 (seeds, optional counts where 0 means "skip")
NONNEG_INT = int_type(minimum=0)
#: a finite number > 0 (sizes in pixel units, radii, learning rates)
POSITIVE = float_type(0.0, low_open=True)
#: a finite number >= 0
NONNEG = float_type(0.0)
#: a finite number in [0, 1]
FRACTION = float_type(0.0, 1.0)
#: a finite number in (0, 1)
OPEN_FRACTION = float_type(0.0, 1.0, low_open=True, high_open=True)
#: any finite number
FINITE = float_type()

#: what ``--device`` accepts; whether that device exists is checked when the command runs
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?|mps")


def device_type(text: str) -> str:
    """An argparse ``type``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    name = text.strip().lower()
    if not DEVICE_PATTERN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return name


def format_default(value: Any, none: str = "none") -> str:
    """How the help writes a default: ``1 2 5 10`` for a list, ``0.1`` for a float, ``none`` for None."""
    if value is None:
        return none
    if isinstance(value, list | tuple):
        return " ".join(format_default(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Help with ``%(default)s`` written plainly: ``1 2 5 10`` for a list, ``none`` for ``None``."""

    def _expand_help(self, action: argparse.Action) -> str:
        saved = action.default
        if saved is not argparse.SUPPRESS:
            action.default = format_default(saved, getattr(action, "none_text", "none"))
        try:
            return super()._expand_help(action)
        finally:
            action.default = saved


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` that keeps the description's line breaks."""


@dataclass(frozen=True)
class Option:
    """One command-line option: its flags and ``add_argument`` keywords (``help`` may use ``%(default)s``)."""

    flags: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: how the help writes a ``None`` default ("all", "off", "torch's choice", ...)
    none: str = "none"

    @property
    def default(self) -> Any:
        return self.kwargs.get("default")

    def add(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup, **overrides: Any
            ) -> argparse.Action:
        """``parser.add_argument`` with this option's settings, ``overrides`` replacing some."""
        kw = {**self.kwargs, **overrides}
        none = kw.pop("none", self.none)
        if isinstance(kw.get("default"), tuple):
            kw["default"] = list(kw["default"])
        action = parser.add_argument(*self.flags, **kw)
        action.none_text = none  # read by HelpFormatter
        return action


def _opt(*flags: str, none: str = "none", **kwargs: Any) -> Option:
    return Option(tuple(flags), kwargs, none)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

DATA = _opt("--data", choices=DATA_SOURCES, default="fashion-mnist-subset",
            help="data source: the Fashion-MNIST subset shipped in the repo (no network), the full "
                 "Fashion-MNIST (IDX files; see --data-path), or scikit-learn's 8x8 digits "
                 "(default: %(default)s)")
DATA_PATH = _opt("--data-path", default=None, metavar="DIR",
                 help="folder holding the Fashion-MNIST IDX files (default: $PERTURBSCOPE_FASHION_MNIST, "
                      "then the Debian package's install path)")
CLASSES = _opt("--classes", nargs=2, type=NONNEG_INT, metavar=("I", "J"), default=None,
               help="binary task 'class I vs class J': label 0 for I, 1 for J")
LIMIT = _opt("--limit", type=COUNT, default=None, metavar="N",
             none="all", help="use at most N images per split (seeded, class-balanced choice; "
                              "default: %(default)s)")
DATA_SEED = _opt("--data-seed", type=NONNEG_INT, default=0, metavar="S",
                 help="seed of the --limit selection (default: %(default)s)")
SPLIT = _opt("--split", choices=("train", "test"), default="test",
             help="images to use (default: %(default)s)")


def add_data_args(p: argparse.ArgumentParser, classes_required: bool = True, *,
                  limit: int | None = None, title: str = "data") -> argparse._ArgumentGroup:
    """The data group: ``--data --data-path --classes --limit --data-seed``."""
    g = p.add_argument_group(title)
    DATA.add(g)
    DATA_PATH.add(g)
    CLASSES.add(g, required=classes_required)
    LIMIT.add(g, default=limit)
    DATA_SEED.add(g)
    return g


# --------------------------------------------------------------------------------------------
# model, device, threads, progress, output
# --------------------------------------------------------------------------------------------

CHECKPOINT = _opt("--checkpoint", metavar="FILE.pt", default=None,
                  help="checkpoint written by 'perturbscope train'")
DEVICE = _opt("--device", type=device_type, default="cpu", metavar="DEV",
              help="where the model runs: cpu, cuda, cuda:N or mps; the model and its inputs are moved "
                   "there (default: %(default)s)")
THREADS = _opt("--threads", type=COUNT, default=None, metavar="N",
               help="CPU threads of torch (and of numpy/scipy where the command uses them) "
                    "(default: %(default)s)", none="torch's choice")
FORWARD_BATCH = _opt("--forward-batch", type=COUNT, default=AUDIT.batch_size, metavar="B",
                     help="inputs per forward pass (default: %(default)s)")
NO_PROGRESS = _opt("--no-progress", action="store_true", help="hide progress bars")
OUT = _opt("--out", metavar="DIR", default=None, help="output folder")


def add_progress_arg(p: argparse.ArgumentParser) -> None:
    NO_PROGRESS.add(p)


def add_runtime_args(p: argparse.ArgumentParser, *, forward_batch: bool = False) -> None:
    """``--device``, ``--threads`` (and ``--forward-batch``) for a command that runs a model."""
    DEVICE.add(p)
    THREADS.add(p)
    if forward_batch:
        FORWARD_BATCH.add(p)


# --------------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------------

SEED = _opt("--seed", type=NONNEG_INT, default=0, metavar="S", help="random seed (default: %(default)s)")
PROBE_SEED = _opt("--probe-seed", type=NONNEG_INT, default=AUDIT.seed, metavar="S",
                  help="seed of the random vectors (the same draws for every image; default: %(default)s)")


# --------------------------------------------------------------------------------------------
# the audit's line search and random probe (paper Section 7.1)
# --------------------------------------------------------------------------------------------

ALPHAS = _opt("--alphas", nargs="+", type=POSITIVE, default=AUDIT.alphas, metavar="A",
              help="random perturbation sizes as multiples of each image's eps_adv (L2, pixel units; "
                   "default: %(default)s)")
DRAWS = _opt("--draws", type=COUNT, default=AUDIT.draws, metavar="N",
             help="random vectors uniform in the unit L2 ball, shared by all images "
                  f"(paper: {AUDIT.draws}; default: %(default)s)")
S_MAX = _opt("--s-max", type=POSITIVE, default=AUDIT.s_max, metavar="L2",
             help="largest L2 scale of the line search, pixel units (default: %(default)s)")
STEPS = _opt("--steps", type=COUNT, default=AUDIT.steps, metavar="K",
             help=f"equally spaced scales in (0, s-max] tried by the line search (paper: {AUDIT.steps}; "
                  "default: %(default)s)")
REFINE_TOL = _opt("--refine-tol", type=POSITIVE, default=AUDIT.refine_tol, metavar="L2",
                  help="bisect each flipping bracket down to this L2 width, pixel units "
                       "(default: %(default)s, as in the paper)", none="off")


# --------------------------------------------------------------------------------------------
# training (paper: width 1, 100 epochs, lr 0.1 halved every 20, batch 128)
# --------------------------------------------------------------------------------------------

#: the train / demo commands' own scaled-down default (TrainConfig's is the paper's 100)
TRAIN_CMD_EPOCHS = 10

WIDTH = _opt("--width", type=POSITIVE, default=SCALED.width, metavar="W",
             help=f"channel multiplier of the paper's network; {PAPER.width:g} = the paper's "
                  "(default: %(default)s)")
DEEP = _opt("--deep", action="store_true",
            help="keep Conv-5/6 (the paper's CIFAR-10 network; Fashion-MNIST drops them)")
DROPOUT = _opt("--dropout", type=FRACTION, default=PAPER.dropout, metavar="P",
               help="dropout after every conv layer, active in training only "
                    f"(paper: {PAPER.dropout:g}; default: %(default)s)")
EPOCHS = _opt("--epochs", type=COUNT, default=TRAIN_CMD_EPOCHS, metavar="E",
              help=f"training epochs (paper: {TRAIN.epochs}; default: %(default)s)")
LR = _opt("--lr", type=POSITIVE, default=TRAIN.lr,
          help=f"initial learning rate, halved every {TRAIN.lr_halve_every} epochs (default: %(default)s)")
BATCH_SIZE = _opt("--batch-size", type=COUNT, default=TRAIN.batch_size, metavar="B",
                  help="images per SGD step (default: %(default)s)")
RESTARTS = _opt("--restarts", type=NONNEG_INT, default=SCALED.restarts, metavar="N",
                help="retrain from a new seed when training collapses to a constant answer, at most "
                     "this many times (default: %(default)s)")
INIT = _opt("--init", choices=("glorot", "torch"), default=PAPER.init,
            help="weight initialisation: Glorot-uniform as the paper's Keras code, or PyTorch's default "
                 "(default: %(default)s)")
NOISE = _opt("--noise", choices=tuple("none" if k is None else k for k in NOISE_KINDS), default="none",
             help="additive training noise: uniform in the cube [-s, s]^d or the L2 ball of radius s "
                  "(default: %(default)s)")
NOISE_SIZE = _opt("--noise-size", type=NONNEG, default=TRAIN.noise_size, metavar="S",
                  help="noise size s in pixel units (cube half-width, or ball radius; default: %(default)s)")
HIDDEN = _opt("--hidden", nargs="+", type=COUNT, default=[64], metavar="H",
              help="MLP hidden layer sizes (default: %(default)s)")


# --------------------------------------------------------------------------------------------
# universal perturbations and categories
# --------------------------------------------------------------------------------------------

NORM = _opt("--norm", choices=tuple(P_OF_NORM), default="inf",
            help="p of the ball ||v||_p <= radius (default: %(default)s)")
MAX_PASSES = _opt("--max-passes", type=COUNT, default=10, metavar="N",
                  help="pass limit of each universal perturbation over its build images "
                       "(default: %(default)s)")
CLIP = _opt("--clip", action="store_true",
            help="clip perturbed images to [0, 1] wherever the model sees them (default: unclipped, "
                 "as in the paper)")


def normals_type(text: str) -> int:
    """``--normals``: 0 (skip) or at least 2 images."""
    v = NONNEG_INT(text)
    if v == 1:
        raise argparse.ArgumentTypeError("must be 0 (skip) or >= 2, got 1")
    return v


NORMALS = _opt("--normals", type=normals_type, default=200, metavar="N",
               help="images whose L2 DeepFool normals enter the singular-value analysis "
                    "(0: skip; default: %(default)s)")
LEVEL = _opt("--level", type=OPEN_FRACTION, default=0.95,
             help="confidence level of the intervals (default: %(default)s)")


# --------------------------------------------------------------------------------------------
# rare events, results store
# --------------------------------------------------------------------------------------------

#: the rare-event estimators a command offers ("plain" Monte Carlo is the library's reference only)
RARE_METHODS: tuple[str, ...] = tuple(m for m in RARE_EVENT_METHODS if m != "plain")
RARE_METHODS_HELP = ("splitting: subset simulation on the margin, no direction assumed; lines: adaptive "
                     "line sampling along a learned direction, several times cheaper on the pair CNNs and "
                     "no floor on p, assumes one crossing per line; is: importance sampling along the "
                     "gradient / boundary normal, reliable only for near-linear boundaries "
                     "(docs/rare_event.md; default: %(default)s)")

STORE = _opt("--store", default=None, metavar="FILE", help="results store (SQLite)")
RUN_NAME = _opt("--name", default=None, help="name of a new run in the store (default: %(default)s)")

