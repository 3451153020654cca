"""Contact sheets (seccam.sheet): every tile, in order, with its time stamp; a missing picture shows as one."""

import io

import pytest
from PIL import Image

from seccam import sheet

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200),
           (250, 250, 250), (120, 60, 0), (0, 90, 160), (90, 0, 160), (160, 160, 160)]


def solid(path, colour, size=(320, 180)):
    Image.new("RGB", size, colour).save(path, "JPEG", quality=95)
    return path


def close_to(pixel, colour, tolerance=12):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


def centre(image, box):
    return image.getpixel(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2))


def label_matches(s, index, text):
    """The label strip of tile ``index`` shows exactly ``text`` (pixel for pixel, before JPEG)."""
    x0, y0, _, _ = s.label_boxes[index]
    scale = 2 if s.tile_size[0] < 400 else 3
    mask = sheet.text_mask(text, scale)
    region = s.image.crop((x0 + 4, y0 + 4, x0 + 4 + mask.size[0], y0 + 4 + mask.size[1]))
    expected = Image.new("RGB", mask.size, sheet.BACKGROUND)
    expected.paste(sheet.TEXT, (0, 0, *mask.size), mask)
    return list(region.getdata()) == list(expected.getdata())


def test_every_tile_is_on_the_sheet_in_order_with_its_time_stamp(tmp_path):
    tiles = [sheet.Tile(f"14:0{i // 6}:{i % 6}0", solid(tmp_path / f"{i}.jpg", c), None)
             for i, c in enumerate(COLOURS)]
    s = sheet.render(tiles, ["front, 11 pictures", "2026-11-25 14:00:00 to 14:01:40"])
    assert len(s.boxes) == len(tiles) == s.shown
    for box, colour in zip(s.boxes, COLOURS):
        assert close_to(centre(s.image, box), colour), (box, colour)
    # row by row, left to right
    rows = [s.boxes[i:i + s.columns] for i in range(0, len(s.boxes), s.columns)]
    assert all(a[0] < b[0] and a[1] == b[1] for row in rows for a, b in zip(row, row[1:]))
    assert all(r1[0][1] < r2[0][1] for r1, r2 in zip(rows, rows[1:]))
    for i, tile in enumerate(tiles):
        assert label_matches(s, i, tile.label)
    assert not label_matches(s, 0, "14:00:11")  # the check can fail


def test_a_camera_that_failed_in_the_middle_leaves_a_marked_tile_not_a_gap(tmp_path):
    tiles = [sheet.Tile("14:00:00", solid(tmp_path / "a.jpg", COLOURS[0])),
             sheet.Tile("14:00:30", missing="timed out after 20 s"),
             sheet.Tile("14:01:00", solid(tmp_path / "c.jpg", COLOURS[2]))]
    s = sheet.render(tiles)
    assert len(s.boxes) == 3 and s.shown == 2
    failed = s.boxes[1]
    assert s.image.getpixel((failed[2] - 2, failed[3] - 2)) == sheet.FAILED
    assert close_to(centre(s.image, s.boxes[2]), COLOURS[2])
    assert [label_matches(s, i, t.label) for i, t in enumerate(tiles)] == [True] * 3
    # "NO PICTURE" is written in the failed tile
    mask = sheet.text_mask("NO PICTURE", 2)
    x, y = failed[0] + 6, failed[1] + 6
    region = s.image.crop((x, y, x + mask.size[0], y + mask.size[1]))
    expected = Image.new("RGB", mask.size, sheet.FAILED)
    expected.paste(sheet.TEXT, (0, 0, *mask.size), mask)
    assert list(region.getdata()) == list(expected.getdata())


def test_an_unreadable_picture_falls_back_to_the_other_file_or_shows_as_missing(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    preview = solid(tmp_path / "p.jpg", COLOURS[1], (320, 180))
    s = sheet.render([sheet.Tile("a", broken, preview), sheet.Tile("b", broken, None),
                      sheet.Tile("c", tmp_path / "gone.jpg", None)])
    assert s.shown == 1 and close_to(centre(s.image, s.boxes[0]), COLOURS[1])
    assert s.image.getpixel((s.boxes[1][0] + 1, s.boxes[1][3] - 2)) == sheet.FAILED
    assert s.image.getpixel((s.boxes[2][0] + 1, s.boxes[2][3] - 2)) == sheet.FAILED


def test_an_unreadable_preview_is_no_obstacle_and_a_sheet_without_any_picture_still_lays_out(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    s = sheet.render([sheet.Tile("a", solid(tmp_path / "f.jpg", COLOURS[4]), broken)])
    assert s.shown == 1 and close_to(centre(s.image, s.boxes[0]), COLOURS[4])
    empty = sheet.render([sheet.Tile("a", missing="timed out"), sheet.Tile("b", broken)])
    assert empty.shown == 0 and empty.tile_size[1] == round(empty.tile_size[0] * 9 / 16)


def test_the_preview_is_used_when_it_is_large_enough_else_the_full_image(tmp_path):
    full = solid(tmp_path / "full.jpg", COLOURS[0], (1280, 720))
    preview = solid(tmp_path / "preview.jpg", COLOURS[2], (320, 180))
    many = sheet.render([sheet.Tile(str(i), full, preview) for i in range(100)])   # small tiles
    assert many.tile_size[0] <= 320 and close_to(centre(many.image, many.boxes[0]), COLOURS[2])
    few = sheet.render([sheet.Tile("1", full, preview)])                               # one large tile
    assert few.tile_size[0] > 320 and close_to(centre(few.image, few.boxes[0]), COLOURS[0])


@pytest.mark.parametrize("count", [1, 4, 23, 60, 120])
def test_the_grid_fits_a_phone_screen_and_never_enlarges_a_picture(tmp_path, count):
    pic = solid(tmp_path / "p.jpg", COLOURS[3], (640, 360))
    s = sheet.render([sheet.Tile(str(i), pic) for i in range(count)], ["title"])
    width, height = s.image.size
    assert width <= sheet.MAX_WIDTH and len(s.boxes) == count
    assert sheet.MIN_TILE <= s.tile_size[0] <= min(sheet.MAX_TILE, 640)
    assert s.tile_size[1] == round(s.tile_size[0] * 360 / 640)
    if count >= 23:
        assert 1.0 <= width / height <= 2.5, (width, height)  # landscape, as a phone shows it full-screen


def test_jpeg_is_a_complete_jpeg_of_the_sheet(tmp_path):
    s = sheet.render([sheet.Tile("x", solid(tmp_path / "a.jpg", COLOURS[0]))])
    data = s.jpeg()
    assert data[:3] == b"\xff\xd8\xff" and data.endswith(b"\xff\xd9")
    assert Image.open(io.BytesIO(data)).size == s.image.size


def test_text_outside_the_font_is_transliterated_not_an_error():
    assert sheet.plain("Vordertür – 14:02") == "Vordertur ? 14:02"
    assert sheet.text_mask("Küche", 2).size == sheet.text_mask("Kuche", 2).size
    assert sheet.text_width("", 2) == 2
