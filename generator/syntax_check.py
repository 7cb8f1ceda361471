"""Ask the real DHCP server whether it would load a candidate file.

``dhcpd -t`` checks syntax only; ``kea-dhcp4 -t`` also builds the configuration
(it rejects duplicate reservations and names of interfaces missing on this host).
Neither replaces ``validate.check``. When a server is not installed the result says
"skipped" and the caller decides; a rejection raises ``ConfigRejected``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from generator import command, errors, render

logger = logging.getLogger(__name__)

CHECK_TIMEOUT = 30.0  # seconds; both checkers answer in well under a second
# Debian installs both servers in sbin, which is not on a normal user's PATH.
SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
CHECKERS: dict[render.Format, str] = {"isc": "dhcpd", "kea": "kea-dhcp4"}

# Noise around dhcpd's own error lines: its banner and its "report a bug" epilogue.
_DHCPD_NOISE = re.compile(
    r"Internet Systems Consortium|Copyright |All rights reserved|For info, please"
    r"|(Config|Database|PID) file:"
)
_DHCPD_EPILOGUE = "If you think you have received this message"
_KEA_INFO = re.compile(r"\S+ \S+ (INFO|DEBUG) ")
# Kea logs an error, then prints the same reason once more without the log prefix.
_KEA_VERDICT = ("Error encountered:", "Syntax check failed")


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """The checker's verdict on an accepted file, or why there was none."""

    checker: str  # "dhcpd" or "kea-dhcp4"
    skipped: bool  # True when the checker is not installed: nothing was checked
    output: str  # what the checker printed, or why it was skipped


def find_binary(name: str) -> str | None:
    """The checker's path on PATH or in an sbin directory, or None if not installed."""
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in SEARCH_DIRS:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def check(
    path: str | os.PathLike[str], *, fmt: render.Format, timeout: float = CHECK_TIMEOUT
) -> CheckResult:
    """Run the checker for ``fmt`` on ``path``; raise ``ConfigRejected`` if it refuses."""
    checker = CHECKERS[fmt]
    binary = find_binary(checker)
    if binary is None:
        logger.debug("%s is not installed; %s not checked", checker, path)
        return CheckResult(checker=checker, skipped=True, output=f"{checker} is not installed")
    path = os.path.abspath(path)
    # dhcpd and Kea want writable lease, pid and lock locations even when only
    # testing; temporary ones keep the check free of side effects and root.
    with tempfile.TemporaryDirectory(prefix="dhcp-check-") as scratch:
        if fmt == "isc":
            argv = [binary, "-4", "-t", "-cf", path]
            argv += ["-lf", os.path.join(scratch, "leases"), "-pf", os.path.join(scratch, "pid")]
        else:
            argv = [binary, "-t", path]
        env = {**os.environ, "KEA_LOCKFILE_DIR": scratch, "KEA_PIDFILE_DIR": scratch}
        returncode, output = command.run(
            argv, env=env, timeout=timeout, what=checker, error=errors.CheckerFailed
        )
    output = _trim(output, fmt=fmt)
    if returncode != 0:
        raise errors.ConfigRejected(
            checker=checker, path=path, returncode=returncode, output=output
        )
    logger.debug("%s accepted %s", checker, path)
    return CheckResult(checker=checker, skipped=False, output=output)


def check_text(text: str, *, fmt: render.Format, timeout: float = CHECK_TIMEOUT) -> CheckResult:
    """``check`` on ``text``, written to a private temporary file first."""
    with tempfile.TemporaryDirectory(prefix="dhcp-check-") as scratch:
        path = os.path.join(scratch, "candidate.conf")
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
        return check(path, fmt=fmt, timeout=timeout)


class Incremental:
    """Check only what ``dhcpd -t`` has not accepted yet, the rest of the file being equal.

    An ISC file is a preamble (globals and subnets) followed by self-contained host
    blocks. Once the checker accepted a file, a later file with the same preamble
    differs only by host blocks: the preamble with just the new blocks is checked
    instead of the whole file, which at 10,000 hosts costs a tenth. The caller knows
    which blocks are new (a pass's changes); keeping a set of every accepted block
    instead would cost ~100 ms and ~100 MB a pass at 1,000,000 hosts. Any other change
    (or Kea, or a first file) gets a check of the whole file.
    """

    def __init__(self) -> None:
        self._preamble: str | None = None  # of the last file accepted

    def check(
        self,
        candidate: str | os.PathLike[str],
        document: render.Document,
        *,
        new: Sequence[str],
    ) -> CheckResult:
        """Check ``candidate`` (the file of ``document``), whose host blocks not in the
        last file accepted are ``new``; raise ``ConfigRejected`` if refused."""
        parts = document.parts
        if parts is None or parts.preamble != self._preamble:
            result = check(candidate, fmt=document.fmt)
        else:
            logger.debug("checking %d new of %d host blocks", len(new), len(parts.hosts))
            try:
                result = check_text(parts.preamble + "".join(new), fmt=document.fmt)
            except errors.ConfigRejected as exc:
                where = f"the new host blocks of {os.fspath(candidate)}"
                raise errors.ConfigRejected(
                    checker=exc.checker, path=where, returncode=exc.returncode, output=exc.output
                ) from None
        if parts is not None and not result.skipped:
            self._preamble = parts.preamble
        return result


def _trim(output: str, *, fmt: render.Format) -> str:
    """Keep the lines that explain a verdict, drop banners and routine log lines."""
    if fmt == "isc":
        output = output.split(_DHCPD_EPILOGUE, 1)[0]
        lines = [line for line in output.splitlines() if not _DHCPD_NOISE.search(line)]
    else:
        lines = [line for line in output.splitlines() if line.startswith(_KEA_VERDICT)]
        lines = lines or [line for line in output.splitlines() if not _KEA_INFO.match(line)]
    return "\n".join(line for line in lines if line.strip())
