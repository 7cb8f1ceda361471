"""Put a rendered config in place safely, and load it only when its bytes changed.

The candidate is written next to the target (same file system), fsynced, checked by
the real server's checker, then renamed over the target in one atomic step; the old
file stays as ``<file>.prev``. If the reload fails, the previous file is put back and
reloaded. A render that would remove more than a set number *and* more than a set
share of the reservations is refused unless forced: an empty query result must never
wipe DHCP, while a small lab may still delete its last hosts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from generator import command, errors, kea_control, render, settings, syntax_check

logger = logging.getLogger(__name__)

PREV_SUFFIX = ".prev"
LOADED_SUFFIX = ".loaded"  # sha256 of the file the server last loaded without error
CANDIDATE_SUFFIX = ".candidate"
DEFAULT_MODE = 0o644
OUTPUT_LIMIT = 2000  # characters of a failed reload command's output kept for the report


class WipeRefused(errors.GeneratorError):
    """The render would remove too large a share of the reservations."""


class ReloadFailed(errors.GeneratorError):
    """The server did not take the new file; the previous one was put back."""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What an apply did."""

    changed: bool  # the file on disk now has new bytes
    reloaded: bool  # the server was told to load them
    reservations: int  # in the file now in place
    previous_reservations: int


def count_reservations(text: str | None, *, fmt: render.Format) -> int:
    """Reservations in a rendered file (0 for None or a file we cannot read)."""
    if not text:
        return 0
    if fmt == "isc":  # lines that start with "host ", counted without splitting the text
        return text.count("\nhost ") + text.startswith("host ")
    try:
        subnets = json.loads(text)["Dhcp4"]["subnet4"]
        return sum(len(subnet.get("reservations", ())) for subnet in subnets)
    except (ValueError, KeyError, TypeError, AttributeError):
        return 0


def read_current(target: Path) -> str | None:
    """The file now in place, or None if there is none yet."""
    try:
        return target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def check_removal(
    *,
    current: int,
    new: int,
    max_share: float,
    force: bool,
    target: Path,
    floor: int = settings.REMOVAL_FLOOR,
) -> None:
    """Raise ``WipeRefused`` when ``new`` drops more than ``floor`` reservations and more
    than ``max_share`` of ``current``."""
    if current == 0 or new >= current:
        return
    removed = current - new
    if removed <= floor or removed / current <= max_share:
        return
    message = (
        f"refusing to write {target}: it would remove {removed} of {current} reservations"
        f" ({removed / current:.0%}; the guard refuses more than {floor} and more than"
        f" {max_share:.0%}). If this is intended, apply it once with the same settings and"
        " --once --force (a running daemon then carries on by itself), or raise"
        " --max-removal-share / --removal-floor"
    )
    if force:
        logger.warning("%s; forced", message, extra={"action": "wipe_forced"})
        return
    raise WipeRefused(message)


def apply(
    text: str,
    *,
    config: settings.ApplySettings,
    check: Callable[[Path], object] | None = None,
    reload: bool = True,
) -> Outcome:
    """Make ``text`` the config at ``config.output`` and reload if it changed.

    ``check`` replaces the syntax check of the candidate file (it raises to refuse it);
    by default the server's checker reads the whole file. With ``reload`` false the
    server already runs what ``text`` says (its hosts went in over OMAPI): the file is
    written and recorded as loaded, and nothing is reloaded."""
    target = config.output
    current = read_current(target)
    fmt = config.fmt
    new_count = count_reservations(text, fmt=fmt)
    old_count = count_reservations(current, fmt=fmt)
    if current == text:
        reloaded = _reload_if_never_loaded(config, text) if reload else False
        return Outcome(
            changed=False,
            reloaded=reloaded,
            reservations=new_count,
            previous_reservations=old_count,
        )
    check_removal(
        current=old_count,
        new=new_count,
        max_share=config.max_removal_share,
        force=config.force,
        target=target,
        floor=config.removal_floor,
    )
    candidate = _write_candidate(text, target=target)
    try:
        if config.syntax_check:
            if check is None:
                syntax_check.check(candidate, fmt=fmt)
            else:
                check(candidate)
        _keep_previous(target)
        os.replace(candidate, target)
    finally:
        candidate.unlink(missing_ok=True)
    _fsync_directory(target.parent)
    logger.debug(
        "wrote %s: %d reservations (was %d)",
        target,
        new_count,
        old_count,
        extra={"action": "written", "reservations": new_count},
    )
    if not reload:
        if _reloads(config):
            _mark_loaded(target)
        return Outcome(
            changed=True, reloaded=False, reservations=new_count, previous_reservations=old_count
        )
    _reload_or_restore(config, had_previous=current is not None)
    return Outcome(
        changed=True,
        reloaded=_reloads(config),
        reservations=new_count,
        previous_reservations=old_count,
    )


@dataclass(frozen=True, kw_only=True)
class Preview:
    """What ``apply`` would do with a text, found out without writing or reloading."""

    changed: bool  # the bytes differ from the file in place
    reload: bool  # apply would run the reload (a change, or a file never loaded)
    reservations: int
    previous_reservations: int
    refusal: str | None  # why apply would refuse the text; None if it would take it
    check: syntax_check.CheckResult | None  # the checker's verdict; None if not run


def preview(text: str, *, config: settings.ApplySettings) -> Preview:
    """Run the checks ``apply`` runs before it writes (wipe guard, then the server's
    checker on a private copy of the text) and say what it would do; change nothing."""
    current = read_current(config.output)
    new_count = count_reservations(text, fmt=config.fmt)
    old_count = count_reservations(current, fmt=config.fmt)
    counts = {"reservations": new_count, "previous_reservations": old_count}
    if current == text:
        reload = _never_loaded(config, text)
        return Preview(changed=False, reload=reload, refusal=None, check=None, **counts)
    check = None
    try:
        check_removal(
            current=old_count,
            new=new_count,
            max_share=config.max_removal_share,
            force=config.force,
            target=config.output,
            floor=config.removal_floor,
        )
        if config.syntax_check:
            check = syntax_check.check_text(text, fmt=config.fmt)
    except errors.ConfigRejected as exc:
        where = f"the rendered {config.output.name}"  # not the private copy it checked
        rejected = errors.ConfigRejected(
            checker=exc.checker, path=where, returncode=exc.returncode, output=exc.output
        )
        return Preview(changed=True, reload=False, refusal=str(rejected), check=None, **counts)
    except (WipeRefused, errors.CheckerFailed) as exc:
        return Preview(changed=True, reload=False, refusal=str(exc), check=None, **counts)
    return Preview(changed=True, reload=_reloads(config), refusal=None, check=check, **counts)


def remove_stale_candidates(target: Path) -> int:
    """Delete candidates a crashed run left next to ``target``; return how many."""
    removed = 0
    for stale in target.parent.glob(f".{target.name}.*{CANDIDATE_SUFFIX}"):
        stale.unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.info("removed %d stale candidate files next to %s", removed, target)
    return removed


def write_atomically(text: str, *, target: Path, mode: int = DEFAULT_MODE) -> None:
    """Put ``text`` at ``target`` as one step, with no check and no reload (a file the
    server reads only at its start): a candidate beside it, fsynced, given ``mode``,
    renamed over it; then the directory fsynced."""
    candidate = _write_candidate(text, target=target)
    try:
        os.chmod(candidate, mode)
        os.replace(candidate, target)
    except BaseException:
        candidate.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _write_candidate(text: str, *, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=CANDIDATE_SUFFIX, dir=target.parent
    )
    candidate = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = DEFAULT_MODE
        os.chmod(candidate, mode)
    except BaseException:
        candidate.unlink(missing_ok=True)
        raise
    return candidate


def _keep_previous(target: Path) -> None:
    """Hard-link the current file as ``<file>.prev`` (atomically replacing the old one)."""
    if not target.exists():
        return
    previous = _previous_path(target)
    staging = previous.with_name(previous.name + ".tmp")
    staging.unlink(missing_ok=True)
    os.link(target, staging)
    os.replace(staging, previous)


def _restore_previous(target: Path) -> None:
    previous = _previous_path(target)
    staging = target.with_name(f".{target.name}.restore")
    staging.unlink(missing_ok=True)
    os.link(previous, staging)
    os.replace(staging, target)
    _fsync_directory(target.parent)


def _previous_path(target: Path) -> Path:
    return target.with_name(target.name + PREV_SUFFIX)


def _reload_or_restore(config: settings.ApplySettings, *, had_previous: bool) -> None:
    try:
        reload(config)
    except ReloadFailed as first:
        # What the server runs now is unknown (Kea drops its config on a failed
        # config-reload): until a reload succeeds, no file counts as loaded.
        _loaded_path(config.output).unlink(missing_ok=True)
        if not had_previous:
            raise
        logger.error(
            "reload failed, restoring the previous %s: %s",
            config.output,
            first,
            extra={"action": "reload_failed"},
        )
        _restore_previous(config.output)
        try:
            reload(config)
        except ReloadFailed as second:
            raise ReloadFailed(
                f"{first}; previous file restored, but reloading it failed too: {second}"
            ) from second
        logger.info(
            "previous %s restored and reloaded", config.output, extra={"action": "restored"}
        )
        raise ReloadFailed(f"{first}; previous file restored and reloaded") from first


def reload(config: settings.ApplySettings) -> None:
    """Tell the server to load the file: the reload command, then Kea's control socket."""
    if config.reload_command:
        _run_reload_command(config)
    if config.kea_control_socket and _uses_kea_socket(config):
        try:
            kea_control.config_reload(config.kea_control_socket)
        except kea_control.ControlError as exc:
            raise ReloadFailed(str(exc)) from exc
    if _reloads(config):
        _mark_loaded(config.output)
        logger.info("reloaded %s", config.output, extra={"action": "reloaded"})


def _reloads(config: settings.ApplySettings) -> bool:
    return bool(config.reload_command) or _uses_kea_socket(config)


def loaded(config: settings.ApplySettings, text: str) -> bool:
    """True if the server runs ``text``: it loaded it, or nothing reloads it anyway."""
    return not _never_loaded(config, text)


def _never_loaded(config: settings.ApplySettings, text: str) -> bool:
    """True if a reload is configured and the server has not loaded ``text`` yet."""
    return _reloads(config) and _loaded_digest(config.output) != _digest(text.encode("utf-8"))


def _reload_if_never_loaded(config: settings.ApplySettings, text: str) -> bool:
    """Reload a file in place that the server never loaded; True if it did reload.

    A generator stopped between the rename and the reload leaves a new file that the
    server has not read, and the next pass renders the same bytes: without this the
    server would run the old config until the next change."""
    target = config.output
    if not _never_loaded(config, text):
        logger.debug("%s unchanged", target)
        return False
    logger.warning(
        "%s is unchanged but was never loaded by the server (stopped before reloading?);"
        " reloading it",
        target,
        extra={"action": "reload_missed"},
    )
    _reload_or_restore(config, had_previous=_previous_path(target).exists())
    return True


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _loaded_path(target: Path) -> Path:
    return target.with_name(target.name + LOADED_SUFFIX)


def _loaded_digest(target: Path) -> str | None:
    try:
        return _loaded_path(target).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _mark_loaded(target: Path) -> None:
    """Record which bytes the server runs now; losing the mark only costs a reload."""
    marker = _loaded_path(target)
    staging = marker.with_name(f".{marker.name}.tmp")
    staging.write_text(_digest(target.read_bytes()) + "\n", encoding="ascii")
    os.replace(staging, marker)


def _uses_kea_socket(config: settings.ApplySettings) -> bool:
    return config.fmt == "kea" and bool(config.kea_control_socket)


def _run_reload_command(config: settings.ApplySettings) -> None:
    argv = list(config.reload_command)
    env = {**os.environ, "DHCP_CONFIG": str(config.output), "DHCP_FORMAT": config.fmt}
    returncode, output = command.run(
        argv,
        env=env,
        timeout=config.reload_timeout,
        what=f"reload command {argv[0]}",
        error=ReloadFailed,
    )
    if returncode != 0:
        output = output.strip()[-OUTPUT_LIMIT:]
        last = output.splitlines()[-1] if output else "no output"
        raise ReloadFailed(f"reload command {argv[0]} exited {returncode}: {last}")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on directories
            os.fsync(fd)
    finally:
        os.close(fd)
