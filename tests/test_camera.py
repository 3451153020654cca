"""Capturing with the real fswebcam: validation, parallelism, timeouts, failures reported by camera."""

import datetime
import os
import shutil
import time
from pathlib import Path

import pytest

from seccam import camera, config

BASE = 'spool_dir = "/tmp/s"\nstate_dir = "/tmp/t"\n'


def cams(text):
    return config.parse(BASE + text).cameras


def test_validate_jpeg(tmp_path):
    good = tmp_path / "g.jpg"
    good.write_bytes(b"\xff\xd8\xff\xe0" + b"x" * 100 + b"\xff\xd9\x00\x00")
    assert camera.validate_jpeg(good) is None
    cases = {"missing.jpg": None, "empty.jpg": b"", "png.jpg": b"\x89PNG\r\n" + b"x" * 10,
             "cut.jpg": b"\xff\xd8\xff\xe0" + b"x" * 100}
    reasons = {}
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        reasons[name] = camera.validate_jpeg(tmp_path / name)
    assert reasons == {"missing.jpg": "no image written", "empty.jpg": "empty image file",
                       "png.jpg": "not a JPEG (bad magic)", "cut.jpg": "truncated JPEG (no end marker)"}
    assert camera.validate_jpeg(tmp_path).startswith("cannot read image")


def test_one_capture_gives_full_and_preview(tmp_path):
    [r] = camera.capture_all(cams('[[camera]]\nname = "a"\ndevice = "test"\nresolution = "640x480"\n'
                                  'preview_resolution = "160x120"\n'), tmp_path)
    assert r.ok and r.full.name == "a.jpg" and r.preview.name == "a.preview.jpg"
    # JPEG SOF0 carries height and width; check the preview really is scaled.
    data = r.preview.read_bytes()
    sof = data.index(b"\xff\xc0")
    assert (int.from_bytes(data[sof + 5:sof + 7], "big"), int.from_bytes(data[sof + 7:sof + 9], "big")) == (120, 160)
    meta = r.as_meta()
    assert meta["ok"] and meta["bytes"] == r.full.stat().st_size and meta["preview"] == "a.preview.jpg"


def test_stale_file_from_an_earlier_capture_never_passes(tmp_path):
    """Debian's fswebcam exits 0 and leaves an old output untouched when the capture fails."""
    stale = tmp_path / "gone.jpg"
    stale.write_bytes(b"\xff\xd8\xff" + b"old" + b"\xff\xd9")
    (tmp_path / "gone.preview.jpg").write_bytes(stale.read_bytes())
    [r] = camera.capture_all(cams('[[camera]]\nname = "gone"\ndevice = "/dev/video-none"\n'), tmp_path)
    assert not r.ok and r.error.startswith("no such device /dev/video-none (unplugged, or it has another number")
    assert "no image written (stat: No such file or directory)" in r.error
    assert not stale.exists()


def test_broken_camera_does_not_block_the_others(tmp_path):
    results = camera.capture_all(cams(
        '[[camera]]\nname = "a"\ndevice = "test"\n'
        '[[camera]]\nname = "b"\ndevice = "/dev/video-none"\n'
        '[[camera]]\nname = "c"\ndevice = "raw:/dev/urandom"\npalette = "YUYV"\nresolution = "720x540"\n'), tmp_path)
    assert [(r.camera, r.ok) for r in results] == [("a", True), ("b", False), ("c", True)]
    assert results[2].full.stat().st_size > 200_000  # a realistic noise JPEG


def test_hanging_camera_times_out_while_others_finish(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening a FIFO without a writer blocks fswebcam for ever
    started = time.monotonic()
    results = camera.capture_all(cams(
        f'[[camera]]\nname = "hang"\ndevice = "raw:{fifo}"\npalette = "RGB24"\nresolution = "320x240"\n'
        'timeout_s = 1.5\n[[camera]]\nname = "ok"\ndevice = "test"\n'), tmp_path)
    elapsed = time.monotonic() - started
    assert [(r.camera, r.ok) for r in results] == [("hang", False), ("ok", True)]
    assert results[0].error == "timed out after 1.5 s"
    assert elapsed < 10


def test_cameras_run_in_parallel(tmp_path):
    """Four hanging cameras with a 1 s timeout finish in about 1 s, not 4."""
    text = ""
    for i in range(4):
        fifo = tmp_path / f"f{i}"
        os.mkfifo(fifo)
        text += f'[[camera]]\nname = "c{i}"\ndevice = "raw:{fifo}"\npalette = "RGB24"\ntimeout_s = 1\n'
    started = time.monotonic()
    results = camera.capture_all(cams(text), tmp_path)
    assert not any(r.ok for r in results)
    assert time.monotonic() - started < 3.5


def test_missing_program_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    [r] = camera.capture_all(cams('[[camera]]\nname = "a"\ndevice = "test"\n'), tmp_path)
    assert (r.ok, r.error) == (False, "fswebcam not installed")
    assert r.as_meta() == {"name": "a", "ok": False, "error": "fswebcam not installed", "seconds": 0.0}


def test_unwritable_output_is_a_failure_not_a_crash(tmp_path):
    [r] = camera.capture_all(cams('[[camera]]\nname = "a"\ndevice = "test"\n'), tmp_path / "no" / "dir")
    assert not r.ok and "no image written" in r.error


def test_fswebcam_command_line():
    [cam] = cams('[[camera]]\nname = "a"\ndevice = "v4l2:/dev/video1"\nresolution = "1920x1080"\nskip = 10\n'
                 'palette = "MJPEG"\nquality = 90\n')
    cmd = camera.fswebcam_command(cam, "F.jpg", "P.jpg")
    # The banner: the camera's name and fswebcam's own time, with the zone; nothing of fswebcam's own text.
    assert cmd[:9] == ["fswebcam", "--quiet", "--title", "a", "--no-subtitle", "--no-info",
                       "--timestamp", "%Y-%m-%d %H:%M:%S %Z", "--device"]
    assert cmd[cmd.index("--device") + 1] == "v4l2:/dev/video1" and cmd[cmd.index("--palette") + 1] == "MJPEG"
    assert cmd.index("F.jpg") < cmd.index("--scale") < cmd.index("P.jpg")
    assert cmd[cmd.index("--skip") + 1] == "10" and cmd[cmd.index("--resolution") + 1] == "1920x1080"


@pytest.mark.parametrize("stderr, rc, expected", [
    (b"\x1b[31mstat: No such file\x1b[0m\n", 0, "stat: No such file"),
    (b"", 3, "exit 3"),
    (b"a\nb\nc\n", 1, "exit 1: b; c"),
])
def test_reason_text(stderr, rc, expected):
    assert camera._reason(stderr, rc) == expected


def test_while_waiting_runs_once_while_the_cameras_expose_and_its_failure_costs_no_image(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    seen = []

    def busy():
        # the hanging camera's process is running at this moment: work here overlaps the capture
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        raise RuntimeError("gpg is broken")
    results = camera.capture_all(cams(
        f'[[camera]]\nname = "slow"\ndevice = "raw:{fifo}"\npalette = "RGB24"\ntimeout_s = 1\n'
        '[[camera]]\nname = "ok"\ndevice = "test"\n'), tmp_path, while_waiting=busy)
    assert len(seen) == 1
    assert [(r.camera, r.ok) for r in results] == [("slow", False), ("ok", True)]


def _jpeg(path):
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"x" * 100 + b"\xff\xd9")
    return path


def test_fswebcam_exiting_with_an_error_fails_the_capture_even_with_a_valid_image(tmp_path):
    full, preview = _jpeg(tmp_path / "a.jpg"), _jpeg(tmp_path / "a.preview.jpg")
    assert camera._check_fswebcam(1, b"Error selecting input 0\n", full, preview) \
        == "failed (exit 1: Error selecting input 0)"


def test_a_missing_preview_fails_the_capture_and_says_it_was_the_preview(tmp_path):
    full = _jpeg(tmp_path / "a.jpg")
    assert camera._check_fswebcam(0, b"", full, tmp_path / "a.preview.jpg") == "preview: no image written"


def test_pictures_carry_the_camera_title_and_the_time_and_meta_says_when(tmp_path):
    """Evidence: the banner is drawn (the picture differs from a plain one only in its bottom rows), and
    meta.json's capture time is fswebcam's banner time: when it started the capture."""
    plain_cam, titled_cam = cams('[[camera]]\nname = "a"\ndevice = "test"\nresolution = "320x240"\n'
                                 'stamp = false\n[[camera]]\nname = "b"\ndevice = "test"\nresolution = "320x240"\n'
                                 'title = "Front door 50%"\n')
    before = time.time()
    plain, titled = camera.capture_all([plain_cam, titled_cam], tmp_path)
    assert plain.ok and titled.ok
    assert camera.jpeg_size(titled.full) == camera.jpeg_size(plain.full) == (320, 240)
    assert titled.full.read_bytes() != plain.full.read_bytes()
    cmd = camera.fswebcam_command(titled_cam, "F", "P")
    assert cmd[cmd.index("--title") + 1] == "Front door 50%%"  # fswebcam runs the title through strftime
    assert before <= titled.taken <= time.time()
    assert titled.as_meta()["captured"] == datetime.datetime.fromtimestamp(
        titled.taken, datetime.timezone.utc).isoformat()


def test_jpeg_size_reads_the_frame_header_after_other_segments(tmp_path):
    [r] = camera.capture_all(cams('[[camera]]\nname = "a"\ndevice = "test"\nresolution = "320x240"\n'), tmp_path)
    assert camera.jpeg_size(r.full) == (320, 240)
    assert camera.jpeg_size(tmp_path / "missing.jpg") is None
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\x00\x00")
    assert camera.jpeg_size(tmp_path / "junk.jpg") is None


# -- every failure names its cause -----------------------------------------------------------------
NOBODY = 65534


def capture_as_nobody(tmp_path, device):
    """One capture from ``device`` as an unprivileged user (as the service user runs it); its error."""
    import json
    import subprocess
    import sys
    from helpers.coverage_env import with_coverage
    from helpers.readable import coverage_env_for, repo_for_others
    import tempfile
    out = Path(tempfile.mkdtemp(prefix="sccam", dir="/tmp"))  # pytest's tmp_path is closed to other users
    os.chown(out, NOBODY, NOBODY)
    code = ("import json, sys; from seccam import camera, config; "
            "cams = config.parse(sys.argv[1]).cameras; "
            "print(json.dumps([r.error for r in camera.capture_all(cams, sys.argv[2])]))")
    text = BASE + f'[[camera]]\nname = "a"\ndevice = "{device}"\ntimeout_s = 10\n'
    repo = repo_for_others()  # a clone in a 0700 home is closed to nobody: a readable copy of it
    env = coverage_env_for(repo, with_coverage({**os.environ, "PYTHONPATH": str(repo / "lib")}))
    proc = subprocess.run([sys.executable, "-c", code, text, str(out)], env=env, user=NOBODY, group=NOBODY,
                          extra_groups=[], capture_output=True, text=True, timeout=60, cwd="/")
    shutil.rmtree(out)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)[0]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="makes device nodes and switches users")


def test_a_file_that_is_not_a_device_node_is_named_as_such(tmp_path):
    not_a_device = tmp_path / "video0"
    not_a_device.write_bytes(b"plain file")
    [r] = camera.capture_all(cams(f'[[camera]]\nname = "a"\ndevice = "{not_a_device}"\n'), tmp_path)
    assert not r.ok and r.error.startswith(f"{not_a_device} is not a video device (not a device node)")


def test_a_device_without_a_video_driver_is_not_a_video_device(tmp_path):
    [r] = camera.capture_all(cams('[[camera]]\nname = "a"\ndevice = "v4l2:/dev/null"\n'), tmp_path)
    assert not r.ok and r.error.startswith("/dev/null is not a video device (no video4linux driver answers)")


@needs_root
def test_a_device_the_service_user_may_not_open_is_permission_denied(tmp_path):
    node = Path("/tmp") / f"scvideo{os.getpid()}"
    os.mknod(node, 0o600 | __import__("stat").S_IFCHR, os.makedev(1, 3))
    try:
        error = capture_as_nobody(tmp_path, node)
    finally:
        node.unlink()
    assert error.startswith(f"permission denied on {node} (owned by group root: the user running seccam must be "
                            "in that group")


@needs_root
def test_a_device_another_program_holds_exclusively_is_busy(tmp_path):
    import fcntl
    import pty
    import termios
    master, slave = pty.openpty()
    try:
        name = os.ttyname(slave)
        os.chmod(name, 0o666)
        fcntl.ioctl(slave, termios.TIOCEXCL)  # a second open (by anyone but root) is refused with EBUSY
        error = capture_as_nobody(tmp_path, name)
        assert error.startswith(f"{name} is busy (another program is using the camera)")
    finally:
        os.close(slave)
        os.close(master)


def _capability(caps, device_caps=0):
    import struct
    return b"uvcvideo".ljust(16, b"\0") + b"cam".ljust(32, b"\0") + b"usb".ljust(32, b"\0") + \
        struct.pack("=IIII", 0x60000, caps, device_caps, 0) + bytes(8)


def test_metadata_and_codec_nodes_are_not_capture_devices():
    assert len(_capability(0)) == 104
    assert camera.is_capture_device(_capability(0x84A00001, 0x04200001))          # a UVC camera's capture node
    assert not camera.is_capture_device(_capability(0x84A00001, 0x04A00000))      # its metadata node
    assert camera.is_capture_device(_capability(0x00001000))                      # multi-planar, no device caps
    assert not camera.is_capture_device(_capability(0x00000002))                  # video output only


@pytest.mark.parametrize("log, cause", [
    (b"--- Opening /dev/video0...\nTrying source module v4l2...\n/dev/video0 opened.\n"
     b"\x1b[31mVIDIOC_S_FMT: Device or resource busy\x1b[0m\n", "the camera is busy"),
    (b"Error opening device: /dev/video0\nopen: Permission denied\n", "permission denied"),
    (b"Error opening device: /dev/video0\nopen: No such device\n", "no such device (unplugged"),
    (b"Timed out waiting for frame!\nNo frames captured.\n", "timeout: the camera delivered no frame"),
    (b"VIDIOC_DQBUF: Input/output error\n", "input/output error"),
    (b"/dev/null: Not a V4L2 device?\nUnable to find a source module that can read /dev/null.\n",
     "not a video device"),
    (b"Error opening file for output: /x/y.jpg\nfopen: No such file or directory\n",
     "cannot write the picture file"),
    (b"something nobody has seen before\n", None),
])
def test_fswebcams_messages_name_the_cause(log, cause):
    [cam] = cams('[[camera]]\nname = "a"\ndevice = "test"\n')
    found = camera.failure_cause(cam, log)
    assert (found is None) if cause is None else found.startswith(cause)


def test_a_missing_raw_source_is_named_from_fswebcams_messages(tmp_path):
    [r] = camera.capture_all(cams(f'[[camera]]\nname = "a"\ndevice = "raw:{tmp_path}/none"\n'
                                  'palette = "RGB24"\nresolution = "320x240"\n'), tmp_path)
    assert not r.ok and r.error.startswith("no such device or file (seccam cameras --detect lists")


def test_what_keeps_a_device_from_opening_is_named():
    import fcntl
    import struct
    import subprocess
    import sys
    import termios
    from helpers.coverage_env import REPO, with_coverage
    assert camera.check_device("/etc/hostname/video0") == "cannot look at /etc/hostname/video0: Not a directory"
    # /dev/tty without a controlling terminal: the kernel says ENXIO, as for an unplugged camera.
    code = "import sys; from seccam import camera; print(camera.check_device('/dev/tty'))"
    proc = subprocess.run([sys.executable, "-c", code], env=with_coverage({**os.environ, "PYTHONPATH": str(REPO / "lib")}),
                          capture_output=True, text=True, timeout=60, start_new_session=True)
    assert proc.stdout.startswith("no such device /dev/tty (the camera is gone"), proc.stderr
    # A pseudo-terminal whose master has not unlocked it: any other error is named with its own words.
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
    try:
        tiocgptn = getattr(termios, "TIOCGPTN", 0x80045430)  # _IOR("T", 0x30, unsigned int) on Linux
        number = struct.unpack("I", fcntl.ioctl(master, tiocgptn, b"\0" * 4))[0]
        assert camera.check_device(f"/dev/pts/{number}") == f"cannot open /dev/pts/{number}: Input/output error"
    finally:
        os.close(master)


def test_a_group_without_a_name_is_named_by_its_number():
    class St:
        st_gid = 4321
    assert camera._group_of(St) == "gid 4321"
