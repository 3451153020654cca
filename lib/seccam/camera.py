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
  see :func:`rpicam_command`.
"""

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclasses.dataclass
class Result:
    camera: str
    ok: bool
    full: Path | None = None
    preview: Path | None = None
    error: str | None = None
    seconds: float = 0.0

    def as_meta(self):
        """The camera's entry in an image set's meta.json (file names relative to the set)."""
        if not self.ok:
            return {"name": self.camera, "ok": False, "error": self.error, "seconds": round(self.seconds, 3)}
        return {"name": self.camera, "ok": True, "full": self.full.name, "preview": self.preview.name,
                "bytes": self.full.stat().st_size, "preview_bytes": self.preview.stat().st_size,
                "captured": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                "seconds": round(self.seconds, 3)}


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


def fswebcam_command(cam, full, preview):
    """fswebcam: one frame, saved full-size and then scaled for the preview."""
    w, h = cam.resolution
    pw, ph = cam.preview_resolution
    palette = ["--palette", cam.palette] if cam.palette else []
    return ["fswebcam", "--quiet", "--no-banner", "--device", cam.device, *palette,
            "--resolution", f"{w}x{h}", "--skip", str(cam.skip),
            "--jpeg", str(cam.quality), str(full),
            "--scale", f"{pw}x{ph}", "--jpeg", str(cam.preview_quality), str(preview)]


def rpicam_command(cam, full, preview):
    """rpicam-still (libcamera): one capture of camera module ``index``.

    ``--timeout`` is the warm-up that auto-exposure and white balance get
    before the frame is taken; rpicam-still's default of 5000 ms is far too
    slow for an alarm, so it is ``warmup_ms``. The preview is scaled from this
    same capture afterwards (:func:`_scale_preview`), never a second exposure.
    """
    w, h = cam.resolution
    return ["rpicam-still", "--nopreview", "--camera", str(cam.index),
            "--timeout", str(cam.warmup_ms), "--width", str(w), "--height", str(h),
            "--quality", str(cam.quality), "--encoding", "jpg", "--output", str(full)]


BACKENDS = {"fswebcam": fswebcam_command, "rpicam": rpicam_command}


def _scale_preview(cam, full, preview, timeout_s):
    """Make the preview from the captured full image with fswebcam's ``file:`` source
    (already a dependency), so a preview never needs a second exposure."""
    pw, ph = cam.preview_resolution
    cmd = ["fswebcam", "--quiet", "--no-banner", "--device", f"file:{full}",
           "--scale", f"{pw}x{ph}", "--jpeg", str(cam.preview_quality), str(preview)]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=timeout_s, check=False)


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
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    return proc, full, preview, None


def _finish(cam, proc, full, preview, deadline, started):
    try:
        _, stderr = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        # The whole process group: fswebcam and rpicam-still may have children.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - it exited just now
            pass
        proc.communicate()
        return Result(cam.name, False, error=f"timed out after {cam.timeout_s:g} s",
                      seconds=time.monotonic() - started)
    problem = validate_jpeg(full)
    if problem is None and cam.backend == "rpicam" and proc.returncode == 0:
        scaled = _scale_preview(cam, full, preview, max(1.0, deadline - time.monotonic()))
        if validate_jpeg(preview):
            problem = "preview: " + (_reason(scaled.stderr, scaled.returncode) or "scaling failed")
    if problem is None and proc.returncode != 0:
        problem = "failed"
    if problem is None:
        problem = validate_jpeg(preview)
        if problem:
            problem = "preview: " + problem
    if problem:
        detail = _reason(stderr, proc.returncode)
        for path in (full, preview):
            if path.exists():
                path.unlink()
        return Result(cam.name, False, error=f"{problem}" + (f" ({detail})" if detail else ""),
                      seconds=time.monotonic() - started)
    return Result(cam.name, True, full=full, preview=preview, seconds=time.monotonic() - started)


def capture_all(cameras, outdir):
    """Capture every camera in parallel into ``outdir``; return one Result per camera, in config order."""
    started = time.monotonic()
    running = []
    for cam in cameras:
        try:
            proc, full, preview, error = _start(cam, outdir)
        except OSError as exc:
            proc, full, preview, error = None, None, None, f"cannot start capture: {exc.strerror or exc}"
        running.append((cam, proc, full, preview, error))
    results = []
    for cam, proc, full, preview, error in running:
        if proc is None:
            results.append(Result(cam.name, False, error=error))
            continue
        results.append(_finish(cam, proc, full, preview, started + cam.timeout_s, started))
    return results
