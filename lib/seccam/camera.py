"""Capturing images: one capture per camera gives a full-size image and a preview.

This module owns the capture contract every backend shares: the command runs
with a timeout, writes to new unique file names, and the result is validated
here (the file exists, is new, is non-empty and is a complete JPEG) because
Debian's fswebcam exits 0 when a capture failed. A failure is a
:class:`Result` with a one-line reason naming the camera, never an exception:
a failed or unplugged camera must not block the others.

All cameras are captured in parallel: every process is started first, then
each is waited for until its own deadline, so four cameras take about as long
as the slowest one.

Backends build command lines:

* ``fswebcam`` for V4L2 devices and fswebcam's own ``test``/``raw:``/``file:``
  sources: one invocation saves the full image, then ``--scale``s the same
  frame for the preview.
* ``rpicam`` for Raspberry Pi camera modules (libcamera's ``rpicam-still``):
  see :func:`rpicam_command`. rpicam-still exits non-zero when it fails
  (status 255, ``ERROR: *** no cameras available ***`` on stderr); that
  message is the reason reported. The preview is scaled from the saved image.

Pictures are evidence: unless a camera says ``stamp = false``, every picture
carries the camera's ``title`` (its name by default) and the capture time
with its time zone. fswebcam draws them as its banner (bottom of the
picture: title left, time right; the time is fswebcam's own, taken when it
starts the capture); rpicam-still cannot draw text, so its JPEG carries its
EXIF date (local time; the zone offset added as ``OffsetTimeOriginal``)
and the title as ``ImageDescription``, and the preview seccam scales from
it gets the banner with the time the frame was taken. :attr:`Result.taken`
is the time on the picture, and what meta.json and the messages report.
"""

import dataclasses
import datetime as _dt
import errno
import fcntl
import logging
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import time
from pathlib import Path

log = logging.getLogger("seccam.camera")

JPEG_MAGIC = b"\xff\xd8\xff"
#: fswebcam's banner time: local time with its zone, to the second.
STAMP_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
#: Where the Pi's device tree says which board this is (tests point it elsewhere).
DEVICE_TREE = "/proc/device-tree"
#: The V4L2 sub-devices, whose names say which camera module sensor is attached.
SYSFS_V4L = "/sys/class/video4linux"
#: Active pixel arrays of the camera module sensors Raspberry Pi OS knows, by driver name
#: (rpicam-still --list-cameras prints the same sizes). Half of it in each direction is the
#: 2x2-binned sensor mode: the whole field of view.
SENSORS = {"ov5647": (2592, 1944), "imx219": (3280, 2464), "imx477": (4056, 3040), "imx378": (4056, 3040),
           "imx500": (4056, 3040), "imx708": (4608, 2592), "imx296": (1456, 1088), "imx290": (1920, 1080),
           "imx327": (1920, 1080), "imx462": (1920, 1080), "imx519": (4656, 3496), "ov9281": (1280, 800)}
JPEG_END = b"\xff\xd9"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclasses.dataclass
class Result:
    """One camera's capture: the images, or why there are none."""

    camera: str
    ok: bool
    full: Path | None = None
    preview: Path | None = None
    error: str | None = None
    seconds: float = 0.0
    taken: float | None = None  # POSIX time on the picture (see the module docstring)

    def as_meta(self):
        """The camera's entry in an image set's meta.json (file names relative to the set)."""
        if not self.ok:
            return {"name": self.camera, "ok": False, "error": self.error, "seconds": round(self.seconds, 3)}
        taken = time.time() if self.taken is None else self.taken
        return {"name": self.camera, "ok": True, "full": self.full.name, "preview": self.preview.name,
                "bytes": self.full.stat().st_size, "preview_bytes": self.preview.stat().st_size,
                "captured": _dt.datetime.fromtimestamp(taken, _dt.timezone.utc).isoformat(),
                "seconds": round(self.seconds, 3)}


def local_stamp(ts):
    """``ts`` as the pictures show it: local time with the zone's abbreviation."""
    return _dt.datetime.fromtimestamp(ts).astimezone().strftime(STAMP_FORMAT)


def _literal(text):
    """``text`` for an option that fswebcam passes through strftime(3): every % doubled."""
    return text.replace("%", "%%")


def validate_jpeg(path):
    """Return None if ``path`` is a complete JPEG, else a short reason."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return "no image written"
    if size == 0:
        return "empty image file"
    try:
        with open(path, "rb") as fh:
            head = fh.read(3)
            fh.seek(max(0, size - 64))
            tail = fh.read().rstrip(b"\x00")
    except OSError as exc:
        return f"cannot read image: {exc.strerror}"
    if head != JPEG_MAGIC:
        return "not a JPEG (bad magic)"
    if not tail.endswith(JPEG_END):
        return "truncated JPEG (no end marker)"
    return None


def banner(cam, when=None):
    """fswebcam's banner options for ``cam``: its title and the time (``when``: a POSIX time to
    print; None: fswebcam's own, when the capture starts), or ``--no-banner``."""
    if not cam.stamp:
        return ["--no-banner"]
    stamp = STAMP_FORMAT if when is None else _literal(local_stamp(when))
    # --no-info and --no-subtitle: fswebcam's defaults would add its own text to the banner.
    return ["--title", _literal(cam.title or cam.name), "--no-subtitle", "--no-info", "--timestamp", stamp]


def fswebcam_command(cam, full, preview):
    """fswebcam: one frame, saved full-size and then scaled for the preview, both with the banner."""
    w, h = cam.resolution
    pw, ph = cam.preview_resolution
    palette = ["--palette", cam.palette] if cam.palette else []
    return ["fswebcam", "--quiet", *banner(cam), "--device", cam.device, *palette,
            "--resolution", f"{w}x{h}", "--skip", str(cam.skip),
            "--jpeg", str(cam.quality), str(full),
            "--scale", f"{pw}x{ph}", "--jpeg", str(cam.preview_quality), str(preview)]


def rpicam_command(cam, full, preview):
    """rpicam-still (libcamera): one capture of camera module ``index``.

    ``--timeout`` is the warm-up that auto-exposure, white balance and focus
    get before the frame is taken; rpicam-still's default of 5000 ms is far
    too slow for an alarm, so it is ``warmup_ms``. The preview is scaled from
    this same capture afterwards (:func:`_scale_preview`), never a second
    exposure. What else is passed, from rpicam-apps' sources (v1.9):

    * ``--width/--height``: ``resolution``, or when it is not set the
      sensor's 2x2-binned size (:func:`module_size`): rpicam-still picks the
      sensor mode closest to the requested size and aspect ratio, and the ISP
      crops to the requested aspect, so a 16:9 request on a 4:3 sensor (or a
      size near a cropped mode) shows less than the lens sees. Unknown
      sensor: none, i.e. the full sensor resolution (the whole scene too).
    * ``--thumb none``: no EXIF thumbnail (dead weight: seccam sends its own preview).
    * ``--zsl`` on a Pi 5 (:func:`is_pi5`): the still comes from the running
      stream, no stop/reconfigure/restart after the warm-up.
    * focus (Camera Module 3; ignored by modules without a lens motor):
      ``continuous`` runs continuous autofocus through the warm-up;
      ``hyperfocal`` fixes the lens at its tuning's hyperfocal position; a
      number fixes it at that many dioptres (1/metres): nothing to settle.
    * the title as EXIF ``ImageDescription`` and the zone as
      ``OffsetTimeOriginal`` (rpicam-still writes ``DateTimeOriginal`` in
      local time without a zone).

    ``--output`` is the bare file name and the process runs in the output
    directory (see :func:`_start`): rpicam-still treats the name as a printf
    format and copies it into a 128-byte buffer, so a long absolute path would
    be cut short and the image written somewhere else.
    """
    size = cam.resolution or module_size(cam.index)
    cmd = ["rpicam-still", "--nopreview", "--camera", str(cam.index), "--timeout", str(cam.warmup_ms)]
    if size:
        cmd += ["--width", str(size[0]), "--height", str(size[1])]
    cmd += ["--quality", str(cam.quality), "--encoding", "jpg", "--thumb", "none"]
    if is_pi5():
        cmd.append("--zsl")
    if cam.focus == "continuous":
        cmd += ["--autofocus-mode", "continuous"]
    elif cam.focus == "hyperfocal":
        cmd += ["--lens-position", "default"]
    else:
        cmd += ["--lens-position", f"{float(cam.focus):g}"]
    if cam.stamp:
        cmd += ["--exif", f"IFD0.ImageDescription={cam.title or cam.name}",
                "--exif", f"EXIF.OffsetTimeOriginal={_utc_offset()}"]
    return cmd + ["--output", Path(full).name]


def _utc_offset(now=None):
    """The local zone's offset as EXIF writes it: ``+01:00``."""
    text = _dt.datetime.fromtimestamp(time.time() if now is None else now).astimezone().strftime("%z")
    return f"{text[:3]}:{text[3:]}"


def is_pi5(device_tree=None):
    """True on a Raspberry Pi 5 (BCM2712): its device tree's ``compatible`` names the SoC."""
    try:
        compatible = Path(device_tree or DEVICE_TREE, "compatible").read_bytes()
    except OSError:
        return False
    return b"brcm,bcm2712" in compatible


def module_size(index, sysfs=None):
    """The 2x2-binned size (whole field of view) of camera module ``index``, from the V4L2
    sub-devices' names in sysfs; None when unknown (no such sensor, or several modules of
    different kinds, whose order only libcamera knows)."""
    root = Path(sysfs or SYSFS_V4L)
    try:
        names = [(root / entry / "name").read_text().split()[0] for entry in sorted(os.listdir(root))
                 if entry.startswith("v4l-subdev")]
    except (OSError, IndexError):
        return None
    sizes = {SENSORS.get(name) for name in names if name in SENSORS}
    if len(sizes) != 1 or index is None:
        return None
    width, height = sizes.pop()
    return (width // 2 // 2 * 2, height // 2 // 2 * 2)


BACKENDS = {"fswebcam": fswebcam_command, "rpicam": rpicam_command}


def jpeg_size(path):
    """(width, height) of a JPEG from its first SOFn segment, or None."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 16)  # EXIF comes first; the frame header follows within 64 KB
    except OSError:
        return None
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + length
    return None


def preview_size(cam, full):
    """The preview's size: configured, or 320 wide in the captured image's aspect ratio."""
    if cam.preview_resolution:
        return cam.preview_resolution
    width, height = jpeg_size(full) or (4, 3)
    pw = min(320, width)
    return pw, max(2, round(pw * height / width / 2) * 2)


def _scale_preview(cam, full, preview, timeout_s, taken=None):
    """Make the preview from the captured full image with fswebcam's ``file:`` source
    (already a dependency), so a preview never needs a second exposure; it gets the
    banner with ``taken``, the time of the frame. Return None, or why there is no valid preview."""
    pw, ph = preview_size(cam, full)
    cmd = ["fswebcam", "--quiet", *banner(cam, taken), "--device", f"file:{full}",
           "--scale", f"{pw}x{ph}", "--jpeg", str(cam.preview_quality), str(preview)]
    try:
        scaled = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                timeout=timeout_s, check=False)
    except FileNotFoundError:
        return "fswebcam not installed"
    except subprocess.TimeoutExpired:
        return f"scaling timed out after {timeout_s:g} s"
    problem = validate_jpeg(preview)
    if problem is None:
        return None
    detail = _reason(scaled.stderr, scaled.returncode)
    return problem + (f" ({detail})" if detail else "")


_RPICAM_ERROR = re.compile(r"^ERROR: \*\*\* (.*) \*\*\*$")


def _rpicam_reason(stderr):
    """rpicam-still's own error (main() prints ``ERROR: *** what ***``), else libcamera's last
    ERROR/WARN log line; its INFO lines are progress, not reasons."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    for line in reversed(lines):
        match = _RPICAM_ERROR.match(line)
        if match:
            return match.group(1)[:200]
    for line in reversed(lines):
        if " ERROR " in line or " WARN " in line or line.startswith("ERROR"):
            return line[:200]
    return None


def _reason(stderr, returncode):
    lines = [ln.strip() for ln in _ANSI.sub("", stderr.decode("utf-8", "replace")).splitlines() if ln.strip()]
    # Last lines carry the error; the first lines are banners and progress.
    detail = "; ".join(lines[-2:])[:200]
    if returncode:
        return f"exit {returncode}" + (f": {detail}" if detail else "")
    return detail


def _start(cam, outdir):
    full = Path(outdir) / f"{cam.name}.jpg"
    preview = Path(outdir) / f"{cam.name}.preview.jpg"
    for stale in (full, preview):  # new files only: a stale image must never pass validation
        if stale.exists():
            stale.unlink()
    cmd = BACKENDS[cam.backend](cam, full, preview)
    if shutil.which(cmd[0]) is None:
        return None, full, preview, f"{cmd[0]} not installed"
    # rpicam-still gets a bare output name (see rpicam_command), so it runs in the output directory.
    cwd = full.parent if cam.backend == "rpicam" else None
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, cwd=cwd)
    return proc, full, preview, None


def _finish(cam, proc, full, preview, deadline, started, started_wall=None):
    # A process that ended in time is not timed out just because an earlier camera kept us busy.
    remaining = max(0.0, deadline - time.monotonic())
    try:
        _, stderr = proc.communicate(timeout=None if proc.poll() is not None else remaining)
    except subprocess.TimeoutExpired:
        # The whole process group: fswebcam and rpicam-still may have children.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - it exited just now
            pass
        _, stderr = proc.communicate()
        _remove(full, preview)
        cause = failure_cause(cam, stderr) if cam.backend == "fswebcam" else None
        return Result(cam.name, False, error=f"timed out after {cam.timeout_s:g} s" + (f": {cause}" if cause else ""),
                      seconds=time.monotonic() - started)
    if cam.backend == "rpicam":
        # rpicam-still stamps its EXIF date when it encodes the frame, just before it exits.
        taken = time.time()
        problem = _check_rpicam(cam, proc.returncode, stderr, full, preview, deadline, taken)
    else:
        taken = time.time() if started_wall is None else started_wall  # fswebcam's banner: its start
        problem = _check_fswebcam(proc.returncode, stderr, full, preview)
        cause = failure_cause(cam, stderr) if problem else None
        problem = f"{cause}; {problem}" if cause else problem
    if problem:
        _remove(full, preview)
        return Result(cam.name, False, error=problem, seconds=time.monotonic() - started)
    return Result(cam.name, True, full=full, preview=preview, seconds=time.monotonic() - started, taken=taken)


def _check_fswebcam(returncode, stderr, full, preview):
    """None, or why this fswebcam capture failed. fswebcam exits 0 on most failures: the files decide."""
    problem = validate_jpeg(full)
    if problem is None and returncode != 0:
        problem = "failed"
    if problem is None:
        problem = validate_jpeg(preview)
        if problem:
            problem = "preview: " + problem
    if problem is None:
        return None
    detail = _reason(stderr, returncode)
    return problem + (f" ({detail})" if detail else "")


def _check_rpicam(cam, returncode, stderr, full, preview, deadline, taken=None):
    """None, or why this rpicam-still capture failed; on success, make the preview."""
    reason = _rpicam_reason(stderr)
    if returncode != 0:
        return f"rpicam-still: {reason or 'failed'} (exit {returncode})"
    problem = validate_jpeg(full)
    if problem:
        return problem + (f" (rpicam-still: {reason})" if reason else "")
    problem = _scale_preview(cam, full, preview, max(1.0, deadline - time.monotonic()), taken)
    return "preview: " + problem if problem else None


# -- why a camera failed --------------------------------------------------------------------------
# Debian's fswebcam exits 0 when it fails and says why only in its messages, which differ by
# source module and version; so the device node itself is checked first (as the user the
# capture ran as), and fswebcam's messages are read for the errno texts it prints.
_VIDIOC_QUERYCAP = 0x80685600           # _IOR('V', 0, struct v4l2_capability): 104 bytes
_V4L2_CAPABILITY_SIZE = 104
_CAP_VIDEO_CAPTURE = 0x00000001
_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
_CAP_DEVICE_CAPS = 0x80000000
_DETECT = "seccam cameras --detect lists the cameras attached"


def device_node(device):
    """The device node an fswebcam ``device`` names (``/dev/video0``, ``v4l2:/dev/video0``), or
    None for fswebcam's own sources (``test``, ``raw:``, ``file:``)."""
    for prefix in ("v4l2:", "v4l1:"):
        if device.startswith(prefix):
            return device[len(prefix):]
    return device if device.startswith("/") else None


def is_capture_device(capability):
    """Whether a ``struct v4l2_capability`` (bytes) describes a video capture node (not a
    metadata, output or codec node, which a UVC camera or a Pi also has)."""
    caps, device_caps = struct.unpack_from("=II", capability, 84)
    if caps & _CAP_DEVICE_CAPS:
        caps = device_caps
    return bool(caps & (_CAP_VIDEO_CAPTURE | _CAP_VIDEO_CAPTURE_MPLANE))


def _group_of(st):
    try:
        import grp
        return grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        return f"gid {st.st_gid}"


def check_device(path):
    """None if ``path`` can be opened as a video capture device, else why not, in words."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"no such device {path} (unplugged, or it has another number: {_DETECT})"
    except OSError as exc:
        return f"cannot look at {path}: {exc.strerror}"
    if not stat.S_ISCHR(st.st_mode):
        return f"{path} is not a video device (not a device node)"
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return (f"permission denied on {path} (owned by group {_group_of(st)}: the user running seccam "
                    "must be in that group, e.g. sudo usermod -aG video seccam)")
        if exc.errno == errno.EBUSY:
            return f"{path} is busy (another program is using the camera)"
        if exc.errno in (errno.ENODEV, errno.ENXIO, errno.ENOENT):
            return f"no such device {path} (the camera is gone: unplugged, or its driver failed)"
        return f"cannot open {path}: {exc.strerror}"
    try:
        capability = bytearray(_V4L2_CAPABILITY_SIZE)
        try:
            fcntl.ioctl(fd, _VIDIOC_QUERYCAP, capability)
        except OSError:
            return f"{path} is not a video device (no video4linux driver answers)"
        # The two answers of a real V4L2 device (a UVC camera has a capture and a metadata node) need
        # the hardware; is_capture_device is tested on its own with their capability structs.
        if not is_capture_device(bytes(capability)):  # pragma: no cover - needs a V4L2 device, see above
            return f"{path} is not a video capture device (a metadata or codec node; {_DETECT})"
    finally:
        os.close(fd)
    return None  # pragma: no cover - needs a V4L2 capture device, see above


# (what fswebcam prints, lower case; the cause in words), looked for in this order. errno
# texts come from os.strerror: the C library fswebcam prints them with.
_LOG_CAUSES = (
    ("error opening file for output", "cannot write the picture file"),
    (os.strerror(errno.EBUSY).lower(), "the camera is busy (another program is using it)"),
    (os.strerror(errno.EACCES).lower(), "permission denied (the user running seccam must be in group video)"),
    (os.strerror(errno.ENODEV).lower(), "no such device (unplugged, or its driver failed)"),
    (os.strerror(errno.ENOENT).lower(), f"no such device or file ({_DETECT})"),
    (os.strerror(errno.EIO).lower(), "input/output error (a USB camera that resets: its cable or power)"),
    ("timed out", "timeout: the camera delivered no frame"),
    ("timeout", "timeout: the camera delivered no frame"),
    ("not a v4l2 device", "not a video device"),
    ("unable to find a source module", "not a video device"),
)


def _cause_from_log(log_text):
    text = _ANSI.sub("", log_text.decode("utf-8", "replace")).lower()
    for needle, cause in _LOG_CAUSES:
        if needle in text:
            return cause
    return None


def failure_cause(cam, log_text):
    """Why capturing from ``cam`` (fswebcam) failed, in words, or None when neither its
    device node nor fswebcam's messages (``log_text``) tell."""
    node = device_node(cam.device)
    cause = check_device(node) if node else None
    return cause or _cause_from_log(log_text or b"")


def _remove(*paths):
    for path in paths:
        if path.exists():
            path.unlink()


def capture_all(cameras, outdir, while_waiting=None):
    """Capture every camera in parallel into ``outdir``; return one Result per camera, in config order.

    ``while_waiting()`` runs once every capture has started: the time a camera
    takes to expose is free for other start-up work (the capture job loads
    GnuPG then). Whatever it raises is logged and ignored: it must never cost
    an image.
    """
    started = time.monotonic()
    running = []
    for cam in cameras:
        started_wall = time.time()
        try:
            proc, full, preview, error = _start(cam, outdir)
        except OSError as exc:
            proc, full, preview, error = None, None, None, f"cannot start capture: {exc.strerror or exc}"
        running.append((cam, proc, full, preview, error, started_wall))
    if while_waiting is not None:
        try:
            while_waiting()
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("while_waiting=failed error=%r", str(exc))
    results = []
    for cam, proc, full, preview, error, started_wall in running:
        if proc is None:
            results.append(Result(cam.name, False, error=error))
            continue
        results.append(_finish(cam, proc, full, preview, started + cam.timeout_s, started, started_wall))
    return results
