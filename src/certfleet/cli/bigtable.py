"""Printing a :class:`~.tables.FitTable` of thousands of rows: in blocks, widths fixed once.

Rich lays out every row of a table before it prints the first, and spends
about 2 ms a row doing it: 90,000 rows of ``status`` took minutes. Past
``BIG_ROWS`` rows, :func:`print_table` measures the table once (the same
layout, columns left out and widths as the one-table rendering), prints its
title and header with rich, then the rows in blocks of ``BLOCK_ROWS``, each
cell wrapped by rich's own ``Text.wrap`` at its column's width and the line
put together as rich's table does (its box's dividers, its padding). The
text, styles included, is the one-table rendering's; a smaller table is
printed by rich as it always was.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from .tables import FitTable

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType
    from rich.segment import Segment
    from rich.table import Table
    from rich.text import Text

    from ..inventory import Device

__all__ = ["BIG_ROWS", "BLOCK_ROWS", "print_table", "probing_line", "say_probing"]

#: Tables of more rows than this are printed in blocks (below it, by rich at once).
BIG_ROWS = 2_000
#: Rows per block: each block reaches the terminal before the next is laid out.
BLOCK_ROWS = 500


def print_table(console: Console, renderable: RenderableType, *, big_rows: int = BIG_ROWS,
                block_rows: int = BLOCK_ROWS) -> int:
    """Print ``renderable`` (a FitTable, or a Group holding some); a FitTable of more than
    ``big_rows`` rows in blocks of ``block_rows``. Returns the number of blocks printed
    that way (0: rich printed it all at once)."""
    from rich.console import Group

    parts = list(renderable.renderables) if isinstance(renderable, Group) else [renderable]
    if not any(_is_big(part, big_rows) for part in parts):
        console.print(renderable)
        return 0
    blocks = 0
    for part in parts:
        if isinstance(part, FitTable) and _is_big(part, big_rows):
            blocks += _print_blocks(console, part, block_rows)
        else:
            console.print(part)
    return blocks


def _is_big(part: object, big_rows: int) -> bool:
    return isinstance(part, FitTable) and len(part.rows) > big_rows


def _print_blocks(console: Console, fit: FitTable, block_rows: int) -> int:
    from rich.segment import Segment, Segments

    options = console.options
    width = options.max_width
    layout = fit.layout(console, options, width)
    table = fit._table(layout)  # the columns as laid out; its rows are printed below
    shape = None if layout.widths is None else _Shape.of(console, table, layout.widths)
    if shape is None:  # too narrow for the kept columns, or a frame not done here
        console.print(fit)
        return 0
    head = _empty(table)
    lines = list(Segment.split_lines(console.render(head, options)))
    foot = lines.pop() if head.show_edge and head.box else None
    console.print(Segments(_joined(lines)))
    blocks = 0
    for start in range(0, len(fit.rows), block_rows):
        block = fit.rows[start:start + block_rows]
        console.print(Segments(_joined(
            line for row in block for line in shape.row([row[i] for i in layout.shown]))))
        console.file.flush()
        blocks += 1
    if foot is not None:
        console.print(Segments(_joined([foot])))
    if layout.dropped:
        console.print(fit._note(console, options, layout, width))
    return blocks


def _empty(table: Table) -> Table:
    """``table``'s frame and columns without its rows: its title, header and edges."""
    import copy

    head = copy.copy(table)
    head.rows = []
    head.columns = [copy.copy(column) for column in table.columns]
    for column in head.columns:
        column._cells = []
    return head


def _joined(lines: Iterator[list[Segment]] | Sequence[list[Segment]]) -> list[Segment]:
    from rich.segment import Segment

    out: list[Segment] = []
    for line in lines:
        out.extend(line)
        out.append(Segment.line())
    return out


class _Shape:
    """How rich's table puts a body row together, for fixed widths: each cell's padding,
    justification and the box's edges and dividers."""

    def __init__(self, console: Console, options: ConsoleOptions, table: Table,
                 widths: list[int], pads: list[tuple[int, int]],
                 box: tuple[Segment, Segment, Segment] | None) -> None:
        self.console = console
        self.options = options
        self.table = table
        self.widths = widths
        self.pads = pads
        self.box = box

    @classmethod
    def of(cls, console: Console, table: Table, widths: list[int]) -> _Shape | None:
        """The shape of ``table``'s body rows; None for what rich's table does that this
        does not (row styles, lines between rows, vertical padding, column styles)."""
        from rich.segment import Segment

        top, right, bottom, left = table.padding
        if (table.row_styles or table.show_lines or table.leading or top or bottom
                or table.show_footer or table.style not in (None, "", "none")
                or any(c.style or c.vertical != "top" or c.no_wrap or c.overflow != "fold"
                       or c.highlight for c in table.columns)):
            return None
        pads = []
        last = len(table.columns) - 1
        for index in range(len(table.columns)):
            lpad, rpad = left, right
            if table.collapse_padding and index:
                lpad = max(0, lpad - rpad)
            if not table.pad_edge:
                lpad = 0 if index == 0 else lpad
                rpad = 0 if index == last else rpad
            pads.append((lpad, rpad))
        box = None
        if table.box:
            border = console.get_style(table.border_style or "")
            plain_box = table.box.substitute(console.options, safe=table.safe_box
                                             if table.safe_box is not None else console.safe_box)
            if not table.show_header:
                plain_box = plain_box.get_plain_headed_box()
            box = (Segment(plain_box.mid_left, border), Segment(plain_box.mid_right, border),
                   Segment(plain_box.mid_vertical, border))
            if box[2].text.strip():
                return None  # a drawn divider: rows then differ (first, last); not done here
        return cls(console, console.options, table, widths, pads, box)

    def cell(self, value: RenderableType, index: int) -> list[list[Segment]]:
        """One cell's lines: rich's wrap at the column's width, padded as the table pads."""
        from rich.segment import Segment
        from rich.text import Text

        column = self.table.columns[index]
        lpad, rpad = self.pads[index]
        width = self.widths[index]
        text = _as_text(self.console, value)
        justify = text.justify or column.justify
        fast = self._one_line(text, width, justify)
        if fast is not None:  # the text's own style covers its justified line
            if not text.style:
                return [[Segment(" " * lpad + fast + " " * rpad)]]
            styled = Segment(fast, self.console.get_style(text.style))
            return [[*([Segment(" " * lpad)] if lpad else []), styled,
                     *([Segment(" " * rpad)] if rpad else [])]]
        lines = text.wrap(self.console, width, justify=justify, overflow=text.overflow or "fold",
                          no_wrap=bool(text.no_wrap))
        joined = Text("\n").join(lines)  # as Text.__rich_console__: styles become spans
        out = []
        for line in Segment.split_lines(joined.render(self.console)):
            segments = [seg for seg in line if seg.text]
            used = sum(seg.cell_length for seg in segments)
            row: list[Segment] = [Segment(" " * lpad)] if lpad else []
            row.extend(segments)
            if used < width:
                row.append(Segment(" " * (width - used)))
            if rpad:
                row.append(Segment(" " * rpad))
            out.append(row)
        return out or [[Segment(" " * (lpad + width + rpad))]]

    @staticmethod
    def _one_line(text: Text, width: int, justify: str) -> str | None:
        """The cell's one line, justified, when rich's wrap would give exactly that: one
        line of text without spans, tabs or line breaks that fits; else None."""
        from rich.cells import cell_len

        plain = text.plain
        if text._spans or "\n" in plain or "\t" in plain or justify not in ("left", "right"):
            return None
        used = cell_len(plain)
        if used > width or (justify == "right" and plain != plain.rstrip()):
            return None
        pad = " " * (width - used)
        return plain + pad if justify == "left" else pad + plain

    def row(self, cells: Sequence[RenderableType]) -> Iterator[list[Segment]]:
        """The lines of one body row (cells shorter than the row padded below)."""
        from rich.segment import Segment

        rendered = [self.cell(value, index) for index, value in enumerate(cells)]
        height = max(len(lines) for lines in rendered)
        for line_no in range(height):
            line: list[Segment] = []
            if self.box and self.table.show_edge:
                line.append(self.box[0])
            for index, lines in enumerate(rendered):
                if line_no < len(lines):
                    line.extend(lines[line_no])
                else:
                    lpad, rpad = self.pads[index]
                    line.append(Segment(" " * (lpad + self.widths[index] + rpad)))
                if self.box and index < len(rendered) - 1:
                    line.append(self.box[2])
            if self.box and self.table.show_edge:
                line.append(self.box[1])
            yield line


def _as_text(console: Console, value: RenderableType) -> Text:
    from rich.text import Text

    if isinstance(value, Text):
        return value
    if isinstance(value, str):
        return console.render_str(value)
    raise TypeError(f"a cell of a big table must be text, not {type(value).__name__}")



def probing_line(devices: Sequence[Device], *, big_rows: int = BIG_ROWS) -> str | None:
    """What ``status`` says before it probes an estate of more than ``big_rows`` listeners
    (its table comes only once every listener has answered: it is sorted by days left);
    None for a smaller estate, which says nothing."""
    listeners = sum(len(device.listeners) for device in devices)
    if listeners <= big_rows:
        return None
    return (f"status: probing {len(devices):,} devices' {listeners:,} listeners; what they "
            "serve follows once every listener has answered…")


def say_probing(err_console: Console, devices: Sequence[Device]) -> None:
    """``probing_line`` on ``err_console`` (stderr), for a large estate only."""
    line = probing_line(devices)
    if line is not None:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
