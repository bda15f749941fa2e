"""A line plot drawn with Pillow (matplotlib is no dependency): eval's PSNR by number of hints."""

import math
from typing import Sequence

from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

WIDTH, HEIGHT = 640, 400
MARGINS = (72, 44, 24, 64)  # left, top, right, bottom
LINE = (31, 119, 180)  # the series
REFERENCE = (150, 150, 150)  # the dashed reference line
TEXT, AXES, GRID = (30, 30, 30), (80, 80, 80), (232, 232, 232)


def _font(size: int):
  try:
    return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
  except (TypeError, OSError):
    return ImageFont.load_default()


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
  """About `count` round values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
  raw = (high - low) / count
  power = 10 ** math.floor(math.log10(raw))
  step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
  first = math.floor(low / step) * step
  return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


def line_plot(
  xs: Sequence[int],
  ys: Sequence[float],
  *,
  title: str,
  x_label: str,
  y_label: str,
  reference: tuple[float, str] | None = None,
) -> Image.Image:
  """ys over categorical xs (evenly spaced, labelled with their values), as an RGB image.

  Args:
    xs: the categories, in order (e.g. 0, 1, 2, 5, 10 hints).
    ys: one value each; non-finite values are left out of the line.
    title, x_label, y_label: the texts.
    reference: (value, label) drawn as a dashed horizontal line, e.g. a baseline.
  """
  image = Image.new("RGB", (WIDTH, HEIGHT), "white")
  draw = ImageDraw.Draw(image)
  left, top, right, bottom = MARGINS[0], MARGINS[1], WIDTH - MARGINS[2], HEIGHT - MARGINS[3]
  values = [y for y in ys if math.isfinite(y)] + ([reference[0]] if reference else [])
  low, high = (min(values), max(values)) if values else (0.0, 1.0)
  pad = max(0.5, 0.08 * (high - low))
  ticks = _ticks(low - pad, high + pad)
  low, high = ticks[0], ticks[-1]
  to_y = lambda y: bottom - (y - low) / (high - low) * (bottom - top)  # noqa: E731
  step = (right - left) / max(len(xs), 1)
  to_x = lambda i: left + (i + 0.5) * step  # noqa: E731
  small, large = _font(13), _font(16)

  for tick in ticks:
    y = to_y(tick)
    draw.line([(left, y), (right, y)], fill=GRID)
    draw.text((left - 8, y), f"{tick:g}", fill=TEXT, font=small, anchor="rm")
  draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXES, width=1)
  for i, x in enumerate(xs):
    draw.text((to_x(i), bottom + 8), str(x), fill=TEXT, font=small, anchor="mt")
  draw.text(((left + right) / 2, HEIGHT - 12), x_label, fill=TEXT, font=small, anchor="mb")
  draw.text((left, top - 10), y_label, fill=TEXT, font=small, anchor="lb")
  draw.text((WIDTH / 2, 12), title, fill=TEXT, font=large, anchor="mt")

  if reference:
    y = to_y(reference[0])
    for x in range(left, right, 12):
      draw.line([(x, y), (min(x + 6, right), y)], fill=REFERENCE, width=2)
    draw.text((right - 4, y - 4), reference[1], fill=REFERENCE, font=small, anchor="rb")
  points = [(to_x(i), to_y(y), y) for i, y in enumerate(ys) if math.isfinite(y)]
  if len(points) > 1:
    draw.line([(x, y) for x, y, _ in points], fill=LINE, width=3)
  for x, y, value in points:
    draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=LINE)
    draw.text((x, y - 9), f"{value:.2f}", fill=TEXT, font=small, anchor="mb")
  return image
