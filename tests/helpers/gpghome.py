"""Short GnuPG homes and throw-away "owner" keys for tests (real gpg, no mocks).

gpg-agent's socket lives in the home and gpg fails ("No agent running") when
the path is longer than about 86 characters, so pytest's ``tmp_path`` is too
long: homes here are ``/tmp/scXXXXXXXX``. Every home's agent is killed in
teardown (``gpgconf --homedir H --kill gpg-agent``) so no agent outlives a test.

* ``new_short_dir()`` / fixture ``short_dir``: a new short directory (e.g. a state_dir);
* ``make_home()`` / fixture ``gpghome``: a new empty GnuPG home (mode 0700);
* ``cleanup(path)``: kill the agents of ``path`` and ``path/gnupg``, remove the tree;
* ``OwnerKey(address)``: a person's key made with the gpg command line in its
  own home (as Delta Chat would hold it elsewhere): ``fpr``, ``export()``,
  ``armored()``, ``encrypt_sign(data, to_keydata)``, ``close()``.

Import fixtures into a test module with ``from helpers.gpghome import gpghome, short_dir``.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

_PARAMS = """\
Key-Type: EDDSA
Key-Curve: ed25519
Key-Usage: sign
{subkey}Name-Email: {address}
Expire-Date: {expire}
%no-protection
%commit
"""


def new_short_dir(prefix="sc"):
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o700)
    return path


make_home = new_short_dir


def kill_agent(home):
    if Path(home).is_dir():
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20, check=False)


def cleanup(path):
    path = Path(path)
    for home in (path, path / "gnupg"):
        kill_agent(home)
    shutil.rmtree(path, ignore_errors=True)


def gpg(home, *args, input=None):
    """Run gpg in ``home``; return stdout bytes (raise with stderr on failure)."""
    proc = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--no-tty", *args], input=input,
                          capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


_SUBKEY = "Subkey-Type: ECDH\nSubkey-Curve: cv25519\nSubkey-Usage: encrypt\n"


class OwnerKey:
    """A key pair in its own short home. ``expire`` as in gpg batch files (``0`` = never),
    ``encrypt=False`` makes a signing-only key, ``faked_time`` (``20200101T000000``)
    creates it in the past (with ``expire="1d"``: an expired key)."""

    def __init__(self, address, expire="0", encrypt=True, faked_time=None):
        self.address = address
        self.home = make_home("so")
        params = _PARAMS.format(address=address, expire=expire, subkey=_SUBKEY if encrypt else "")
        extra = ["--faked-system-time", faked_time] if faked_time else []
        out = gpg(self.home, *extra, "--status-fd", "1", "--gen-key", input=params.encode())
        self.fpr = next(line.split()[-1] for line in out.decode().splitlines() if "KEY_CREATED" in line)

    def export(self, minimal=True):
        args = ["--export-options", "export-minimal"] if minimal else []
        return gpg(self.home, *args, "--export", self.fpr)

    def armored(self):
        return gpg(self.home, "--armor", "--export", self.fpr)

    def secret_armored(self):
        return gpg(self.home, "--armor", "--export-secret-keys", self.fpr)

    def encrypt_sign(self, data, to_keydata, sign=True):
        """Encrypt ``data`` to the key in ``to_keydata`` (signed by this key unless sign=False)."""
        gpg(self.home, "--import", input=to_keydata)
        fprs = [line.split(":")[9] for line in gpg(self.home, "--with-colons", "--show-keys",
                                                   input=to_keydata).decode().splitlines()
                if line.startswith("fpr:")]
        args = ["--trust-model", "always", "--armor", "--recipient", fprs[0], "--encrypt"]
        if sign:
            args = ["--local-user", self.fpr, "--sign", *args]
        return gpg(self.home, *args, input=data)

    def close(self):
        cleanup(self.home)


@pytest.fixture
def gpghome():
    home = make_home()
    try:
        yield home
    finally:
        cleanup(home)


@pytest.fixture
def short_dir():
    path = new_short_dir()
    try:
        yield path
    finally:
        cleanup(path)
