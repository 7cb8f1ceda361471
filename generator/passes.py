"""Render passes: read the database, validate, render, apply.

``render_pass`` is the one-shot pass (``--once``): read everything, render, apply,
keep nothing. ``Pipeline`` is the daemon's: a full pass builds a ``state.State`` of
the scope, and an incremental pass re-reads only the rows some messages named and
updates that state, so a change costs what it touches. Both end in the same apply.

Failures are reported, never raised: the config in place stays as it was, and a
pass returns None to say "retry later".
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import itertools
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy

from generator import (
    apply,
    changes,
    errors,
    failover,
    kea_hosts,
    model,
    omapi,
    omapi_apply,
    omapi_journal,
    read,
    reconcile,
    render,
    render_isc,
    settings,
    state,
    syntax_check,
    validate,
)
from generator import metrics as metrics_module
from machinedb import change_message as contract

logger = logging.getLogger(__name__)

SHOWN_DIFFERENCES = 10  # addresses named in a reconciliation's log line
RESTART_SETTLE = 10.0  # seconds to wait for a restarted dhcpd's OMAPI


def prepare(
    engine: sqlalchemy.Engine,
    *,
    config: settings.ApplySettings,
    metrics: metrics_module.Metrics,
    server: int | None = None,
) -> tuple[render.Document, read.Visibility]:
    """Read a snapshot, validate it and render it; report the rows left out."""
    started = time.monotonic()
    with read.collector_paused():
        snapshot = read.read_snapshot(engine, server=server)
        checked = validate.check(snapshot.inventory)
        failover.refuse_unfit(checked.inventory.subnets, fmt=config.fmt, options=config.options)
        document = render.document(checked.inventory, fmt=config.fmt, options=config.options)
    _report(checked.problems)
    if failover.paired(checked.inventory.subnets):
        _check_clock(engine, metrics)
    metrics.render_seconds.observe(time.monotonic() - started)
    metrics.rows_skipped.set(len(checked.problems))
    metrics.reservations.set(len(checked.inventory.interfaces))
    return document, snapshot.visibility


def render_pass(
    engine: sqlalchemy.Engine,
    *,
    config: settings.ApplySettings,
    metrics: metrics_module.Metrics,
    server: int | None = None,
) -> read.Visibility | None:
    """Read, validate, render and apply once; return what the applied config includes."""
    try:
        document, visibility = prepare(engine, config=config, metrics=metrics, server=server)
    except read.DatabaseUnavailable as exc:
        _failed(metrics, exc)
        return None
    except failover.Refused as exc:
        _refused(metrics, exc.problems)
        return None
    ok = _apply(document, config=config, metrics=metrics, check=None)
    return visibility if ok else None


class Pipeline:
    """The daemon's passes over one scope, with the validated state kept between them."""

    def __init__(
        self,
        engine: sqlalchemy.Engine,
        *,
        config: settings.ApplySettings,
        metrics: metrics_module.Metrics,
        server: int | None = None,
        hosts: omapi.Client | None = None,
        restart_settle: float = RESTART_SETTLE,
    ) -> None:
        self.engine = engine
        self.config = config
        self.metrics = metrics
        self.server = server
        self.hosts = hosts  # dhcpd's OMAPI: host changes without a restart
        self.restart_settle = restart_settle  # seconds for a restarted dhcpd's OMAPI
        self._in_place = False  # the last apply put the state's document in place
        # hosts a stopped run may have sent without writing them to the file (None:
        # the record was not looked at yet); deleted from dhcpd before anything else
        self._strays: set[omapi_journal.Entry] | None = None
        # host changes a restart put in the file that OMAPI could not confirm after it
        self._unchecked: list[omapi_apply.Diff] = []
        self.kea_hosts: kea_hosts.Writer | None = None  # Kea's hosts database, on first use
        # what the server runs: the preamble and reservation count of the file it
        # loaded last (None until the file in place was looked at)
        self._served: tuple[str, int] | None = None
        self.state: state.State[Any] | None = None
        self.scope_subnets: frozenset[int] = frozenset()  # subnet ids the last full read saw
        self.checks = syntax_check.Incremental()
        # the snapshot of the last full pass applied: every change it saw is in the state
        # (an incremental pass's snapshot says so only for the rows it re-read)
        self.whole: read.Visibility | None = None
        # the last incremental pass applied: its snapshot, and the rows it re-read
        self._reread: tuple[read.Visibility, frozenset[int], frozenset[int]] | None = None
        # reservations the last full pass found different from the state it replaced
        self.last_suspects: list[reconcile.Suspect] = []
        self._preamble: tuple[state.State[Any], str] | None = None

    def full(self) -> read.Visibility | None:
        """Read the whole scope, rebuild the state and apply it."""
        started = time.monotonic()
        try:
            make = self._maker()
            snapshot = read.read_into(
                self.engine,
                lambda subnets, rows: state.State.build_from(subnets, rows, make=make),
                server=self.server,
            )
        except read.DatabaseUnavailable as exc:
            _failed(self.metrics, exc)
            return None
        fresh = snapshot.inventory
        unfit = failover.check(fresh.subnets, fmt=self.config.fmt, options=self.config.options)
        if unfit:  # before the state is replaced: nothing of this read is kept
            _refused(self.metrics, unfit)
            return None
        if failover.paired(fresh.subnets):
            _check_clock(self.engine, self.metrics)
        previous, self.state = self.state, fresh
        self.scope_subnets = frozenset(fresh.subnet_ids)
        if previous is not None:
            self.last_suspects = _suspects(previous, fresh)
            fresh.inherit_changes(previous)
        elif self.hosts is not None:
            # What the server holds is the file in place (and what went in over OMAPI
            # with it): send the difference, not nothing.
            self._inherit_from_file(fresh)
        _report(fresh.problems())
        self._observe(fresh, started)
        if not self._apply(fresh):
            return None
        self.whole = snapshot.visibility
        return snapshot.visibility

    def incremental(self, plan: changes.Plan) -> read.Visibility | None:
        """Re-read the rows ``plan`` names and apply what changed; a full pass where the
        plan asks for one (or nothing was built yet)."""
        current = self.state
        if plan.full or current is None:
            return self.full()
        started = time.monotonic()
        try:
            named = read.read_named(
                self.engine,
                interface_ids=plan.interface_ids,
                host_ids=plan.host_ids,
                subnet_ids=plan.subnet_ids,
                server=self.server,
            )
        except read.DatabaseUnavailable as exc:
            _failed(self.metrics, exc)
            return None
        if named.subnets_in_scope or plan.subnet_ids & self.scope_subnets:
            return self.full()  # a subnet of the scope changed: re-read it all
        current.update(named.wanted, named.gone)
        _report(current.problems_of(row.id for row in named.wanted), level=logging.WARNING)
        self._observe(current, started)
        self._reread = None
        if self._in_place and not current.changed():
            # nothing the server runs changed (a change outside the scope, a repeated
            # or forged message): no document, no file read, no write
            self.metrics.renders.labels("unchanged").inc()
            self.metrics.applies.labels("unchanged").inc()
            self.metrics.confirmed()
        elif not self._apply(current):
            return None
        rows = frozenset(row.id for row in named.wanted) | named.gone
        self._reread = (named.visibility, rows, frozenset(plan.host_ids))
        return named.visibility

    def reread(self, ref: contract.ChangeRef) -> bool:
        """True if the last incremental pass re-read the row ``ref`` names, in a
        snapshot that saw the change: that pass applied it."""
        last, txid = self._reread, ref.txid
        if last is None or txid is None or not ref.names_rows() or not last[0].saw(txid):
            return False
        if ref.table == "interface":
            return ref.key("id") in last[1]
        if ref.table == "host":
            return ref.key("id") in last[2]
        return False

    def document(self) -> render.Document:
        """The config text of the current state."""
        current = self.state
        if current is None:
            raise errors.GeneratorError("no state yet: run a full pass first")
        if self.config.fmt == "kea":
            rows = () if self.config.kea_hosts_database else current.interfaces()  # not in the file
            inventory = model.Inventory(subnets=current.subnets, interfaces=rows)
            return render.document(inventory, fmt="kea", options=self.config.options)
        preamble = self._preamble_of(current)
        blocks = tuple(current.outputs())
        parts = render_isc.Parts(preamble=preamble, hosts=blocks)
        text = "".join(itertools.chain((preamble,), blocks))  # one copy of a large text
        return render.Document(fmt="isc", text=text, parts=parts)

    def _apply(self, current: state.State[Any]) -> bool:
        taken = current.take_changes()
        try:
            ok = self._put_in_place(current, [(before, now) for _, before, now in taken])
        except errors.GeneratorError as exc:  # a bug: never a half-applied change
            _failed(self.metrics, exc)
            ok = False
        if not ok:
            current.restore_changes(taken)
        self._in_place = ok
        return ok

    def _put_in_place(self, current: state.State[Any], changed: list[tuple[Any, Any]]) -> bool:
        """Apply the state: host changes over OMAPI when only hosts changed, else the
        file and the reload command (a restart)."""
        if self.config.fmt == "kea" and self.config.kea_hosts_database is not None:
            return self._put_in_place_kea(self.document(), changed)
        if self.hosts is None or self.config.fmt != "isc":
            document = self.document()
            check = self._check_for(document, changed)
            return _apply(document, config=self.config, metrics=self.metrics, check=check)
        plan = omapi_apply.diff(changed)
        self._delete_strays()
        self._check_again()
        served = self._served_now()
        if plan and not self._guarded(served, len(current)):
            return False  # the wipe guard runs before anything reaches the server
        # The whole document (a join of every host block: tens of ms at 100,000 hosts)
        # is made after the hosts went to dhcpd: it is only the file's business.
        if plan and served is not None and served[0] == self._preamble_of(current):
            if self._send(plan, fallback=True):
                document = self.document()
                return self._hosts_sent(document, plan, changed, self._check_for(document, changed))
        elif plan and not self.config.reload_command:
            self._send(plan, fallback=False)  # nothing restarts dhcpd: it gets them now
        elif plan:  # checked and mended once the restarted dhcpd answers
            omapi_journal.record(self._journal, (*plan.moved, *plan.added))
        document = self.document()
        return self._restart(document, plan, self._check_for(document, changed))

    def _check_for(self, document: render.Document, changed: list[tuple[Any, Any]]) -> Any:
        # ``changed`` holds every block not in the last file applied (and so checked):
        # dhcpd -t needs to see only those under an unchanged preamble.
        new = [now for _, now in changed if isinstance(now, str)]
        return functools.partial(self.checks.check, document=document, new=new)

    def _guarded(self, served: tuple[str, int] | None, new: int) -> bool:
        before = served[1] if served is not None else _reservations_in_place(self.config)
        try:
            self._guard(before, new)
        except apply.WipeRefused as exc:
            self.metrics.renders.labels("refused").inc()
            logger.error("%s", exc, extra={"action": "refused"})
            return False
        return True

    def _hosts_sent(
        self,
        document: render.Document,
        plan: omapi_apply.Diff,
        changed: list[tuple[Any, Any]],
        check: Any,
    ) -> bool:
        """dhcpd has the hosts: write the file without a restart."""
        assert document.parts is not None
        ok = _apply(document, config=self.config, metrics=self.metrics, check=check, reload=False)
        if not ok:  # the file was refused after the server took the hosts: undo
            undo = omapi_apply.diff([(now, before) for before, now in changed])
            self._send(undo, fallback=False)
            return False
        self._served = (document.parts.preamble, len(document.parts.hosts))
        self._file_written()
        self.metrics.applies.labels("omapi").inc()
        logger.info(
            "sent %d host changes to dhcpd over OMAPI",
            len(plan),
            extra={"action": "omapi_applied", "changes": len(plan)},
        )
        return True

    def _restart(self, document: render.Document, plan: omapi_apply.Diff, check: Any) -> bool:
        """The file and the reload command; then every changed host checked over OMAPI."""
        assert document.parts is not None
        if not _apply(document, config=self.config, metrics=self.metrics, check=check):
            return False
        self._served = (document.parts.preamble, len(document.parts.hosts))
        if plan and self.config.reload_command and not self._after_restart(plan):
            # The file is in place, but dhcpd may hide a host of it (a `deleted` record
            # replayed from its lease file): the check is sent again before every
            # later apply until OMAPI shows every host, and the record stays.
            self._unchecked.append(plan)
            return True
        self._file_written()
        return True

    def _put_in_place_kea(self, document: render.Document, changed: list[tuple[Any, Any]]) -> bool:
        """Kea with a hosts database: the reservation rows first (checked against this
        file), then the file, which changes (and is reloaded) only with subnets or globals."""
        assert self.state is not None
        if self.kea_hosts is None:
            self.kea_hosts = kea_hosts.Writer.from_settings(self.config)
        if not self.kea_hosts.put(self.state, changed, document=document, metrics=self.metrics):
            return False
        # The file holds no reservations: their wipe guard ran on the rows.
        config = dataclasses.replace(self.config, max_removal_share=1.0)
        check = functools.partial(self.checks.check, document=document, new=[])
        return _apply(document, config=config, metrics=self.metrics, check=check)

    def _send(self, plan: omapi_apply.Diff, *, fallback: bool) -> bool:
        """Send ``plan``; False (logged and counted) if dhcpd did not take it."""
        assert self.hosts is not None
        try:
            omapi_journal.record(self._journal, (*plan.moved, *plan.added))
            omapi_apply.send(self.hosts, plan)
        except omapi.OmapiError as exc:
            if isinstance(exc, omapi_apply.Mismatch):
                self.metrics.omapi_mismatches.inc(len(exc.problems))
            if fallback:
                self.metrics.omapi_fallbacks.inc()
                logger.error(
                    "OMAPI apply failed, restarting dhcpd instead: %s",
                    exc,
                    extra={"action": "omapi_fallback"},
                )
            else:
                logger.warning("OMAPI: %s", exc, extra={"action": "omapi_failed"})
            return False
        return True

    @property
    def _journal(self) -> Path:
        return omapi_journal.path_for(self.config.output)

    def _inherit_from_file(self, fresh: state.State[Any]) -> None:
        """Before the first apply: the file in place is what dhcpd holds, except the
        hosts a stopped run recorded (``omapi_journal``) and may have half-applied: those
        the file does not declare are deleted first, those it declares are sent again
        (an add that finds the very host there changes nothing)."""
        in_place = _blocks_in_place(self.config)
        fresh.inherit_outputs(in_place)
        recorded = omapi_journal.read(self._journal)
        declared = {}
        for address, block in in_place.items():
            declared[omapi_apply.host_of(block).name] = address
        self._strays = {entry for entry in recorded if entry[0] not in declared}
        for name, _ in recorded:
            if name in declared:
                fresh.changes.setdefault(declared[name], None)
        if recorded:
            logger.warning(
                "%d hosts were being sent to dhcpd by a run that stopped before it was"
                " done: checking them first",
                len(recorded),
                extra={"action": "omapi_recorded"},
            )

    def _delete_strays(self) -> None:
        """Delete from dhcpd the recorded hosts the file in place does not declare."""
        assert self.hosts is not None
        if self._strays is None:
            self._strays = set()
        for entry in sorted(self._strays):
            try:
                self.hosts.delete(entry[0])
            except omapi.OmapiError as exc:
                logger.warning("OMAPI: %s; retried at the next apply", exc)
                return
            self._strays.discard(entry)

    def _check_again(self) -> None:
        """Send again the host changes a restart's check could not confirm."""
        assert self.hosts is not None
        while self._unchecked:
            try:
                omapi_apply.mend(self.hosts, self._unchecked[0])
            except omapi.OmapiError as exc:
                logger.warning("OMAPI: %s; checked again at the next apply", exc)
                return
            self._unchecked.pop(0)

    def _file_written(self) -> None:
        """The file in place declares every host sent: the record can go."""
        if self.hosts is not None and not self._strays and not self._unchecked:
            omapi_journal.clear(self._journal)

    def _after_restart(self, plan: omapi_apply.Diff) -> bool:
        """After a restart, check the changed hosts once dhcpd answers and mend them: a
        host dhcpd deleted over OMAPI before stays hidden by its lease file record.
        False (logged) if that could not be done."""
        deadline = time.monotonic() + self.restart_settle
        while True:
            try:
                assert self.hosts is not None
                omapi_apply.mend(self.hosts, plan)
                return True
            except omapi.Unreachable as exc:
                if time.monotonic() >= deadline:
                    logger.error("OMAPI after the restart: %s; retrying later", exc)
                    return False
                time.sleep(0.1)
            except omapi.OmapiError as exc:
                logger.error("OMAPI after the restart: %s; retrying later", exc)
                return False

    def _served_now(self) -> tuple[str, int] | None:
        """The preamble and reservations the server runs (looked up once from the file
        in place, and only if the server loaded it)."""
        if self._served is None:
            text = apply.read_current(self.config.output)
            if text is not None and apply.loaded(self.config, text):
                cut = text.find("\nhost ")
                preamble = text if cut < 0 else text[:cut]
                self._served = (preamble, apply.count_reservations(text, fmt="isc"))
        return self._served

    def _guard(self, current: int, new: int) -> None:
        apply.check_removal(
            current=current,
            new=new,
            max_share=self.config.max_removal_share,
            force=self.config.force,
            target=self.config.output,
            floor=self.config.removal_floor,
        )

    def _maker(self) -> Any:
        if self.config.fmt == "isc":
            return render_isc.host_block
        return _same

    def _preamble_of(self, current: state.State[Any]) -> str:
        if self._preamble is None or self._preamble[0] is not current:
            text = render_isc.preamble(current.subnets, options=self.config.options)
            self._preamble = (current, text)
        return self._preamble[1]

    def _observe(self, current: state.State[Any], started: float) -> None:
        self.metrics.render_seconds.observe(time.monotonic() - started)
        self.metrics.rows_skipped.set(current.problem_count())
        self.metrics.reservations.set(len(current))


def _reservations_in_place(config: settings.ApplySettings) -> int:
    return apply.count_reservations(apply.read_current(config.output), fmt=config.fmt)


def _blocks_in_place(config: settings.ApplySettings) -> dict[int, str]:
    """The host blocks of the file in place, by address."""
    text = apply.read_current(config.output) or ""
    found = {}
    for tail in text.split("\nhost ")[1:]:
        block = "\nhost " + tail
        try:
            host = omapi_apply.host_of(block)
        except errors.UnsafeValue:
            continue  # not one of ours: the render replaces it
        found[int(ipaddress.IPv4Address(host.ip))] = block
    return found


def _suspects(old: state.State[Any], new: state.State[Any]) -> list[reconcile.Suspect]:
    found = []
    for address in old.differences(new):
        rows = [row for row in (old.row_at(address), new.row_at(address)) if row is not None]
        shown = ipaddress.IPv4Address(address) if address < 2**32 else address
        ids = ", ".join(f"interface {row.id}" for row in rows)
        found.append(
            reconcile.Suspect(
                label=f"{shown} ({ids})",
                interfaces=frozenset(row.id for row in rows),
                hosts=frozenset(row.host_id for row in rows),
            )
        )
    return found


def omapi_client(config: settings.ApplySettings) -> omapi.Client | None:
    """A client for the OMAPI ``config`` names (it connects on first use), or None."""
    target = config.omapi
    if target is None:
        return None
    return omapi.Client(host=target.host, port=target.port, key=target.key)


def _same(interface: model.Interface) -> model.Interface:
    return interface


def _apply(
    document: render.Document,
    *,
    config: settings.ApplySettings,
    metrics: metrics_module.Metrics,
    check: Any,
    reload: bool = True,
) -> bool:
    """Apply ``document``; report and count the outcome; True if it is in place."""
    started = time.monotonic()
    try:
        outcome = apply.apply(document.text, config=config, check=check, reload=reload)
    except apply.WipeRefused as exc:
        metrics.renders.labels("refused").inc()
        logger.error("%s", exc, extra={"action": "refused"})
        return False
    except (errors.GeneratorError, OSError) as exc:
        _failed(metrics, exc)
        return False
    metrics.apply_seconds.observe(time.monotonic() - started)
    metrics.renders.labels("applied" if outcome.changed else "unchanged").inc()
    if reload:
        metrics.applies.labels("restart" if outcome.reloaded else "unchanged").inc()
    metrics.confirmed()
    if outcome.changed:
        logger.info(
            "applied %d reservations to %s",
            outcome.reservations,
            config.output,
            extra={"action": "applied", "reservations": outcome.reservations},
        )
    return True


def _failed(metrics: metrics_module.Metrics, exc: BaseException) -> None:
    if isinstance(exc, read.DatabaseUnavailable):
        metrics.renders.labels("db_unavailable").inc()
        logger.error("%s; keeping the config in place", exc, extra={"action": "db_unavailable"})
        return
    metrics.renders.labels("failed").inc()
    logger.error(
        "render failed, keeping the config in place: %s", exc, extra={"action": "render_failed"}
    )


def _refused(metrics: metrics_module.Metrics, problems: Iterable[validate.Problem]) -> None:
    """A failover pair unfit to render: nothing was written; every rule it breaks is
    logged."""
    metrics.renders.labels("refused").inc()
    for problem in problems:
        logger.error(
            "refused to render, keeping the config in place: %s",
            problem.message,
            extra={"action": "failover_refused", "rule": problem.kind},
        )


def _check_clock(engine: sqlalchemy.Engine, metrics: metrics_module.Metrics) -> None:
    """Failover peers compare times: measure this clock against the database's."""
    skew = failover.measure_skew(engine)
    if skew is not None:
        metrics.clock_skew.set(skew)
        failover.report_skew(skew)


def _report(problems: Iterable[validate.Problem], *, level: int = logging.WARNING) -> None:
    for problem in problems:
        logger.log(level, "skipped: %s", problem.message, extra={"action": "row_skipped"})
