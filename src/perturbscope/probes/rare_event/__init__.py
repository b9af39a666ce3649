"""Rare-event estimation of the probability that uniform L2-ball noise flips a prediction.

Plain sampling needs ~100/p forwards for 10% error; at p = 1e-6 that is 1e8. Here:

- :mod:`.splitting` - subset simulation on the model's margin (``method="splitting"``, the
  default), which assumes no direction;
- :mod:`.lines` - adaptive line sampling (``method="lines"``): conditional Monte Carlo along
  lines parallel to a learned direction, one root search per line; assumes one crossing per
  line;
- :mod:`.importance` - importance sampling along the boundary normal with a defensive mixture
  and exact one-dimensional likelihood ratios (``method="is"``): a variance per draw
  independent of p on near-linear boundaries, unreliable on strongly curved ones;
- :mod:`.first_order` - the local-linear (plane) estimate, reported beside both.

Every entry point takes an ``nn.Module`` (with ``output=``) or a
:class:`~perturbscope.models.classifier.Classifier`, whose margin, labels and bounds are used.
Measured costs and accuracy of the three methods: ``docs/rare_event.md``.

Entry points: :func:`estimate_flip_probability` (per image, one radius),
:func:`flip_probability_table` (per image and alpha), :func:`plot_flip_probability`; the audit's
per-image columns are :func:`perturbscope.audit.rare_event_columns.rare_event_columns`.
Method, assumptions and failure modes: ``docs/rare_event.md``.
"""

from perturbscope.probes.rare_event.estimate import (
    METHODS,
    FlipProbabilityResult,
    estimate_flip_probability,
    flip_probability_table,
)
from perturbscope.probes.rare_event.first_order import (
    first_order_flip_probability,
    first_order_log_p,
)
from perturbscope.probes.rare_event.plot import plot_flip_probability

__all__ = ["METHODS", "FlipProbabilityResult", "estimate_flip_probability",
           "flip_probability_table", "first_order_flip_probability", "first_order_log_p",
           "plot_flip_probability"]
