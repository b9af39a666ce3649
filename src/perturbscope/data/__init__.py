"""Real data sets and binary pair tasks.

* :mod:`~perturbscope.data.idx`: IDX reader/writer (gzip or raw).
* :mod:`~perturbscope.data.fashion_mnist`: find, verify, load, download Fashion-MNIST.
* :mod:`~perturbscope.data.subset`: the small Fashion-MNIST subset shipped in the package.
* :mod:`~perturbscope.data.digits`: scikit-learn's 8x8 digits (no network).
* :mod:`~perturbscope.data.tasks`: "class i vs class j" tasks in [0, 1], 3 channels, and
  multi-class tasks.
* :mod:`~perturbscope.data.cifar10`, :mod:`~perturbscope.data.gtsrb`,
  :mod:`~perturbscope.data.imagenet`, :mod:`~perturbscope.data.folder`,
  :mod:`~perturbscope.data.arrays`: the user's local copies of CIFAR-10, GTSRB, ImageNet, an image
  folder, NumPy arrays (imported on first use).
* :mod:`~perturbscope.data.streaming`: lazy datasets and :func:`iter_batches`.
* :mod:`~perturbscope.data.sources`: the registry, :func:`load_source` / :func:`open_source`.

See docs/data.md.
"""

from perturbscope.data.digits import DIGITS_CLASSES, digits_split, load_digits_data
from perturbscope.data.errors import DataError
from perturbscope.data.fashion_mnist import (
    ENV_VAR,
    FASHION_MNIST_CLASSES,
    OFFICIAL_URL,
    download_fashion_mnist,
    find_fashion_mnist,
    load_fashion_mnist,
)
from perturbscope.data.idx import read_idx, write_idx
from perturbscope.data.sources import SOURCE_NAMES, SOURCE_REGISTRY, load_source, open_source
from perturbscope.data.streaming import LabelledImageDataset, iter_batches
from perturbscope.data.subset import load_fashion_mnist_subset
from perturbscope.data.tasks import (
    SOURCES,
    MultiClassTask,
    PairTask,
    load_pair_task,
    multiclass_task,
    pair_task,
    sample_covering,
)

__all__ = [
    "DataError",
    "read_idx",
    "write_idx",
    "FASHION_MNIST_CLASSES",
    "ENV_VAR",
    "OFFICIAL_URL",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "download_fashion_mnist",
    "load_fashion_mnist_subset",
    "DIGITS_CLASSES",
    "load_digits_data",
    "digits_split",
    "PairTask",
    "pair_task",
    "load_pair_task",
    "SOURCES",
    "MultiClassTask",
    "multiclass_task",
    "sample_covering",
    "LabelledImageDataset",
    "iter_batches",
    "SOURCE_REGISTRY",
    "SOURCE_NAMES",
    "load_source",
    "open_source",
]
