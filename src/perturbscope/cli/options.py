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

from perturbscope.audit.config import (
    MAX_ALPHA,
    MAX_BATCH,
    MAX_DRAWS,
    MAX_S_MAX,
    MAX_STEPS,
    RARE_EVENT_METHODS,
    SATURATED_RULES,
    AuditConfig,
)
from perturbscope.experiments.reproduce_config import ReproduceConfig
from perturbscope.experiments.universal import P_OF_NORM
from perturbscope.train_config import MAX_WIDTH, MIN_WIDTH, NOISE_KINDS, TrainConfig
from perturbscope.validation import check_float, check_int, check_out_dir, check_out_file

__all__ = [
    "Option", "HelpFormatter", "RawDescriptionHelpFormatter", "int_type", "float_type", "device_type",
    "DEVICE_PATTERN", "DATA_SOURCES", "SOURCE_CHOICES", "LABEL_CHOICES", "OUTPUT_CHOICES",
    "json_object_type", "channel_values_type", "size_or_none_type",
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
#: every registered data source (the same names as ``perturbscope.data.sources.SOURCE_NAMES``)
SOURCE_CHOICES: tuple[str, ...] = ("fashion-mnist-subset", "fashion-mnist", "digits", "cifar10", "gtsrb",
                                   "gtsrb-all", "imagenet", "folder", "npz", "arrays")
#: how the audit labels the images of ``--classes`` (``perturbscope.data.sources.LABEL_MODES`` + auto)
LABEL_CHOICES: tuple[str, ...] = ("auto", "task", "source")
#: model output kinds (``perturbscope.models.classifier.OUTPUT_KINDS``)
OUTPUT_CHOICES: tuple[str, ...] = ("logits", "sigmoid", "logit")


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


def out_dir_type(text: str) -> str:
    """An argparse ``type``: a folder to write into (not empty, not an existing file, in a writable
    place with free space). It is created only when the command writes."""
    try:
        check_out_dir("", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(_message(exc)) from None
    return text


def out_file_type(*suffixes: str) -> Callable[[str], str]:
    """An argparse ``type``: a file to write (not a folder; one of ``suffixes``, any case, if given)."""

    def parse(text: str) -> str:
        try:
            check_out_file("", text, tuple(s.lower() for s in suffixes))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(_message(exc)) from None
        return text

    parse.__name__ = "file"
    return parse


#: most torch threads ``--threads`` accepts (far more crash torch's thread pool)
MAX_THREADS = 1024


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


def json_object_type(text: str) -> dict[str, Any]:
    """An argparse ``type``: a JSON object (``'{"width": 0.5}'``), keyword arguments of a model factory."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at column {exc.colno}): "
                                         f"{text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"width\": 0.5}}', got {text!r}")
    return value


def channel_values_type(text: str) -> tuple[float, ...]:
    """An argparse ``type``: comma-separated finite numbers, one per channel (``0.485,0.456,0.406``)."""
    parts = [t for t in text.replace(" ", "").split(",") if t]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}")
    return tuple(FINITE(t) for t in parts)


def size_or_none_type(text: str) -> int | None:
    """An argparse ``type``: an int >= 1, or ``none``."""
    return None if text.strip().lower() == "none" else COUNT(text)


CLASS_LIST = _opt("--classes", nargs="+", default=None, metavar="C",
                  help="the task: two classes 'I J' = the paper's binary task 'I vs J'; 'all' (or none "
                       "given) = every class, a multi-class task; three or more classes = a multi-class "
                       "task of those. Labels, or class names. How the images are labelled: --labels")
LABELS = _opt("--labels", choices=LABEL_CHOICES, default="auto",
              help="labels of the audited images: 'task' = position in --classes (a pair: 0 for I, 1 "
                   "for J; a model trained on that task), 'source' = the data set's own class indices "
                   "(a model trained on every class, e.g. a pretrained CIFAR-10 or ImageNet model, "
                   "audited on the images of some classes; any change of its top-1 label is a flip); "
                   "auto = 'source' when the model outputs as many logits as the data set has classes, "
                   "else 'task' (default: %(default)s)")
SPLITS = _opt("--splits", nargs="+", default=None, metavar="SPLIT", none="the source's",
              help="splits to audit: train test for the data sets with both, val for ImageNet, the whole "
                   "folder / file for folder and npz (or a sub-folder / key suffix name) "
                   "(default: %(default)s)")
NO_VERIFY = _opt("--no-verify", action="store_true",
                 help="skip the official checksums of the data files (for a modified copy)")
IMAGE_SIZE = _opt("--image-size", type=COUNT, default=None, metavar="S", none="the source's",
                  help="side of the images in pixels: GTSRB and folder resize to S x S, ImageNet crops S "
                       "x S (default: %(default)s; GTSRB 32, ImageNet 224, folder the files' own)")
RESIZE = _opt("--resize", type=size_or_none_type, default=256, metavar="S|none",
              help="ImageNet: shorter side resized to S before the centre crop; none: straight to "
                   "--image-size (default: %(default)s)")
VALUE_RANGE = _opt("--value-range", nargs=2, type=FINITE, default=None, metavar=("LO", "HI"),
                   help="npz: the value range of float images, e.g. 0 1 or 0 255 (uint8 is 0..255)")
LAYOUT = _opt("--layout", choices=("NCHW", "NHWC"), default=None,
              help="npz: the array layout when its shape does not tell")
X_KEY = _opt("--x-key", default=None, metavar="KEY", help="npz: the key of the images")
Y_KEY = _opt("--y-key", default=None, metavar="KEY", help="npz: the key of the labels")
GRAYSCALE = _opt("--grayscale", action="store_true", help="folder: decode images as grey")
CHANNELS = _opt("--channels", type=COUNT, default=3, metavar="C",
                help="channels the model takes; grey images are repeated (the paper's RGB copies; "
                     "default: %(default)s)")


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
MODEL = _opt("--model", metavar="SPEC", default=None,
             help="your model: 'package.module:callable', 'path/to/file.py:callable' (a factory or "
                  "class returning an nn.Module; importing runs that code) or a built-in name: "
                  "paper-cifar10, paper-gtsrb, paper-fashion-mnist, pair-cnn, mlp")
MODEL_KWARGS = _opt("--model-kwargs", type=json_object_type, default=None, metavar="JSON",
                    help="keyword arguments of the factory, a JSON object, e.g. '{\"width\": 0.5}'")
WEIGHTS = _opt("--weights", metavar="FILE", default=None,
               help="weights to load: a state dict (torch.save(model.state_dict(), f)), a training "
                    "checkpoint holding one, or .safetensors; read with weights_only=True (a file "
                    "with pickled code is refused, nothing runs)")
NORMALIZE = _opt("--normalize", nargs=2, type=channel_values_type, default=None, metavar=("MEAN", "STD"),
                 help="per-channel normalisation applied inside the classifier, e.g. 0.485,0.456,0.406 "
                      "0.229,0.224,0.225 (images stay in [0, 1]: every norm is in pixel units)")
OUTPUT_KIND = _opt("--output", choices=OUTPUT_CHOICES, default=None, none="the model's output_kind",
                   help="what the model returns: logits (N, K), sigmoid (a binary probability) or logit "
                        "(a binary pre-sigmoid score) (default: %(default)s)")
DEVICE = _opt("--device", type=device_type, default="cpu", metavar="DEV",
              help="where the model runs: cpu, cuda, cuda:N or mps; the model and its inputs are moved "
                   "there (default: %(default)s)")
THREADS = _opt("--threads", type=int_type(1, MAX_THREADS), default=None, metavar="N",
               help="CPU threads of torch (and of numpy/scipy where the command uses them) "
                    "(default: %(default)s)", none="torch's choice")
def batch_or_auto(text: str) -> int | None:
    """An argparse ``type``: a forward batch size, or ``auto`` (``None``: chosen from free memory)."""
    if text.strip().lower() == "auto":
        return None
    return int_type(1, MAX_BATCH)(text)


batch_or_auto.__name__ = "int or auto"

FORWARD_BATCH = _opt("--forward-batch", type=int_type(1, MAX_BATCH), default=AUDIT.batch_size, metavar="B",
                     help="inputs per forward pass (default: %(default)s)")
NO_PROGRESS = _opt("--no-progress", action="store_true", help="hide progress bars")
OUT = _opt("--out", type=out_dir_type, metavar="DIR", default=None, help="output folder")
FORCE = _opt("--force", action="store_true",
             help="use the checkpoint even if the data set, input shape or classes differ from those it was "
                  "trained on (its meta); the mismatch is printed and recorded in summary.json")


def add_checkpoint_args(p: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                        required: bool = False) -> None:
    """``--checkpoint`` and the ``--force`` that overrides its recorded task."""
    CHECKPOINT.add(p, required=required)
    FORCE.add(p)


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
CLIP_PROBE = _opt("--clip-probe", action="store_true",
                  help="clip each random perturbation's input x + delta to [0, 1] (box-aware variant, "
                       "labelled 'clipped to [0, 1]'; the paper's probe, the default, is unclipped)")
CLIP_ATTACK = _opt("--clip-attack", action="store_true",
                   help="keep the attack's x + delta in [0, 1] (the clipped line search, as foolbox and ART "
                        "distances always are; eps_adv is the clipped norm; the paper's, the default, is "
                        "unclipped)")


# --------------------------------------------------------------------------------------------
# the audit's line search and random probe (paper Section 7.1)
# --------------------------------------------------------------------------------------------

ALPHAS = _opt("--alphas", nargs="+", type=float_type(0.0, MAX_ALPHA, low_open=True), default=AUDIT.alphas,
              metavar="A",
              help="random perturbation sizes as multiples of each image's eps_adv (L2, pixel units; "
                   "default: %(default)s)")
DRAWS = _opt("--draws", type=int_type(1, MAX_DRAWS), default=AUDIT.draws, metavar="N",
             help="random vectors uniform in the unit L2 ball, shared by all images "
                  f"(paper: {AUDIT.draws}; default: %(default)s)")
S_MAX = _opt("--s-max", type=float_type(0.0, MAX_S_MAX, low_open=True), default=AUDIT.s_max, metavar="L2",
             help="largest L2 scale of the line search, pixel units (default: %(default)s)")
STEPS = _opt("--steps", type=int_type(1, MAX_STEPS), default=AUDIT.steps, metavar="K",
             help=f"equally spaced scales in (0, s-max] tried by the line search (paper: {AUDIT.steps}; "
                  "default: %(default)s)")
SATURATED = _opt("--saturated", choices=SATURATED_RULES, default=AUDIT.saturated,
                 help="where the paper's MSE gradient underflows to zero (a saturated sigmoid): logit = take "
                      "the direction from the logit margin (the same direction wherever the MSE gradient is "
                      "not zero); fail = the paper's literal rule, such an image is not susceptible. Records "
                      "(gradient_fallback, zero_gradient) and the summary say how many "
                      "(default: %(default)s)")
SEARCH = _opt("--search", choices=("grid", "coarse"), default=AUDIT.search,
              help="the line search: grid = every scale in order until the first flip (exact), coarse = "
                   "every 16th scale then a bisection, with the exact grid where the margin could hide "
                   "a flip (the same answer on the measured networks, ~10x fewer forwards; docs/audit.md) "
                   "(default: %(default)s)")
PRECISION = _opt("--precision", choices=("fp32", "bf16", "fp16"), default=AUDIT.precision,
                 help="arithmetic of the random probe: fp32, or bf16/fp16 autocast with every flip and every "
                      "near-boundary draw re-checked in fp32 (default: %(default)s)")
DRAW_CHUNK = _opt("--draw-chunk", type=int_type(1, MAX_DRAWS), default=AUDIT.draw_chunk, metavar="N",
                  help="random draws generated at once by the probe (memory: N x input size; "
                       "default: %(default)s, about 64 MB worth)", none="auto")
REFINE_TOL = _opt("--refine-tol", type=POSITIVE, default=AUDIT.refine_tol, metavar="L2",
                  help="bisect each flipping bracket down to this L2 width, pixel units "
                       "(default: %(default)s, as in the paper)", none="off")


# --------------------------------------------------------------------------------------------
# training (paper: width 1, 100 epochs, lr 0.1 halved every 20, batch 128)
# --------------------------------------------------------------------------------------------

#: the train / demo commands' own scaled-down default (TrainConfig's is the paper's 100)
TRAIN_CMD_EPOCHS = 10

WIDTH = _opt("--width", type=float_type(MIN_WIDTH, MAX_WIDTH), default=SCALED.width, metavar="W",
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

# --------------------------------------------------------------------------------------------
# streaming and perturbations computed elsewhere
# --------------------------------------------------------------------------------------------

STREAM = _opt("--stream", action="store_true",
              help="audit the images a group at a time (memory: one group), writing each group's "
                   "records as it finishes; rerunning the same command resumes (always on for ImageNet "
                   "and for image sets over 1 GB as float32)")
GROUP_SIZE = _opt("--group-size", type=COUNT, default=None, metavar="N", none="about 1024",
                  help="images per group when streaming, a multiple of --forward-batch "
                       "(default: %(default)s)")
PERTURBATIONS = _opt("--perturbations", metavar="FILE", default=None,
                     help="perturbations computed elsewhere (foolbox, torchattacks, ART...), .npy / .npz "
                          "/ .pt, shape (N, C, H, W) in pixel units, row k for the k-th audited image "
                          "(one split); NaN rows = none found. Each is re-checked; with --attack best it "
                          "is one more candidate (docs/attacks.md)")
ADVERSARIAL = _opt("--adversarial", metavar="FILE", default=None,
                   help="the same, as adversarial images x_adv instead of perturbations")
RUN_NAME = _opt("--name", default=None, help="name of a new run in the store (default: %(default)s)")

