"""Tables that give way to the terminal's width, down to 80 columns.

A :class:`FitTable` is laid out when it is printed, for the width of the
console it is printed on. When its columns do not fit at their readable
widths it first takes a lighter frame, then leaves out columns by priority
(never one marked ``keep``: a status, a reason, what a row is), and says
under the table what it left out and what shows it (``--json``, a wider
terminal). Cells are never cut: a word longer than its column folds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict, Unpack

if TYPE_CHECKING:
    from rich.box import Box
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
    from rich.table import Table

__all__ = ["Column", "FitTable"]

Justify = Literal["left", "center", "right"]


class TableOptions(TypedDict, total=False):
    """The options of rich's ``Table`` a :class:`FitTable` passes on."""

    title: str
    title_justify: Justify
    box: Box | None
    collapse_padding: bool
    pad_edge: bool


@dataclass(frozen=True)
class Column:
    """One column of a :class:`FitTable`.

    ``drop``: columns are left out lowest first when the table does not fit;
    None keeps the column whatever the width. ``wrap``: the cells may break at
    spaces (else the column is as wide as its widest line when it can be).
    ``fold_at``: a word longer than this may fold when space is short;
    ``floor``: a wrapping column is at least this wide (when its text is);
    ``cap``: the column grows wider only with room to spare once every column
    has its fill. ``min_total``: the column is shown only on a console at
    least this wide.
    """

    header: str
    drop: int | None = None
    wrap: bool = False
    fold_at: int = 24
    floor: int = 0
    cap: int | None = None
    justify: Justify = "left"
    style: str = ""
    min_total: int = 0


@dataclass
class _Layout:
    compact: bool
    shown: list[int]
    widths: list[int] | None
    dropped: list[int]


class FitTable:
    """A rich table laid out for the console's width when printed (see the module)."""

    def __init__(
        self, columns: Sequence[Column], *, more: str | None = None,
        **table_options: Unpack[TableOptions],
    ) -> None:
        """``more``: what shows the columns left out besides a wider terminal ("--json");
        ``table_options``: rich ``Table``'s (title, box, ...)."""
        self.columns = list(columns)
        self.more = more
        self.table_options = table_options
        self.rows: list[tuple[RenderableType, ...]] = []
        self._measured: tuple[int, int, tuple[list[int], list[int], list[int]]] | None = None

    def add_row(self, *cells: RenderableType) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(cells)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        layout = self.layout(console, options, width)
        yield self._table(layout)
        if layout.dropped:
            yield self._note(console, options, layout, width)

    # Layout

    def layout(self, console: Console, options: ConsoleOptions, width: int) -> _Layout:
        """Which columns to show, how wide each, in which frame, for ``width`` columns."""
        need, want, full = self._measure(console, options)
        shown = [i for i, c in enumerate(self.columns) if width >= c.min_total]
        hidden = [i for i in range(len(self.columns)) if i not in shown]
        by_priority = sorted((i for i in shown if self.columns[i].drop is not None),
                             key=lambda i: (self.columns[i].drop or 0, -i))
        compact = False
        while True:
            overhead = self._overhead(console, options, compact, len(shown))
            if sum(need[i] for i in shown) + overhead <= width:
                spare = width - overhead - sum(need[i] for i in shown)
                widths = self._spread(shown, need, want, full, spare)
                return _Layout(compact, shown, widths, sorted(hidden))
            if not compact and not self.table_options.get("collapse_padding"):
                compact = True
            elif by_priority:
                dropped = by_priority.pop(0)
                shown.remove(dropped)
                hidden.append(dropped)
            else:  # narrower than the kept columns: rich folds what it must
                return _Layout(True, shown, None, sorted(hidden))

    def _measure(
        self, console: Console, options: ConsoleOptions
    ) -> tuple[list[int], list[int], list[int]]:
        """Per column: the width it needs to stay readable, the width it would like (its
        cap), and the width of its longest line. Measured once per console and rows (the
        layout and the note under the table both ask; a big table has thousands of rows)."""
        if self._measured is not None and self._measured[:2] == (id(console), len(self.rows)):
            return self._measured[2]
        measured = self._measure_rows(console, options)
        self._measured = (id(console), len(self.rows), measured)
        return measured

    def _measure_rows(
        self, console: Console, options: ConsoleOptions
    ) -> tuple[list[int], list[int], list[int]]:
        from rich.measure import Measurement

        wide = options.update(width=1 << 16)
        need: list[int] = []
        want: list[int] = []
        full: list[int] = []
        for index, column in enumerate(self.columns):
            header = Measurement.get(console, wide, column.header)
            cells = [Measurement.get(console, wide, row[index]) for row in self.rows]
            longest = max([header.maximum, *(m.maximum for m in cells)])
            word = max([header.minimum, *(m.minimum for m in cells)])
            full.append(longest)
            if column.cap is not None:
                longest = min(longest, max(column.cap, header.minimum))
            if column.wrap:
                least = max(min(word, column.fold_at), min(column.floor, longest), header.minimum)
            else:
                least = longest
            need.append(min(least, longest))
            want.append(longest)
        return need, want, full

    def _overhead(self, console: Console, options: ConsoleOptions, compact: bool,
                  count: int) -> int:
        """The frame's and the padding's width for ``count`` columns."""
        from rich.measure import Measurement

        probe = self._frame(compact)
        for _ in range(count):
            probe.add_column(width=1)
        return Measurement.get(console, options.update(width=1 << 16), probe).maximum - count

    def _spread(self, shown: list[int], need: list[int], want: list[int], full: list[int],
                spare: int) -> list[int]:
        """Each shown column's width: its need, then the spare one at a time to the narrowest
        column still short of its want, the kept columns (statuses, reasons) first; what is
        left past every want lets capped columns grow to their longest line."""
        widths = {i: need[i] for i in shown}
        kept = [i for i in shown if self.columns[i].drop is None]
        for group, goal in ((kept, want), (shown, want), (shown, full)):
            while spare > 0:
                short = [i for i in group if widths[i] < goal[i]]
                if not short:
                    break
                widths[min(short, key=lambda i: (widths[i], i))] += 1
                spare -= 1
        return [widths[i] for i in shown]

    # Rendering

    def _frame(self, compact: bool) -> Table:
        from rich import box
        from rich.table import Table

        options: TableOptions = {**self.table_options}
        if compact:
            options.update({"box": box.SIMPLE_HEAD, "collapse_padding": True, "pad_edge": False})
        return Table(**options)

    def _table(self, layout: _Layout) -> Table:
        table = self._frame(layout.compact)
        for place, index in enumerate(layout.shown):
            column = self.columns[index]
            table.add_column(column.header, justify=column.justify, style=column.style or None,
                             overflow="fold",
                             width=layout.widths[place] if layout.widths else None)
        for row in self.rows:
            table.add_row(*(row[i] for i in layout.shown))
        return table

    def _note(self, console: Console, options: ConsoleOptions, layout: _Layout,
              width: int) -> RenderableType:
        from rich.text import Text

        names = [self.columns[i].header for i in layout.dropped]
        need = self._measure(console, options)[0]
        every = list(range(len(self.columns)))
        full = max([sum(need) + self._overhead(console, options, True, len(every)),
                    *(c.min_total for c in self.columns)])
        them = "them" if len(names) > 1 else "it"
        shows = f"{self.more} or a terminal" if self.more else "a terminal"
        return Text(f"Left out at {width} columns: {_join(names)} "
                    f"({shows} {full} columns wide shows {them}).", style="dim")


def _join(names: Iterable[str]) -> str:
    return ", ".join(names)
