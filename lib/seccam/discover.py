"""Finding the cameras that are really attached, for ``seccam cameras --detect``.

This module owns the answer to "which ``[[camera]]`` blocks could this machine
use?" and the ready-to-paste TOML for them. It only reads; it never captures.

Two kinds of camera, two sources of truth:

* Camera modules on the CSI connector are driven by libcamera. ``rpicam-still
  --list-cameras`` numbers them exactly as ``rpicam-still --camera N`` (the
  ``index`` key) expects, so its listing is the source; each becomes an
  ``rpicam`` block. rpicam-apps leaves USB webcams out of that listing.
* USB webcams are V4L2 devices for fswebcam. sysfs
  (``/sys/class/video4linux/videoN``) says which nodes exist, but not what
  they can do: V4L2 capabilities are not in sysfs. ``v4l2-ctl --device
  /dev/videoN --info`` (Debian's v4l-utils; the VIDIOC_QUERYCAP ioctl) gives
  the node's "Device Caps" bits and its bus. A node is offered only if it can
  capture video (V4L2_CAP_VIDEO_CAPTURE), is not a memory-to-memory codec, and
  sits on USB. That last rule matters on a Pi: the bcm2835-isp capture nodes
  and unicam (the CSI receiver under the camera module) report "Video Capture"
  too, but they are stages of libcamera's pipeline, not cameras fswebcam can
  open; the codec nodes (/dev/video10 and up) are memory-to-memory; a UVC
  webcam's second node is metadata only.

A USB camera is offered by its udev name ``/dev/v4l/by-id/...-video-index0``
(else ``/dev/v4l/by-path/...``) because ``/dev/videoN`` numbers are handed out
in probe order and change between boots and when cameras are re-plugged.

Everything the machine is asked goes through two seams, so tests can use a
fake tree: ``root`` (where ``sys/`` and ``dev/`` are looked up) and ``run``
(runs a tool and returns a CompletedProcess; raises FileNotFoundError when the
tool is not installed).
"""

import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path

# linux/videodev2.h
V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_VIDEO_M2M_MPLANE = 0x00004000
V4L2_CAP_VIDEO_M2M = 0x00008000

LIST_TIMEOUT_S = 30.0  # rpicam-still --list-cameras configures every sensor mode; ~1-2 s on a Pi
INFO_TIMEOUT_S = 10.0

_LISTING_LINE = re.compile(r"^(\d+) : (\S+) \[([^\]]*)\] \((.*)\)\s*$")
# libcamera's errors when it cannot open the DMA heaps (DmaBufAllocator, or DmaHeap before
# libcamera 0.3) or a camera device node: the Pi camera stack then lists no camera at all.
_NO_ACCESS = re.compile(r"dma.?heap|dma-buf provider|Permission denied|Operation not permitted", re.IGNORECASE)
_SIZE = re.compile(r"(\d+)x(\d+)")
_VIDEO = re.compile(r"^video(\d+)$")


@dataclasses.dataclass(frozen=True)
class Module:
    """A camera module as ``rpicam-still --list-cameras`` lists it."""

    index: int
    model: str
    sensor: tuple | None  # (width, height) of the active pixel array
    camera_id: str

    def suggested_resolution(self):
        """The sensor's 2x2-binned size: the whole field of view, a fast
        readout, and less noise in the dark than a full-resolution mode."""
        if not self.sensor:
            return None
        return (self.sensor[0] // 2 // 2 * 2, self.sensor[1] // 2 // 2 * 2)


@dataclasses.dataclass(frozen=True)
class UsbCamera:
    """A V4L2 capture node on USB."""

    node: str  # /dev/videoN today
    device: str  # the stable name to put in the config
    card: str
    driver: str
    bus: str


@dataclasses.dataclass
class Detection:
    modules: list
    usb: list
    notes: list  # why something could not be checked, one line each
    denied: bool = False  # libcamera could not open the camera devices: "no camera" may not be true

    @property
    def cameras(self):
        return self.modules + self.usb


def run_tool(argv, timeout):
    """Run a read-only tool; FileNotFoundError if it is not installed."""
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          check=False)


def parse_listing(text):
    """Camera modules from ``rpicam-still --list-cameras`` output ("No cameras available!" gives none).

    rpicam-apps prints one line per camera, then its sensor modes indented:
    ``0 : imx219 [3280x2464 10-bit RGGB] (/base/soc/i2c0mux/i2c@1/imx219@10)``.
    """
    modules = []
    for line in text.splitlines():
        match = _LISTING_LINE.match(line)
        if not match:
            continue
        index, model, props, camera_id = match.groups()
        size = _SIZE.search(props)
        modules.append(Module(int(index), model, (int(size[1]), int(size[2])) if size else None, camera_id))
    return modules


def parse_info(text):
    """The "Driver Info" block of ``v4l2-ctl --info``: driver, card, bus, device_caps (int or None)."""
    info = {}
    section = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            section = line.strip().rstrip(":")
            continue
        if section != "Driver Info" or ":" not in line:
            continue
        key, _, value = line.strip().partition(":")
        info.setdefault(key.strip(), value.strip())
    caps = info.get("Device Caps") or info.get("Capabilities")
    try:
        device_caps = int(caps, 16) if caps else None
    except ValueError:
        device_caps = None
    return {"driver": info.get("Driver name", ""), "card": info.get("Card type", ""),
            "bus": info.get("Bus info", ""), "device_caps": device_caps}


def is_usb_camera(info):
    """Can fswebcam capture from this node? See the module docstring for why each rule is there."""
    caps = info["device_caps"]
    if caps is None or not caps & V4L2_CAP_VIDEO_CAPTURE:
        return False
    if caps & (V4L2_CAP_VIDEO_M2M | V4L2_CAP_VIDEO_M2M_MPLANE):
        return False
    return info["bus"].startswith("usb-")


def camera_modules(run=run_tool):
    """Return (modules, notes); a note starting with "no access" means libcamera could not open
    the devices it needs, so an empty listing does not mean that no module is attached."""
    try:
        result = run(["rpicam-still", "--list-cameras"], LIST_TIMEOUT_S)
    except FileNotFoundError:
        return [], ["rpicam-still is not installed: camera modules were not looked for "
                    "(on Raspberry Pi OS: sudo apt install rpicam-apps-lite)"]
    except subprocess.TimeoutExpired:
        return [], [f"rpicam-still --list-cameras did not answer within {LIST_TIMEOUT_S:g} s"]
    if result.returncode != 0:
        return [], [f"rpicam-still --list-cameras failed (exit {result.returncode}): {_last_line(result.stderr)}"]
    modules = []
    for module in parse_listing(result.stdout):
        if "/usb" in module.camera_id:  # older rpicam-apps listed UVC webcams too; those are fswebcam's
            continue
        modules.append(module)
    if not modules:
        # "No cameras available!" and exit 0 also when libcamera could not open /dev/dma_heap/*,
        # /dev/media* or /dev/video*: its reason is on stderr.
        denied = [ln.strip() for ln in (result.stderr or "").splitlines() if _NO_ACCESS.search(ln)]
        if denied:
            return [], [f"no access to the camera devices: rpicam-still lists no camera because libcamera "
                        f"could not open them ({denied[-1][-160:]}); run as root or as a member of group "
                        "video (it owns /dev/dma_heap/*, /dev/media* and /dev/video*)"]
    return modules, []


def _video_nodes(root):
    sysfs = Path(root, "sys/class/video4linux")
    try:
        names = os.listdir(sysfs)
    except FileNotFoundError:
        return []
    nodes = sorted(int(m[1]) for m in map(_VIDEO.match, names) if m)
    return [f"video{n}" for n in nodes]


def _stable_links(root):
    """Map ``videoN`` to its udev by-id link (else by-path link), as absolute /dev paths."""
    links = {}
    for kind in ("by-path", "by-id"):  # by-id last: it wins
        directory = Path(root, "dev/v4l", kind)
        try:
            entries = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                target = os.readlink(directory / entry)
            except OSError:
                continue
            links[os.path.basename(target)] = f"/dev/v4l/{kind}/{entry}"
    return links


def usb_cameras(root="/", run=run_tool):
    """Return (cameras, notes)."""
    nodes = _video_nodes(root)
    if not nodes:
        return [], []
    links = _stable_links(root)
    cameras, notes = [], []
    for node in nodes:
        devnode = f"/dev/{node}"
        try:
            result = run(["v4l2-ctl", "--device", devnode, "--info"], INFO_TIMEOUT_S)
        except FileNotFoundError:
            return [], ["v4l2-ctl is not installed: USB cameras were not looked for (sudo apt install v4l-utils)"]
        except subprocess.TimeoutExpired:
            notes.append(f"{devnode}: v4l2-ctl did not answer within {INFO_TIMEOUT_S:g} s")
            continue
        if result.returncode != 0:
            notes.append(f"{devnode}: {_last_line(result.stderr or result.stdout)} "
                         "(run as root, or as a member of group video)")
            continue
        info = parse_info(result.stdout)
        if is_usb_camera(info):
            cameras.append(UsbCamera(node=devnode, device=links.get(node, devnode), card=info["card"],
                                     driver=info["driver"], bus=info["bus"]))
    return cameras, notes


ROOT = "/"


def detect(root=None, run=None):
    """Look for camera modules and USB cameras; never raises for a missing tool or device.
    ``root`` and ``run`` default to :data:`ROOT` and :func:`run_tool`, looked up at call time."""
    root = ROOT if root is None else root
    run = run_tool if run is None else run
    modules, notes = camera_modules(run)
    usb, usb_notes = usb_cameras(root, run)
    denied = any(note.startswith("no access") for note in notes)
    return Detection(modules=modules, usb=usb, notes=notes + usb_notes, denied=denied)


def _last_line(text):
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no message"


def _toml(value):
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _comment(text):
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def render(detection):
    """The ``[[camera]]`` blocks for ``detection`` as TOML text, with comments saying where each came from."""
    out = ["# Cameras found by `seccam cameras --detect`. Paste these blocks into /etc/seccam/seccam.toml,",
           "# give them names that say where they look (\"door\", \"yard\"), then test them: seccam cameras"]
    for module in detection.modules:
        size = f", sensor {module.sensor[0]}x{module.sensor[1]}" if module.sensor else ""
        out += ["", f"# Camera module {module.index}: {_comment(module.model)}{size} ({_comment(module.camera_id)})."]
        resolution = module.suggested_resolution()
        if resolution:
            out.append("# The resolution is the sensor's 2x2-binned size: whole field of view, less noise at night.")
        out += ["[[camera]]", f'name = "module{module.index}"', 'backend = "rpicam"', f"index = {module.index}"]
        if resolution:
            out.append(f'resolution = "{resolution[0]}x{resolution[1]}"')
    for number, cam in enumerate(detection.usb):
        out += ["", f"# USB camera: {_comment(cam.card)} ({_comment(cam.driver)}, {_comment(cam.bus)}), "
                    f"now {cam.node}."]
        if cam.device == cam.node:
            out.append(f"# It has no /dev/v4l link: {cam.node} may get another number after a reboot.")
        elif cam.device.startswith("/dev/v4l/by-id/"):
            out.append(f"# The by-id name stays with this camera across reboots; {cam.node} may not.")
        else:
            out.append(f"# The by-path name stays with this USB port across reboots; {cam.node} may not.")
        out += [f"# Sizes it offers: v4l2-ctl --device {cam.node} --list-formats-ext",
                "[[camera]]", f'name = "usb{number}"', 'backend = "fswebcam"', f"device = {_toml(cam.device)}",
                'resolution = "1280x720"']
    return "\n".join(out) + "\n"
