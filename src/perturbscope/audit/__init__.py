"""The stability audit as a package (paper Section 7.1).

* :mod:`~perturbscope.audit.config`: :class:`AuditConfig` (torch-free);
* :mod:`~perturbscope.audit.schema`: the per-image record columns, declared once;
* :mod:`~perturbscope.audit.summary`: eqs 6-8 with counts and intervals, norm statistics;
* :mod:`~perturbscope.audit.choice`: which attack sets eps_adv; the certified lower bound;
* :mod:`~perturbscope.audit.run`: :func:`audit`, :func:`audit_splits`, :class:`AuditResult`;
* :mod:`~perturbscope.audit.table`: the printed table;
* :mod:`~perturbscope.audit.rare_event_columns`: the flip-probability columns.

Names are loaded on first use, so ``from perturbscope.audit.config import AuditConfig`` does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AuditConfig", "AuditResult", "audit", "audit_splits", "format_table", "summarize_records"]

_WHERE = {"AuditConfig": "config", "AuditResult": "run", "audit": "run", "audit_splits": "run",
          "format_table": "table", "summarize_records": "summary"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"perturbscope.audit.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'perturbscope.audit' has no attribute {name!r}")
