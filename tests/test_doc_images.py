"""The example contact sheet in docs/operations.md is what the code makes today (tests/doc_images.py).

If this fails after a deliberate change of the sheet's layout, run ``/usr/bin/python3 tests/doc_images.py``
and commit docs/images/contact-sheet.jpg.
"""

import subprocess
import sys

from PIL import Image, ImageChops, ImageStat

from conftest import ROOT

DOC_IMAGE = ROOT / "docs" / "images" / "contact-sheet.jpg"


def test_the_documented_contact_sheet_is_the_one_the_camera_makes(short_tmp):
    out = short_tmp / "sheet.jpg"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "doc_images.py"), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    made, committed = Image.open(out).convert("RGB"), Image.open(DOC_IMAGE).convert("RGB")
    assert made.size == committed.size, "layout changed: regenerate with tests/doc_images.py"
    # JPEG coding may differ by a level or two between libjpeg versions; a layout change differs by far more.
    diff = ImageStat.Stat(ImageChops.difference(made, committed)).mean
    assert max(diff) < 2.0, diff
    assert "](images/contact-sheet.jpg)" in (ROOT / "docs" / "operations.md").read_text()


def test_the_comparison_sees_a_different_sheet(short_tmp):
    committed = Image.open(DOC_IMAGE).convert("RGB")
    shifted = ImageChops.offset(committed, 40, 0)
    assert max(ImageStat.Stat(ImageChops.difference(shifted, committed)).mean) >= 2.0
