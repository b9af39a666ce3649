"""Progress bars for long work (rich, on stderr), silent when disabled."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ["progress_bar"]


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True
                 ) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(k)``; shows a rich bar with ``total`` steps on stderr when ``enabled``.

    The description is shown as plain text (brackets such as ``[train]`` are not read as markup).
    """
    if not enabled:
        yield lambda k: None
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task(escape(description), total=total)
        yield lambda k: bar.advance(task, k)
