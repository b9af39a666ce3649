"""Real data sets and binary pair tasks.

* :mod:`~perturbscope.data.idx`: IDX reader/writer (gzip or raw).
* :mod:`~perturbscope.data.fashion_mnist`: find, verify, load, download Fashion-MNIST.
* :mod:`~perturbscope.data.subset`: the small Fashion-MNIST subset shipped in the package.
* :mod:`~perturbscope.data.digits`: scikit-learn's 8x8 digits (no network).
* :mod:`~perturbscope.data.tasks`: "class i vs class j" tasks in [0, 1], 3 channels.

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
from perturbscope.data.subset import load_fashion_mnist_subset
from perturbscope.data.tasks import SOURCES, PairTask, load_pair_task, pair_task

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
]
