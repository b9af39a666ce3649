"""The audit's per-image record schema, declared once (name, dtype, unit, meaning).

The audit (:func:`perturbscope.audit.audit`) writes these columns in this order, the results
store reads them back with these dtypes, exports and reports select them by name. Per-alpha
columns are templates: ``flips_{a}`` becomes ``flips_a1``, ``flips_a2.5``... with
:func:`alpha_key`. Optional groups (``rare_event``) appear only when that measurement ran.

Run ``python -m perturbscope.audit.schema`` to print the table (it is in docs/audit.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Column", "CORE_COLUMNS", "ALPHA_COLUMNS", "RARE_EVENT_COLUMNS", "RARE_EVENT_TOTALS", "alpha_key",
           "columns", "column_names", "alphas_of", "alpha_keys", "check_records", "dtype_of",
           "schema_markdown"]


@dataclass(frozen=True)
class Column:
    """One record column: ``name`` (a template with ``{a}`` when per alpha), numpy-style ``dtype``
    (``int64``, ``float64``, ``bool``, ``str``), ``unit`` and what it means."""

    name: str
    dtype: str
    unit: str
    meaning: str
    group: str = "core"

    @property
    def per_alpha(self) -> bool:
        return "{a}" in self.name

    def named(self, alpha: float | None = None) -> Column:
        """The concrete column for ``alpha`` (itself when not per alpha)."""
        if not self.per_alpha:
            return self
        if alpha is None:
            raise ValueError(f"column {self.name} is per alpha: give alpha")
        return Column(self.name.format(a=alpha_key(alpha)), self.dtype, self.unit, self.meaning, self.group)


CORE_COLUMNS: tuple[Column, ...] = (
    Column("split", "str", "", "name of the image set (e.g. train, test)"),
    Column("index", "int64", "", "position of the image in its split, 0-based"),
    Column("label", "int64", "class", "true label"),
    Column("pred", "int64", "class", "clean prediction"),
    Column("correct", "bool", "", "pred == label (the set C of eqs 6-8)"),
    Column("adv_success", "bool", "", "the attack flipped the prediction (the set A)"),
    Column("eps_l2", "float64", "pixel L2",
           "L2 norm of the smallest flipping perturbation found (eps_adv); NaN if none"),
    Column("eps_l1", "float64", "pixel L1", "L1 norm of the same perturbation"),
    Column("eps_linf", "float64", "pixel Linf", "Linf norm of the same perturbation"),
    Column("eps_source", "str", "", "what eps_adv comes from: line_search, min_norm, best, given"),
    Column("attack_won", "str", "", "the attack whose perturbation is eps_adv; empty if none flipped"),
    Column("eps_lower", "float64", "pixel L2", "certified lower bound on the distance (NaN unless asked)"),
    Column("gradient_fallback", "bool", "",
           "the paper's MSE gradient was exactly zero (a saturated sigmoid or softmax) and the line search "
           "took its direction from the logit margin instead (saturated='logit')"),
    Column("zero_gradient", "bool", "",
           "no usable gradient direction (the MSE gradient was zero, and with saturated='logit' the "
           "margin's too): the line search did not search, the image counts as not susceptible"),
)

ALPHA_COLUMNS: tuple[Column, ...] = (
    Column("flips_{a}", "int64", "draws", "random draws at radius alpha * eps_adv that flip the prediction"),
    Column("rand_frac_{a}", "float64", "fraction", "flips / draws (NaN for images without eps_adv)"),
    Column("rand_min_l2_{a}", "float64", "pixel L2", "L2 norm of the smallest flipping random draw"),
    Column("rand_min_l1_{a}", "float64", "pixel L1", "L1 norm of that draw"),
    Column("rand_min_linf_{a}", "float64", "pixel Linf", "Linf norm of that draw"),
    Column("rand_min_index_{a}", "int64", "", "index of that draw in the shared set (-1 if none)"),
    Column("probe_outside_{a}", "float64", "fraction",
           "share of a random draw's L2 norm that lies outside the bounds, ||x + d - clip(x + d)|| / ||d||, "
           "mean over the first 16 draws (what clip_probe removes; NaN for images without eps_adv)"),
)

RARE_EVENT_COLUMNS: tuple[Column, ...] = tuple(Column(n, t, u, m, "rare_event") for n, t, u, m in (
    ("p_hat_{a}", "float64", "probability", "estimated probability that uniform noise in the ball flips"),
    ("p_lo_{a}", "float64", "probability", "lower end of its 95% interval (calibrated, docs/rare_event.md)"),
    ("p_hi_{a}", "float64", "probability", "upper end of its 95% interval (calibrated, docs/rare_event.md)"),
    ("log10_p_hat_{a}", "float64", "log10", "log10 of p_hat (finite where p_hat underflows)"),
    ("draws_needed_{a}", "float64", "draws", "expected uniform draws to see one flip, 1 / p_hat"),
    ("p_probe_sees_flip_{a}", "float64", "probability", "chance that the paper's probe sees a flip"),
    ("p_first_order_{a}", "float64", "probability", "first-order (tangent plane) cap fraction"),
    ("rare_rel_error_{a}", "float64", "", "estimated relative standard error of p_hat (calibrated likewise)"),
    ("rare_hits_{a}", "float64", "draws", "flipping draws behind the estimate"),
))
RARE_EVENT_TOTALS: tuple[Column, ...] = (
    Column("rare_forwards", "int64", "forwards", "forward passes the estimator spent on the image",
           "rare_event"),
)


def alpha_key(alpha: float) -> str:
    """Column suffix for ``alpha``: ``a1``, ``a2``, ``a2.5``..."""
    alpha = float(alpha)
    return f"a{int(alpha)}" if alpha.is_integer() else f"a{alpha:g}"


def columns(alphas: Sequence[float], *, rare_event: bool = False) -> list[Column]:
    """The concrete columns of an audit's records, in the order the audit writes them."""
    out = list(CORE_COLUMNS)
    for a in alphas:
        out.extend(c.named(a) for c in ALPHA_COLUMNS)
    if rare_event:
        for a in alphas:
            out.extend(c.named(a) for c in RARE_EVENT_COLUMNS)
        out.extend(RARE_EVENT_TOTALS)
    return out


def column_names(alphas: Sequence[float], *, rare_event: bool = False) -> list[str]:
    return [c.name for c in columns(alphas, rare_event=rare_event)]


def alphas_of(names: Iterable[str]) -> list[float]:
    """The alphas of the ``flips_a*`` columns among ``names``, increasing."""
    return sorted(float(n[len("flips_a"):]) for n in names if n.startswith("flips_a"))


def alpha_keys(names: Iterable[str]) -> list[str]:
    """The alpha suffixes (``a1``, ``a2.5``...) of the ``flips_a*`` columns among ``names``, increasing."""
    return [alpha_key(a) for a in alphas_of(names)]


def dtype_of(name: str) -> str | None:
    """The declared dtype of a concrete column name (``None`` if it is not in the schema)."""
    for c in (*CORE_COLUMNS, *RARE_EVENT_TOTALS):
        if c.name == name:
            return c.dtype
    for c in (*ALPHA_COLUMNS, *RARE_EVENT_COLUMNS):
        head, _, tail = c.name.partition("{a}")
        if name.startswith(head + "a") and name.endswith(tail):
            return c.dtype
    return None


def check_records(records, alphas: Sequence[float] | None = None, *, rare_event: bool | None = None,
                  required: Sequence[str] | None = None) -> list[float]:
    """Check that a records DataFrame has the audit's columns; returns its alphas.

    ``alphas`` default: those of its ``flips_*`` columns. ``rare_event=None`` checks the rare-event
    columns only if any is present. ``required``: check only these columns (names or per-alpha
    templates such as ``"flips_{a}"``) instead of the whole schema.
    """
    import pandas as pd

    if not isinstance(records, pd.DataFrame):
        raise TypeError(f"records must be a pandas DataFrame, got {type(records).__name__}")
    alphas = list(alphas) if alphas is not None else alphas_of(records.columns)
    if required is not None:
        need = []
        for t in required:
            need.extend([t.format(a=alpha_key(a)) for a in alphas] if "{a}" in t else [t])
    else:
        if rare_event is None:
            rare_event = any(str(c).startswith("p_hat_a") for c in records.columns)
        need = column_names(alphas, rare_event=rare_event)
    missing = [c for c in need if c not in records.columns]
    if missing:
        raise ValueError(f"records lack columns {missing} (audit records: perturbscope.audit.schema)")
    return [float(a) for a in alphas]


def schema_markdown() -> str:
    """The schema as a markdown table (used in docs/audit.md)."""
    rows = ["| column | dtype | unit | meaning |", "|---|---|---|---|"]
    for c in (*CORE_COLUMNS, *ALPHA_COLUMNS, *RARE_EVENT_COLUMNS, *RARE_EVENT_TOTALS):
        name = c.name.replace("{a}", "a{alpha}")
        extra = " (with `rare_event`)" if c.group == "rare_event" else ""
        rows.append(f"| `{name}` | {c.dtype} | {c.unit} | {c.meaning}{extra} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    print(schema_markdown())
