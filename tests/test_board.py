"""seccam.board: the board and the GPIO pin library gpiozero will use on it (install.sh prints it).

Pin libraries this machine cannot have (lgpio is in neither Debian release, RPi.GPIO is for
ARM only) are stood in for by importable files on the path; seccam.board only looks them up.
"""

import subprocess
import sys

import pytest

from helpers.coverage_env import REPO, with_coverage
from seccam import board

PI4 = "Raspberry Pi 4 Model B Rev 1.4"
PI5 = "Raspberry Pi 5 Model B Rev 1.0"


@pytest.mark.parametrize("model, version, available, shim, expected", [
    (PI4, "1.6.2", {"rpigpio", "native"}, False, [f"board {PI4}: gpiozero 1.6.2 will use RPi.GPIO"]),
    (PI4, "2.0.1", {"lgpio", "rpigpio", "native"}, False, [f"board {PI4}: gpiozero 2.0.1 will use lgpio"]),
    (PI5, "2.0.1", {"lgpio", "rpigpio", "native"}, False, [f"board {PI5}: gpiozero 2.0.1 will use lgpio"]),
    (PI5, "1.6.2", {"rpigpio", "native"}, True,
     [f"board {PI5}: gpiozero 1.6.2 will use rpi-lgpio (RPi.GPIO on lgpio)"]),
    ("Raspberry Pi Compute Module 5 Rev 1.0", "1.6.2", {"lgpio", "native"}, False,
     ["board Raspberry Pi Compute Module 5 Rev 1.0: gpiozero 1.6.2 will use lgpio"]),
    ("Raspberry Pi Zero W Rev 1.1", "1.6.2", {"native"}, False,
     ["board Raspberry Pi Zero W Rev 1.1: gpiozero 1.6.2 will use gpiozero's native pin code"]),
])
def test_the_library_gpiozero_takes_first_is_named_and_works_on_the_board(model, version, available, shim,
                                                                          expected):
    assert board.assess(model, version, available | {"native"}, shim) == expected


def test_a_pi_5_with_gpiozero_1_6_and_rpi_gpio_is_told_to_use_lgpio():
    lines = board.assess(PI5, "1.6.2", {"rpigpio", "lgpio", "native"})
    assert lines[0] == f"board {PI5}: gpiozero 1.6.2 will use RPi.GPIO"
    assert lines[1].startswith("warning: RPi.GPIO does not drive this board's GPIO (the RP1 chip), but lgpio does: ")
    assert "Environment=GPIOZERO_PIN_FACTORY=lgpio" in lines[1]


@pytest.mark.parametrize("version, available, chosen", [
    ("1.6.2", {"rpigpio", "native"}, "RPi.GPIO"),
    ("2.0.1", {"pigpio", "native"}, "pigpio (needs the pigpiod daemon)"),
    ("1.6.2", {"native"}, "gpiozero's native pin code"),
])
def test_a_pi_5_without_lgpio_gets_a_warning(version, available, chosen):
    lines = board.assess(PI5, version, available)
    assert lines[0] == f"board {PI5}: gpiozero {version} will use {chosen}"
    assert lines[1].startswith(f"warning: no installed pin library drives this board's GPIO (the RP1 chip; {chosen} "
                               "does not): the poller will not see motion. Install lgpio: sudo apt install "
                               "python3-lgpio")


def test_no_pi_no_gpio_and_no_gpiozero_are_said_as_such():
    assert board.assess(None, "1.6.2", {"native"})[0].startswith("no GPIO here: no device-tree model")
    assert board.assess("Pine64 RockPro64 v2.1", "1.6.2", {"native"}) == [
        "board Pine64 RockPro64 v2.1: not a Raspberry Pi",
        "warning: gpiozero knows only Raspberry Pi boards' pins: the poller cannot watch the PIRs here"]
    assert board.assess(PI4, None, {"native"}) == [
        f"board {PI4}", "warning: gpiozero is not installed (Debian package python3-gpiozero)"]


def test_the_model_is_read_from_the_device_tree(tmp_path):
    model = tmp_path / "model"
    model.write_bytes(PI5.encode() + b"\0")
    assert board.read_model([tmp_path / "absent", model]) == PI5
    model.write_bytes(b"\0")
    assert board.read_model([model]) is None
    assert board.read_model([tmp_path / "absent"]) is None


def test_installed_libraries_are_found_without_importing_them(tmp_path, monkeypatch):
    (tmp_path / "lgpio.py").write_text("raise SystemExit('imported!')\n")
    (tmp_path / "RPi").mkdir()
    (tmp_path / "RPi" / "__init__.py").write_text("")
    (tmp_path / "RPi" / "GPIO.py").write_text("raise SystemExit('imported!')\n")
    dist = tmp_path / "rpi_lgpio-0.6.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rpi-lgpio\nVersion: 0.6\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    version, available, shim = board.facts()
    assert version == "1.6.2" or version.startswith("2.")
    assert {"lgpio", "rpigpio", "native"} <= available and shim is True
    assert "lgpio" not in sys.modules


def test_the_command_prints_what_install_sh_shows(tmp_path):
    model = tmp_path / "model"
    model.write_bytes(PI4.encode() + b"\0")
    proc = subprocess.run([sys.executable, "-m", "seccam.board", "--model-file", str(model)],
                          env=with_coverage({"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "lib")}),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"board {PI4}: gpiozero ")
    assert board.main(["--model-file", str(tmp_path / "absent")]) == 0
