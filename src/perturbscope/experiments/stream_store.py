"""A results store as the sink of a streamed audit: one unit per group of images.

:class:`StoreSink` lets :func:`perturbscope.audit.stream.audit_stream` commit each finished
group of images to a :class:`~perturbscope.experiments.store.ResultsStore` as the unit
``<prefix>/group=NNNNN`` (records and ``done`` status in one transaction), so an interrupted
audit of 20,480 ImageNet images resumes at the first unfinished group.
:meth:`ResultsStore.summaries <perturbscope.experiments.store.ResultsStore.summaries>` puts the
groups of one pair x split together again.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from perturbscope.audit.stream import typed_records
from perturbscope.experiments.store import ResultsStore, UnitAlreadyDone, parse_unit_key

__all__ = ["StoreSink", "group_unit_key"]


def group_unit_key(prefix: str, group: int) -> str:
    """``group_unit_key("pair=all/split=test", 3) == "pair=all/split=test/group=00003"``."""
    return f"{prefix}/group={int(group):05d}"


class StoreSink:
    """Records of a streamed audit, one store unit per group
    (a :class:`~perturbscope.audit.stream.RecordSink`).

    Args:
        store: an open results store; run: its run id (or name).
        prefix: the unit key of the pair x split, e.g. ``"pair=all/split=test"``.
        on_commit: called as ``on_commit(unit_key, n_records)`` after each commit.
    """

    def __init__(self, store: ResultsStore, run: str, prefix: str, on_commit: Any = None) -> None:
        parse_unit_key(prefix)
        self.store, self.run, self.prefix, self.on_commit = store, store.resolve(run), prefix, on_commit

    def plan(self, n_groups: int) -> list[str]:
        """Register the ``n_groups`` unit keys as pending (so an incomplete run shows what is left)."""
        keys = [group_unit_key(self.prefix, k) for k in range(int(n_groups))]
        self.store.plan_units(self.run, keys)
        return keys

    def done(self) -> dict[int, pd.DataFrame]:
        out: dict[int, pd.DataFrame] = {}
        for key in self.store.done_units(self.run):
            parts = parse_unit_key(key)
            if not key.startswith(self.prefix + "/") or "group" not in parts:
                continue
            rec = self.store.records(self.run, unit=key)
            rec = rec.drop(columns=[c for c in ("pair", "group", "unit_key") if c in rec.columns])
            out[int(parts["group"])] = typed_records(rec)
        return out

    def commit(self, group: int, records: pd.DataFrame, meta: dict[str, Any]) -> None:
        key = group_unit_key(self.prefix, group)
        try:
            n = self.store.commit_unit(self.run, key, records, meta=meta)
        except UnitAlreadyDone:  # another process running the same audit was faster
            return
        if self.on_commit is not None:
            self.on_commit(key, n)
