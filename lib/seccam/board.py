"""Which board this is, and which GPIO pin library gpiozero will use on it (install.sh asks).

gpiozero drives the pins through a *pin factory* built on a pin library, and
takes the first one that loads, in its own order of preference: gpiozero 2.x
(Raspberry Pi OS) prefers lgpio, then RPi.GPIO, pigpio and its own "native"
code; gpiozero 1.6 (Debian) prefers RPi.GPIO, then lgpio, RPIO, pigpio,
native. Not every library drives every board: a Raspberry Pi 5's GPIO sits on
the RP1 chip, which only lgpio (or the rpi-lgpio stand-in for RPi.GPIO)
reaches; RPi.GPIO, RPIO, pigpio and native write the registers of the older
Pis' chip and fail there, so a poller that picks one of them never sees
motion.

This module only looks: it never imports gpiozero or a pin library
(RPi.GPIO raises on import off a Pi, and a factory touches the hardware).
It reads the board's device-tree model and finds which libraries are
installed (importlib), then follows gpiozero's order.

    python3 -m seccam.board [--model-file FILE]

prints one line saying what gpiozero will use, and lines starting with
``warning:`` when that will not work on this board.
"""

import argparse
import importlib.metadata
import importlib.util
import re
import sys

MODEL_FILES = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model")

# gpiozero's order of preference, by major version: (factory name, module, what to call it).
_ORDER = {
    2: ("lgpio", "rpigpio", "pigpio", "native"),
    1: ("rpigpio", "lgpio", "rpio", "pigpio", "native"),
}
_MODULES = {"lgpio": "lgpio", "rpigpio": "RPi.GPIO", "rpio": "RPIO", "pigpio": "pigpio"}
_NAMES = {"lgpio": "lgpio", "rpigpio": "RPi.GPIO", "rpio": "RPIO", "pigpio": "pigpio (needs the pigpiod daemon)",
          "native": "gpiozero's native pin code"}
_RP1 = re.compile(r"Raspberry Pi (5|500)\b|Compute Module 5")


def read_model(paths=MODEL_FILES):
    """The device tree's model string (``Raspberry Pi 4 Model B Rev 1.4``), or None."""
    for path in paths:
        try:
            with open(path, "rb") as fh:
                return fh.read().rstrip(b"\0\n").decode("utf-8", "replace") or None
        except OSError:
            continue
    return None


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package (RPi) is missing
        return False


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def facts():
    """(gpiozero version or None, set of installed factory names, whether RPi.GPIO is rpi-lgpio)."""
    available = {name for name, module in _MODULES.items() if _installed(module)} | {"native"}
    return _version("gpiozero"), available, _version("rpi-lgpio") is not None


def _works(factory, rp1, shim):
    if not rp1:
        return True
    return factory == "lgpio" or (factory == "rpigpio" and shim)


def assess(model, gpiozero_version, available, rpigpio_is_lgpio=False):
    """``[line, ...]``: what gpiozero will use on ``model``; lines that start with ``warning:`` say
    why that will not work and what to do."""
    if model is None:
        return ["no GPIO here: no device-tree model (not a Raspberry Pi, or a container); the poller needs a "
                "Raspberry Pi's pins (seccam demo runs on mock pins)"]
    if "Raspberry Pi" not in model:
        return [f"board {model}: not a Raspberry Pi",
                "warning: gpiozero knows only Raspberry Pi boards' pins: the poller cannot watch the PIRs here"]
    if gpiozero_version is None:
        return [f"board {model}", "warning: gpiozero is not installed (Debian package python3-gpiozero)"]
    major = 2 if int(gpiozero_version.split(".")[0]) >= 2 else 1
    rp1 = bool(_RP1.search(model))
    order = [f for f in _ORDER[major] if f in available]
    chosen = order[0]
    name = "rpi-lgpio (RPi.GPIO on lgpio)" if chosen == "rpigpio" and rpigpio_is_lgpio else _NAMES[chosen]
    lines = [f"board {model}: gpiozero {gpiozero_version} will use {name}"]
    if _works(chosen, rp1, rpigpio_is_lgpio):
        return lines
    working = [f for f in order if _works(f, rp1, rpigpio_is_lgpio)]
    if working:
        lines.append(f"warning: {_NAMES[chosen]} does not drive this board's GPIO (the RP1 chip), but "
                     f"{_NAMES[working[0]]} does: make the poller use it with  sudo systemctl edit seccam-poller  "
                     f"and the lines  [Service]  Environment=GPIOZERO_PIN_FACTORY={working[0]}")
    else:
        lines.append(f"warning: no installed pin library drives this board's GPIO (the RP1 chip; "
                     f"{_NAMES[chosen]} does not): the poller will not see motion. Install lgpio: "
                     "sudo apt install python3-lgpio (in Raspberry Pi OS's archive; Debian has none)")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m seccam.board", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-file", metavar="FILE", help="read the board's model from FILE "
                        f"(default: {' or '.join(MODEL_FILES)})")
    args = parser.parse_args(argv)
    model = read_model([args.model_file] if args.model_file else MODEL_FILES)
    for line in assess(model, *facts()):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
