"""End to end: the README's first-time setup, as a newcomer does it, against the stand-in chatmail
relay (tests/helpers/relay.py) and a real Delta Chat core (2.65) as the owner's phone.

1. ``./install.sh --root R`` (what ``sudo ./install.sh`` does that a test machine may do: code,
   byte-compilation, the configuration from docs/example.toml, cron file, units; apt, the user
   and systemd need the real system);
2. the installed configuration gets this machine's spool, state and camera (fswebcam's test
   source): what is different on a Pi, not a step of the owner's;
3. ``seccam setup --yes --relay RELAY --ca-file CA`` with the installed seccam (the README's
   ``sudo seccam setup``; the stand-in relay's name and test CA are the only additions);
4. the owner's Delta Chat scans the printed invite (``secure_join(link)``);
5. the welcome pictures and the test alarm arrive with the padlock, in an accepted chat.

Commands typed: ``git clone`` (before), ``install.sh``, ``seccam setup``, and one scan. The wall
times are printed and recorded for docs/setup.md (``sudo ./tests/onboarding`` writes them), with,
measured in the same run, the same onboarding done the previous way (account written into the
configuration, ``keys init``, ``invite --wait``, ``trigger`` and the jobs) as the baseline.

A second test replaces the account of a camera whose owner has joined, and measures what
Delta Chat does with the camera's new address (the warning ``seccam account new --replace``
prints says what is measured here).
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import CAMERAS_OK, ROOT, run_ok, write_config
from helpers import figures
from helpers.coverage_env import with_coverage
from helpers.deltachat import camera_messages
from helpers.setupkit import adapt_to_this_machine, configured_address, relay, seccam  # noqa: F401 - fixture
from helpers.shell import run_bash
from test_e2e_invite import finish

pytest.importorskip("deltachat_rpc_client")

TIMEOUT = 90


def start(argv, env=None):
    full = with_coverage(dict(os.environ, SECCAM_NO_SYSLOG="1", **(env or {})))
    full.pop("SECCAM_CONFIG", None)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full)


def read_link(proc, deadline_s=60):
    """Read the process's output up to the invite link; return (link, output so far)."""
    seen = []
    deadline = time.monotonic() + deadline_s
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("https://i.delta.chat/#"):
            return line.strip(), "".join(seen)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"no invite link:\n{''.join(seen)}\n{proc.stderr.read()}")


def first_picture_and_alarm(owner, cam, t0, cameras=1):
    """Seconds from t0 to the first padlocked picture (the welcome) and to the test alarm's last
    picture (a preview and a full picture per camera)."""
    seen = set()
    welcome = camera_messages(owner, cam, 1, seen, TIMEOUT, lambda i: i.view_type == "Image", only_n=True)
    t_first = time.monotonic() - t0
    rest = camera_messages(owner, cam, 3 * cameras - 1, seen, TIMEOUT, lambda i: i.view_type == "Image",
                           only_n=True)
    t_alarm = time.monotonic() - t0
    return welcome + rest, t_first, t_alarm


def test_first_time_setup_from_install_to_the_padlocked_test_alarm(short_tmp, relay, dc_owner, mailserver,
                                                                   dc_account_factory):
    stage = short_tmp / "root"
    stage.mkdir()
    t0 = time.monotonic()
    install = run_bash("install.sh", "--root", stage, "--no-demo", timeout=300)
    assert install.returncode == 0, install.stderr
    t_install = time.monotonic() - t0
    assert "on the device: sudo seccam setup" in install.stdout
    cfg = stage / "etc/seccam/seccam.toml"
    adapt_to_this_machine(cfg, short_tmp)
    installed = stage / "opt/seccam/bin/seccam"

    t1 = time.monotonic()
    proc = start([sys.executable, str(installed), "--config", str(cfg), "setup", "--yes",
                  "--relay", relay.name, "--ca-file", relay.cafile, "--wait", str(TIMEOUT)])
    link, shown = read_link(proc)
    t_qr = time.monotonic() - t1
    assert "\u2584" in shown or "\u2580" in shown or "\u2588" in shown  # the QR code, drawn on the terminal
    cam = configured_address(cfg)
    mailserver.add_camera_address(cam)
    dc_owner.secure_join(link)                                          # the scan
    dc_owner.wait_for_securejoin_joined(timeout=TIMEOUT)
    t_joined = time.monotonic() - t1
    messages, t_first, t_alarm = first_picture_and_alarm(dc_owner, cam, t1)
    code, out, err = finish(proc)
    assert code == 0, f"{out}\n{err}"
    assert f"joined: {dc_owner.addr}" in out and "[4/4] A test alarm" in out and "sent in " in out

    assert all(m.show_padlock and m.view_type == "Image" and not m.is_contact_request for m in messages)
    assert all(m.sender_is_key_contact for m in messages) and len({m.chat_id for m in messages}) == 1
    assert len(messages) == 3  # the example configuration has one camera: welcome, preview, full picture
    assert "joined by invite" in messages[0].text and "Motion detected" in messages[1].text
    contact = dc_owner.account.get_contact_by_addr(cam).get_snapshot()
    assert contact.is_key_contact and not contact.is_blocked
    again = seccam("setup", "--yes", config=cfg)
    assert again.returncode == 0 and again.stdout.count("  done: ") == 3 and "(kept)" in again.stdout

    baseline = previous_way(short_tmp, mailserver, relay, dc_account_factory(name="Baseline owner"))
    row = {"commands": 2, "scans": 1, "install_s": round(t_install, 1), "qr_s": round(t_qr, 1),
           "joined_s": round(t_joined, 1), "first_picture_s": round(t_first, 1),
           "test_alarm_s": round(t_alarm, 1), "total_s": round(t_install + t_alarm, 1),
           "baseline_commands": baseline["commands"], "baseline_s": round(baseline["alarm_s"], 1),
           "ratio": round(t_alarm / baseline["alarm_s"], 2)}
    figures.record("onboarding", **row)
    print(f"\n[onboarding] commands: install.sh + seccam setup + 1 scan; install.sh (staged) {t_install:.1f} s; "
          f"setup to QR {t_qr:.1f} s, joined {t_joined:.1f} s, first padlocked picture {t_first:.1f} s, "
          f"test alarm {t_alarm:.1f} s; install to test alarm {t_install + t_alarm:.1f} s. "
          f"Previous way: {baseline['commands']} commands, {baseline['alarm_s']:.1f} s "
          f"(setup/previous = {row['ratio']})")


def previous_way(short_tmp, mailserver, relay, owner):
    """The same onboarding with the commands of the previous README (the baseline): the account
    written into the configuration by hand (a relay account, made here by the stand-in), then
    ``keys init``, ``invite --wait`` + scan, ``trigger``, and the jobs the path units start."""
    root = short_tmp / "baseline"
    root.mkdir()
    addr, password = relay.new_credentials()
    mailserver.create_account(addr, password)
    mailserver.add_camera_address(addr)
    secret = root / "password"  # as docs/setup.md said: the password in a file of its own
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    account = "\n".join(f'password_file = "{secret}"' if line.startswith("password = ") else line
                         for line in mailserver.account_toml(addr, "x").splitlines())
    cfg = write_config(root, account + "\n", cameras=CAMERAS_OK)
    t0 = time.monotonic()
    run_ok(_run, "bin/seccam", "keys", "init", config=cfg)
    proc = start([sys.executable, str(ROOT / "bin/seccam"), "--config", str(cfg), "invite", "--wait",
                  "--timeout", str(TIMEOUT)])
    link, _ = read_link(proc)
    owner.secure_join(link)
    owner.wait_for_securejoin_joined(timeout=TIMEOUT)
    seen = set()
    camera_messages(owner, addr, 2, seen, TIMEOUT, lambda i: i.view_type == "Image", only_n=True)
    code, out, err = finish(proc)
    assert code == 0, err
    for step in (("bin/seccam", "trigger", "-q"), ("jobs/capture",), ("jobs/send",)):
        run_ok(_run, *step, config=cfg)
    camera_messages(owner, addr, 4, seen, TIMEOUT, lambda i: i.view_type == "Image", only_n=True)
    alarm_s = time.monotonic() - t0
    subprocess.run(["gpgconf", "--homedir", str(root / "state" / "gnupg"), "--kill", "all"], capture_output=True)
    # clone, install, an editor for the configuration, the password file (2), keys init, invite, trigger
    return {"commands": 8, "alarm_s": alarm_s}


def _run(entry, *args, config=None, timeout=120):
    from conftest import run_entry
    return run_entry(entry, *args, config=config, timeout=timeout)


def test_a_new_account_for_a_joined_camera_keeps_the_owners_chat(short_tmp, relay, dc_owner, mailserver):
    """What Delta Chat 2.65 does when the camera's address changes and its key stays: the next
    message from the new address lands in the same, accepted chat, whose contact now has the new
    address; a reply goes to the new address."""
    cfg = write_config(short_tmp, "", cameras=CAMERAS_OK)
    proc = start([sys.executable, str(ROOT / "bin/seccam"), "--config", str(cfg), "setup", "--yes", "--no-qr",
                  "--relay", relay.name, "--ca-file", relay.cafile, "--wait", str(TIMEOUT), "--no-test-alarm"])
    link, _ = read_link(proc)
    old = configured_address(cfg)
    mailserver.add_camera_address(old)
    dc_owner.secure_join(link)
    dc_owner.wait_for_securejoin_joined(timeout=TIMEOUT)  # the handshake's own messages come and go first
    seen = set()
    welcome = camera_messages(dc_owner, old, 2, seen, TIMEOUT, only_n=True)
    assert finish(proc)[0] == 0
    chat_id = welcome[0].chat_id

    proc = seccam("account", "new", relay.name, "--ca-file", relay.cafile, "--replace", "--yes", config=cfg)
    assert proc.returncode == 0 and f"this camera has recipients ({dc_owner.addr})" in proc.stdout
    new = configured_address(cfg)
    assert new != old
    mailserver.add_camera_address(new)
    for step in (("bin/seccam", "trigger", "-q"), ("jobs/capture",), ("jobs/send",)):
        run_ok(_run, *step, config=cfg)
    alarm = camera_messages(dc_owner, new, 4, seen, TIMEOUT, only_n=True)
    assert all(m.show_padlock and m.chat_id == chat_id and not m.is_contact_request for m in alarm)
    assert {m.sender_fingerprint for m in alarm} == {welcome[0].sender_fingerprint}
    chat = dc_owner.account.get_chat_by_id(chat_id)
    assert [c.get_snapshot().address for c in chat.get_contacts()] == [new]
    keys = json.loads(seccam("keys", "list", "--json", config=cfg).stdout)
    assert re.fullmatch(r"[0-9A-F]{40}", keys["camera"]["fingerprint"])
