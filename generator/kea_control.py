"""Ask a running kea-dhcp4 to load its config file again, through its control socket.

Kea's unix control socket takes one JSON command per connection and answers with
``{"result": 0, "text": ...}`` on success; any other result is a refusal.
"""

from __future__ import annotations

import json
import logging
import socket

from generator import errors

logger = logging.getLogger(__name__)

TIMEOUT = 30.0  # seconds
RESPONSE_LIMIT = 1 << 20  # bytes


class ControlError(errors.GeneratorError):
    """Kea's control socket could not be reached, or it refused the command."""


def config_reload(path: str, *, timeout: float = TIMEOUT) -> str:
    """Send ``config-reload``; return Kea's text on success, raise ``ControlError``."""
    response = command(path, {"command": "config-reload"}, timeout=timeout)
    result = response.get("result")
    text = str(response.get("text", ""))
    if result != 0:
        raise ControlError(f"kea config-reload via {path} failed (result {result}): {text}")
    logger.debug("kea config-reload via %s: %s", path, text)
    return text


def command(
    path: str, request: dict[str, object], *, timeout: float = TIMEOUT
) -> dict[str, object]:
    """Send one command to the socket at ``path`` and return the decoded answer."""
    chunks: list[bytes] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps(request).encode("utf-8"))
            received = 0
            while received < RESPONSE_LIMIT:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                received += len(chunk)
                answer = _decode(b"".join(chunks))
                if answer is not None:
                    return answer
    except OSError as exc:
        raise ControlError(f"kea control socket {path}: {exc}") from exc
    answer = _decode(b"".join(chunks))
    if answer is None:
        raise ControlError(f"kea control socket {path} gave no JSON answer")
    return answer


def _decode(data: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(data.decode("utf-8"))
    except ValueError:
        return None
    if isinstance(value, list):  # some Kea versions answer with a one-element list
        value = value[0] if value else None
    return value if isinstance(value, dict) else None
