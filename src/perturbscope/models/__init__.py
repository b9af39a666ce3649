"""Models: the classifier interface, the paper's pair CNN, an MLP, a linear classifier, checkpoints."""

from perturbscope.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from perturbscope.models.classifier import Classifier, ModelOutputError, as_classifier
from perturbscope.models.pair_cnn import MLP, LinearBinary, PairCNN

__all__ = ["Classifier", "as_classifier", "ModelOutputError", "PairCNN", "MLP", "LinearBinary",
           "CheckpointError", "load_checkpoint", "save_checkpoint"]
