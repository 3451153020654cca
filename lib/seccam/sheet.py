"""Contact sheets: many captures on one JPEG, as time-stamped thumbnails in a grid.

This module owns the picture layout and nothing else: tiles in (an image file,
or the reason there is none, and a label), a JPEG out. It is the only module
that imports PIL (Debian's python3-pil, Pillow), and only the jobs that make an
incident update or an incident summary import it.

Layout, chosen for a phone (docs/operations.md shows a sheet):

* a title at the top (what, when, which sheet of how many);
* a grid, row by row in the order given (the caller passes time order),
  about as wide as a landscape phone screen (at most :data:`MAX_WIDTH` pixels):
  few tiles are shown large (up to :data:`MAX_TILE` wide), many smaller (down
  to :data:`MIN_TILE`); the columns are chosen so that the sheet is roughly
  16:9, the shape a phone shows full-screen in landscape;
* under every thumbnail its label (the capture time) on a strip of its own,
  so that the picture itself is never covered;
* a tile without a picture (the camera failed at that moment, or its files
  were pruned) is a dark red box saying so, with the reason: a gap in the
  timeline is visible, never silently closed up.

Text is drawn with Pillow's built-in bitmap font, scaled up by whole pixels:
crisp at any size, the same on every Pillow version (Debian 12 ships 9.4,
Debian 13 11.1), and independent of installed fonts. It covers Latin-1;
anything else is transliterated (``Vordertür`` -> ``Vordertur``).

Example::

    >>> from seccam import sheet
    >>> s = sheet.render([sheet.Tile("14:02:30", "front.jpg", "front.preview.jpg")], ["front"])
    >>> data = s.jpeg()        # bytes, ready for an image set
"""

import dataclasses
import io
import math
import unicodedata
from pathlib import Path

MAX_WIDTH = 1920
MIN_TILE = 160
MAX_TILE = 480
GAP = 8
MARGIN = 12
FONT_HEIGHT = 11          # Pillow's built-in bitmap font
BACKGROUND = (24, 24, 24)
TEXT = (240, 240, 240)
DIM_TEXT = (170, 170, 170)
FAILED = (96, 24, 24)
LETTERBOX = (0, 0, 0)
DEFAULT_ASPECT = 16 / 9
# The columns make the sheet about this wide for its height (a phone in landscape).
SHEET_ASPECT = 16 / 9


@dataclasses.dataclass(frozen=True)
class Tile:
    """One cell: ``label`` under the picture at ``full`` (or ``preview``, whichever
    suits the thumbnail size and can be read); ``missing`` says why there is none."""

    label: str
    full: Path | None = None
    preview: Path | None = None
    missing: str | None = None


@dataclasses.dataclass
class Sheet:
    """A rendered sheet: the image, and where each tile went (for tests and callers)."""

    image: object                 # PIL.Image.Image
    boxes: list                   # [(x0, y0, x1, y1)] of each picture area, in tile order
    label_boxes: list             # [(x0, y0, x1, y1)] of each label strip
    columns: int
    tile_size: tuple              # (width, height) of a picture area
    shown: int                    # tiles that got a picture

    def jpeg(self, quality=80):
        buf = io.BytesIO()
        self.image.save(buf, "JPEG", quality=quality, optimize=True)
        return buf.getvalue()


def plain(text):
    """``text`` in the characters the bitmap font has: accents dropped, the rest ``?``."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _font():
    from PIL import ImageFont
    # Pillow >= 10.1 returns a FreeType font from load_default(); the bitmap font is
    # load_default_imagefont() there. Both releases draw the same pixels this way.
    return getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()


def text_mask(text, scale):
    """The text as an "L" mask, each font pixel a ``scale`` x ``scale`` block."""
    from PIL import Image, ImageDraw
    text = plain(text)
    font = _font()
    width = max(1, font.getbbox(text)[2]) if text else 1
    mask = Image.new("L", (width, FONT_HEIGHT), 0)
    ImageDraw.Draw(mask).text((0, 0), text, font=font, fill=255)
    return mask.resize((width * scale, FONT_HEIGHT * scale), Image.Resampling.NEAREST)


def text_width(text, scale):
    return text_mask(text, scale).size[0]


def _draw_text(canvas, xy, text, scale, colour, max_width=None):
    mask = text_mask(text, scale)
    if max_width is not None and mask.size[0] > max_width:
        mask = mask.crop((0, 0, max_width, mask.size[1]))
    canvas.paste(colour, (xy[0], xy[1], xy[0] + mask.size[0], xy[1] + mask.size[1]), mask)


def _open(path, size):
    """The picture at ``path`` fitted into ``size``, or None if it cannot be read."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.draft("RGB", size)  # JPEG: decode at 1/2, 1/4 or 1/8 scale, much cheaper
            im = im.convert("RGB")
            im.thumbnail(size, Image.Resampling.BILINEAR)
            return im
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _width_of(path):
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.size[0]
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0


def _source(tiles):
    """(aspect, width) of the first readable full image (else preview); width None if none."""
    from PIL import Image
    for tile in tiles:
        for path in (tile.full, tile.preview):
            if path is None:
                continue
            try:
                with Image.open(path) as im:
                    w, h = im.size
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
            if w > 0 and h > 0:
                return w / h, w
    return DEFAULT_ASPECT, None


def grid(count, aspect=DEFAULT_ASPECT, max_width=MAX_WIDTH, min_tile=MIN_TILE, max_tile=MAX_TILE, columns=None):
    """(columns, tile width, tile height) for ``count`` tiles of ``aspect`` (width / height)."""
    if columns is None:
        # width / height = (columns * w) / (rows * w / aspect) = SHEET_ASPECT, rows = count / columns
        columns = math.ceil(math.sqrt(count * SHEET_ASPECT / aspect)) if count else 1
    columns = max(1, min(columns, count or 1, max(1, (max_width - 2 * MARGIN + GAP) // (min_tile + GAP))))
    width = (max_width - 2 * MARGIN - (columns - 1) * GAP) // columns
    width = max(min_tile, min(max_tile, width))
    return columns, width, max(1, round(width / aspect))


def render(tiles, title=(), max_width=MAX_WIDTH, min_tile=MIN_TILE, max_tile=MAX_TILE, columns=None):
    """Lay ``tiles`` out in a grid under the ``title`` lines; return a :class:`Sheet`."""
    from PIL import Image
    tiles = list(tiles)
    aspect, source_width = _source(tiles)
    if source_width is not None:
        max_tile = max(min_tile, min(max_tile, source_width))  # never enlarge a picture
    columns, tw, th = grid(len(tiles), aspect, max_width, min_tile, max_tile, columns)
    rows = max(1, math.ceil(len(tiles) / columns))
    scale = 2 if tw < 400 else 3
    label_h = FONT_HEIGHT * scale + 8
    grid_w = columns * tw + (columns - 1) * GAP
    width = grid_w + 2 * MARGIN
    title = [plain(line) for line in title]
    title_scale = 3 if width >= 900 else 2
    title_h = len(title) * (FONT_HEIGHT * title_scale + 6) + (MARGIN if title else 0)
    height = MARGIN + title_h + rows * (th + label_h) + (rows - 1) * GAP + MARGIN
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    y = MARGIN
    for i, line in enumerate(title):
        _draw_text(canvas, (MARGIN, y), line, title_scale, TEXT if i == 0 else DIM_TEXT, width - 2 * MARGIN)
        y += FONT_HEIGHT * title_scale + 6
    top = MARGIN + title_h
    boxes, label_boxes, shown = [], [], 0
    for i, tile in enumerate(tiles):
        row, col = divmod(i, columns)
        x0 = MARGIN + col * (tw + GAP)
        y0 = top + row * (th + label_h + GAP)
        box = (x0, y0, x0 + tw, y0 + th)
        picture = None if tile.missing else _picture(tile, (tw, th))
        if picture is None:
            canvas.paste(FAILED, box)
            reason = tile.missing or "picture unreadable"
            _draw_text(canvas, (x0 + 6, y0 + 6), "NO PICTURE", scale, TEXT, tw - 12)
            _draw_text(canvas, (x0 + 6, y0 + 12 + FONT_HEIGHT * scale), reason, 1 if scale == 2 else 2,
                       TEXT, tw - 12)
        else:
            canvas.paste(LETTERBOX, box)
            canvas.paste(picture, (x0 + (tw - picture.size[0]) // 2, y0 + (th - picture.size[1]) // 2))
            shown += 1
        label_box = (x0, y0 + th, x0 + tw, y0 + th + label_h)
        _draw_text(canvas, (x0 + 4, y0 + th + 4), tile.label, scale, TEXT, tw - 8)
        boxes.append(box)
        label_boxes.append(label_box)
    return Sheet(canvas, boxes, label_boxes, columns, (tw, th), shown)


def _picture(tile, size):
    """The best readable picture of ``tile`` for a thumbnail of ``size``: the preview if it
    is large enough (cheap to decode), else the full image; either if the other fails."""
    order = [tile.preview, tile.full]
    if tile.preview is None or _width_of(tile.preview) < size[0]:
        order.reverse()
    for path in order:
        if path is not None:
            picture = _open(path, size)
            if picture is not None:
                return picture
    return None
