"""Models: the paper's pair CNN, an MLP, a linear classifier, adapters and safe checkpoints."""

from perturbscope.models.adapters import Normalized, TwoLogitAdapter
from perturbscope.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from perturbscope.models.pair_cnn import MLP, LinearBinary, PairCNN

__all__ = ["PairCNN", "MLP", "LinearBinary", "TwoLogitAdapter", "Normalized", "CheckpointError",
           "load_checkpoint", "save_checkpoint"]
