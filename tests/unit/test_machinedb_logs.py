"""Log output of both commands: no broker password even in stomp.py's DEBUG frame dumps."""

from __future__ import annotations

import json
import logging

import pytest
from stomp.utils import Frame, clean_lines, convert_frame

from machinedb import logs

PASSWORDS = [
    "s3cret",
    "relay#f365c9bf5cd4:!",
    "a,b'c\"d\\e f}g",
    "x\\n'tail",
    "passcode:x",
    " lead",
]


def connect_frame_dump(password: str) -> str:
    """What stomp.py's transport logs when it sends CONNECT (the same two calls)."""
    frame = Frame("STOMP", {"login": "relay", "passcode": password, "host": "127.0.0.1"})
    return clean_lines(convert_frame(frame))  # type: ignore[no-any-return]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("as_json", [False, True])
def test_stomp_frame_dump_at_debug_hides_the_passcode(
    password: str, as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup("DEBUG", json=as_json)
    stomp_log = logging.getLogger("stomp.py")
    stomp_log.debug("sending frame: %s", connect_frame_dump(password))
    stomp_log.debug("connect headers %s", {"login": "relay", "passcode": password})
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2
    if as_json:
        lines = [json.loads(line)["message"] for line in lines]
    for line in lines:
        head, _, tail = line.partition("passcode")
        assert tail in (": ***", "': ***")  # nothing of the password after the header name
        assert password.strip() not in head
        assert "relay" in line and "***" in line  # the rest of the frame is still useful
    assert "b'STOMP'" in lines[0]


def test_stomp_is_silent_below_debug(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("INFO")
    logging.getLogger("stomp.py").warning("Could not connect to host 127.0.0.1, port 61613")
    assert capsys.readouterr().err == ""


def test_setup_twice_keeps_one_redaction_filter() -> None:
    logs.setup("DEBUG")
    logs.setup("DEBUG")
    filters = logging.getLogger("stomp.py").filters
    assert sum(isinstance(f, logs.RedactPasscode) for f in filters) == 1
