"""Grids with axis labels, as A1111's scripts draw them (docs/reference/a1111_features.md §3.1, §3.2): column
labels above, row labels to the left, an optional margin between cells; a label is a list of parts, and an
inactive part is drawn struck through and greyed (the prompt matrix's unused parts)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

LABEL_PADDING = 6  # pixels around a label's text
ACTIVE_COLOUR = (0, 0, 0)
INACTIVE_COLOUR = (153, 153, 153)
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class LabelPart:
    text: str
    active: bool = True


Label = list[LabelPart]


def label(text: str) -> Label:
    """A one-part, active label ("" draws nothing)."""
    return [LabelPart(text)] if text else []


def _font(cell_width: int) -> ImageFont.ImageFont:
    # A1111 sizes the legend to the cell; Pillow's bundled font scales without any font file (offline).
    return ImageFont.load_default(size=max(10, min(48, cell_width // 12)))


def _wrap(draw: ImageDraw.ImageDraw, parts: Label, font, width: int) -> list[Label]:
    """The parts laid out on lines no wider than `width` (a part wider than a line gets a line of its own)."""
    lines: list[Label] = [[]]
    used = 0
    space = draw.textlength(" ", font=font)
    for part in parts:
        w = draw.textlength(part.text, font=font)
        if lines[-1] and used + space + w > width:
            lines.append([])
            used = 0
        used += (space if lines[-1] else 0) + w
        lines[-1].append(part)
    return lines if lines[0] else []


def _line_height(font) -> int:
    top, bottom = font.getbbox("Ag")[1::2]
    return int(bottom - top) + 4


def _label_height(draw, parts: Label, font, width: int) -> int:
    lines = _wrap(draw, parts, font, width - 2 * LABEL_PADDING)
    return len(lines) * _line_height(font) + 2 * LABEL_PADDING if lines else 0


def _draw_label(draw: ImageDraw.ImageDraw, parts: Label, font, box: tuple[int, int, int, int]) -> None:
    """The label centred in `box` (left, top, right, bottom)."""
    left, top, right, bottom = box
    lines = _wrap(draw, parts, font, right - left - 2 * LABEL_PADDING)
    height = _line_height(font)
    y = top + (bottom - top - len(lines) * height) // 2
    space = draw.textlength(" ", font=font)
    for line in lines:
        total = sum(draw.textlength(p.text, font=font) for p in line) + space * (len(line) - 1)
        x = left + (right - left - total) / 2
        for part in line:
            w = draw.textlength(part.text, font=font)
            colour = ACTIVE_COLOUR if part.active else INACTIVE_COLOUR
            draw.text((x, y), part.text, font=font, fill=colour)
            if not part.active:
                mid = y + height // 2
                draw.line((x, mid, x + w, mid), fill=colour, width=max(1, height // 12))
            x += w + space
        y += height


def labelled_grid(images: list[Image.Image], cols: int, rows: int, col_labels: list[Label] | None = None,
                  row_labels: list[Label] | None = None, margin: int = 0) -> Image.Image:
    """`images` (row by row, each the size of the first) in `rows` × `cols` cells, `margin` px apart, with one
    label per column above and one per row to the left (None or all-empty: no legend on that side)."""
    cell_w, cell_h = images[0].size
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = _font(cell_w)
    col_labels = col_labels if col_labels and any(col_labels) else None
    row_labels = row_labels if row_labels and any(row_labels) else None
    top = max((_label_height(probe, parts, font, cell_w) for parts in col_labels), default=0) if col_labels else 0
    left = 0
    if row_labels:
        widest = max(probe.textlength(" ".join(p.text for p in parts), font=font) for parts in row_labels)
        left = int(min(max(widest + 2 * LABEL_PADDING, cell_w // 2), cell_w * 3 // 2))
    width = left + cols * cell_w + (cols - 1) * margin
    height = top + rows * cell_h + (rows - 1) * margin
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images[: cols * rows]):
        col, row = i % cols, i // cols
        grid.paste(image.convert("RGB"), (left + col * (cell_w + margin), top + row * (cell_h + margin)))
    for col, parts in enumerate(col_labels or []):
        x = left + col * (cell_w + margin)
        _draw_label(draw, parts, font, (x, 0, x + cell_w, top))
    for row, parts in enumerate(row_labels or []):
        y = top + row * (cell_h + margin)
        _draw_label(draw, parts, font, (0, y, left, y + cell_h))
    return grid
