"""Rare-event estimation of the probability that uniform L2-ball noise flips a prediction.

Plain sampling needs ~100/p forwards for 10% error; at p = 1e-6 that is 1e8. Here:

- :mod:`.splitting` - subset simulation on the model's margin (``method="splitting"``, the
  default), which assumes no direction;
- :mod:`.lines` - adaptive line sampling (``method="lines"``): conditional Monte Carlo along
  lines parallel to a learned direction, one root search (~2.5 forwards) per line; the
  cheapest on the pair CNNs, assumes one crossing per line;
- :mod:`.importance` - importance sampling along the boundary normal with a defensive mixture
  and exact one-dimensional likelihood ratios (``method="is"``): ~300 forwards for 20% error
  at any p on near-linear boundaries, unreliable on strongly curved ones;
- :mod:`.first_order` - the local-linear (plane) estimate, reported beside both.

Entry points: :func:`estimate_flip_probability` (per image, one radius),
:func:`flip_probability_table` (per image and alpha), :func:`rare_event_columns` (the audit's
per-image columns), :func:`plot_flip_probability`. Method, assumptions and failure modes:
``docs/rare_event.md``.
"""

from perturbscope.measure.rare_event.audit_columns import (
    RARE_COLUMN_PREFIXES,
    rare_event_columns,
    records_to_table,
    summarize_rare_event,
)
from perturbscope.measure.rare_event.estimate import (
    METHODS,
    FlipProbabilityResult,
    estimate_flip_probability,
    flip_probability_table,
)
from perturbscope.measure.rare_event.first_order import (
    first_order_flip_probability,
    first_order_log_p,
)
from perturbscope.measure.rare_event.plot import plot_flip_probability

__all__ = ["METHODS", "FlipProbabilityResult", "estimate_flip_probability",
           "flip_probability_table", "first_order_flip_probability", "first_order_log_p",
           "plot_flip_probability", "RARE_COLUMN_PREFIXES", "rare_event_columns",
           "records_to_table", "summarize_rare_event"]
