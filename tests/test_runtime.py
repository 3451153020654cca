"""seccam.runtime: one line on stderr for every failure, exit codes, and log records to the journal."""

import io
import logging
import os
import socket

import pytest

from seccam import runtime
from seccam.errors import EX_SOFTWARE, EX_TEMPFAIL


@pytest.fixture
def fresh_logging(monkeypatch):
    monkeypatch.delenv("DEBUG", raising=False)
    monkeypatch.delenv("SECCAM_NO_SYSLOG", raising=False)
    monkeypatch.delenv("SECCAM_LOG_STDERR", raising=False)
    yield
    logging.getLogger("seccam").handlers.clear()


def test_ctrl_c_is_one_line_and_a_temporary_failure(capsys, fresh_logging):
    def interrupted(argv):
        raise KeyboardInterrupt
    assert runtime.run("seccam", interrupted) == EX_TEMPFAIL
    assert capsys.readouterr().err == "seccam: interrupted\n"


def test_a_bug_is_one_line_on_stderr_and_the_traceback_goes_to_the_log(fresh_logging):
    stream = io.StringIO()
    runtime.setup_logging("seccam", stream=stream, syslog_socket="/nonexistent")
    err = io.StringIO()

    def buggy(argv):
        return {}["missing"]
    import contextlib
    with contextlib.redirect_stderr(err):
        assert runtime.run("seccam", buggy) == EX_SOFTWARE
    assert err.getvalue() == ("seccam: error: unexpected KeyError: 'missing' "
                              "(details in the journal; DEBUG=1 shows them)\n")
    assert "Traceback" not in err.getvalue()


def test_debug_shows_the_traceback_of_a_bug(monkeypatch, fresh_logging):
    monkeypatch.setenv("DEBUG", "1")

    def buggy(argv):
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        runtime.run("seccam", buggy)


def test_records_go_to_the_syslog_socket_with_ident_module_and_traceback(short_tmp, fresh_logging):
    path = str(short_tmp / "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    try:
        log = runtime.setup_logging("capture", stream=io.StringIO(), syslog_socket=path)
        try:
            raise OSError("disk gone")
        except OSError:
            logging.getLogger("seccam.spool").exception("state=failed")
        record = server.recv(65536).decode()
    finally:
        server.close()
        for handler in log.handlers:
            handler.close()
    # <daemon.err>seccam[PID]: PROG MODULE: message, then the traceback
    assert record.startswith(f"<27>seccam[{os.getpid()}]: capture spool: state=failed\n")
    assert "Traceback" in record and "OSError: disk gone" in record
