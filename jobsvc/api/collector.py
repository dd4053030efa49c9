"""The enqueue write path: group commit for ``POST /results/enqueue``, and the one
transaction of ``POST /results/batch`` (docs/ARCHITECTURE.md, "The enqueue path").

Both routes judge (and probe) each enqueue themselves, then hand the `Item`\\s to the
`Collector`, which writes them the one way:

- `Collector.place` writes a group of items in **one** transaction (`queue.enqueue_group`:
  per tenant the quota lock and count once, one insert), with one wake-up and one
  events announcement for the whole group, and decides each item's answer (202 new,
  200 identical, 409 conflict, 429 over quota). Items with the same key are judged as
  if sent one after the other (`link`): the first is written, each later one is
  compared with the row the first left (200 identical, 409 different), or shares the
  first one's refusal. The batch route calls it with its items: one request, one group.
- `Collector.submit` is the single enqueue's way in: it queues the item and waits for
  its answer. One task (`Collector.run`, supervised with the API's other tasks) takes
  everything queued as one group (at most `GROUP_CAP`) whenever fewer than
  `IN_FLIGHT` groups are being written. There is no artificial delay: a group is
  whatever arrived while the previous group's transaction was in flight, so a request
  alone is written at once (from its own task: a group of one), and under load the
  quota lock, the statements and the commit's fsync are paid once per group instead
  of once per request. A group of one is one statement (`queue.enqueue_alone`), sent
  from the trio thread on the collector's own connection (`db.Link`: autocommit, no
  thread hop) when that is free, else through the pool.

Failures: when a group's transaction fails with an error about the transaction itself
(a deadlock with another writer, a statement refused for one item:
`queue.failed_alone_may_pass`), each item is written again in its own transaction, so
each request gets the answer it would have got alone; when PostgreSQL did not answer
(down, connection lost) every item of the group gets that error (503), as each would
have alone. Every queued item is answered: when the collector stops, what it had not
taken yet is answered 503. The logs, the metrics and the wake-up of a new row are the
collector's (per job, as before), so a request whose client left still has them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from jobsvc import queue
from jobsvc.announcer import Announcer
from jobsvc.db import Conn, Database, Link
from jobsvc.errors import DatabaseUnavailable, JobsvcError
from jobsvc.metrics import Metrics
from jobsvc.model import Job
from jobsvc.worker.report import log_transition

__all__ = ["GROUP_CAP", "IN_FLIGHT", "Collector", "Item", "link"]

log = logging.getLogger("jobsvc.api")

#: The most single enqueues written in one group (one transaction, one statement per
#: tenant): bounds a group's transaction, hence the wait of the requests behind it.
GROUP_CAP = 256

#: Groups written at the same time by one API process.
IN_FLIGHT = 1


@dataclass(eq=False)
class Item:
    """One enqueue on its way to its answer: ``status`` None until decided."""

    new: queue.NewResult | None = None
    status: int | None = None
    refusal: JobsvcError | None = None  # why it was refused (400, 409, 429 …)
    row: Job | None = None  # the row this item's key has after the insert
    leader: Item | None = None  # the earlier item of the group with the same key
    failure: BaseException | None = None  # its group could not be written: the request's error
    done: trio.Event = field(default_factory=trio.Event)  # set once answered (submit's items)

    @property
    def key(self) -> queue.Key:
        assert self.new is not None
        return (self.new.job_id, self.new.result_file)

    def refuse(self, exc: JobsvcError) -> None:
        from jobsvc.api.app import status_for  # the one status map (app imports this module)

        self.status, self.refusal = status_for(exc), exc


def link(items: Sequence[Item]) -> list[Item]:
    """Mark each judged item whose key an earlier one has (its ``leader``); the leaders,
    the first item of each key, in order. Idempotent."""
    leaders: dict[queue.Key, Item] = {}
    for item in items:
        if item.new is not None:
            key = item.key
            item.leader = leaders.get(key)
            leaders.setdefault(key, item)
    return list(leaders.values())


class Collector:
    """Writes judged enqueues: a given group (`place`) or grouped single ones (`submit`)."""

    def __init__(
        self,
        database: Database,
        announcer: Announcer,
        metrics: Metrics,
        max_queued: int,
        *,
        cap: int = GROUP_CAP,
        in_flight: int = IN_FLIGHT,
        link: Link | None = None,
    ) -> None:
        self._database = database
        self._link = link
        self._announcer = announcer
        self._metrics = metrics
        self._max_queued = max_queued
        self._cap = cap
        self._slots = trio.Semaphore(in_flight)
        self._pending: list[Item] = []
        self._wake = trio.Event()
        self._closed = False
        #: Groups of single enqueues written so far, and the largest (the tests watch them).
        self.groups = 0
        self.largest = 0

    @property
    def pending(self) -> int:
        """Single enqueues waiting for a group."""
        return len(self._pending)

    async def submit(self, new: queue.NewResult) -> tuple[Job, bool]:
        """Write ``new`` with whatever else is pending; ``(job, created)`` as `queue.enqueue`
        answers, or its refusal raised (`Conflict`, `QuotaExceeded`), or the error of its
        group (`DatabaseUnavailable` …).

        Cancelled while it waits, an item not taken into a group yet is withdrawn
        (nothing is written); one already taken is written as if its client were still
        there (logs, metrics, wake-up), and its answer goes to nobody.
        """
        if self._closed:
            raise DatabaseUnavailable("the API is stopping: enqueue again")
        item = Item(new=new)
        if not self._pending:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                pass
            else:
                # Nothing waiting and a slot free: a group of one, written from this
                # request's own task (no hand-over to the collector's task and back:
                # three scheduler passes fewer for a request alone). Cancelled before
                # its statement is sent, nothing is written; once sent, the transaction
                # still ends (`Link.run`, `Database.run`), and so do the logs, metrics
                # and wake-up.
                await self._write_group([item])
                return _outcome(item)
        self._pending.append(item)
        self._wake.set()
        try:
            await item.done.wait()
        finally:
            if not item.done.is_set() and item in self._pending:
                self._pending.remove(item)
        return _outcome(item)

    async def run(self) -> None:
        """Take the pending single enqueues as groups and write them, forever.

        Cancelled, it waits for the groups in flight (a transaction is never abandoned
        halfway, `Database.run`), and answers the items not taken yet with 503.
        """
        self._closed = False
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    while not self._pending:
                        await self._wake.wait()
                        self._wake = trio.Event()
                    await self._slots.acquire()  # meanwhile the pending ones grow into a group
                    if not self._pending:  # withdrawn meanwhile
                        self._slots.release()
                        continue
                    group = self._pending[: self._cap]
                    del self._pending[: self._cap]
                    nursery.start_soon(self._write_group, group)
        finally:
            self._closed = True
            stopping = DatabaseUnavailable("the API is stopping: enqueue again")
            for item in self._pending:
                item.failure = stopping
                item.done.set()
            self._pending.clear()

    async def _write_group(self, group: list[Item]) -> None:
        self.groups += 1
        self.largest = max(self.largest, len(group))
        try:
            await self.place(group, alone_on_failure=True, log_each=True)
        except Exception as exc:  # the group's requests raise it, each its own
            for item in group:
                if item.status is None and item.failure is None:
                    item.failure = exc
        finally:
            self._slots.release()
            stopping = DatabaseUnavailable("the API is stopping: enqueue again")
            for item in group:  # cancelled (shutdown) before its answer: never leave it waiting
                if item.status is None and item.failure is None:
                    item.failure = stopping
                item.done.set()

    async def place(
        self, items: Sequence[Item], *, alone_on_failure: bool = False, log_each: bool = False
    ) -> None:
        """Write the undecided items of ``items`` in one transaction and decide each one's
        answer (items already refused keep theirs; repeats of a key follow their
        leader, `link`).

        A failure raises, unless ``alone_on_failure`` and `queue.failed_alone_may_pass`:
        then each item is written in its own transaction, and an item that fails alone
        too keeps its own error in ``failure``. ``log_each``: one log line per new row
        (the single enqueue's; the batch logs none).
        """
        leaders = link(items)
        todo = [item for item in leaders if item.status is None]
        if todo:
            try:
                await self._write(todo, log_each)
            except Exception as exc:
                if not (alone_on_failure and len(todo) > 1 and queue.failed_alone_may_pass(exc)):
                    raise
                log.warning("a group of %d enqueues failed (%s); writing each alone", len(todo), exc)
                async with trio.open_nursery() as nursery:
                    for item in todo:
                        nursery.start_soon(self._write_alone, item, log_each)
        for item in items:
            leader = item.leader
            if leader is None or item.status is not None:
                continue
            if leader.row is None:
                item.status, item.refusal, item.failure = leader.status, leader.refusal, leader.failure
            else:
                item.row = leader.row
                _compare(item, leader.row)

    async def _write_alone(self, item: Item, log_each: bool) -> None:
        try:
            await self._write([item], log_each)
        except Exception as exc:
            item.failure = exc

    async def _write(self, todo: list[Item], log_each: bool) -> None:
        """One transaction for ``todo`` (keys unique); the wake-up rides on its commit
        when the `Announcer` says so (`Announcer.take_inline`), else it is scheduled."""
        news = [item.new for item in todo if item.new is not None]
        cap = self._max_queued
        inline = self._announcer.take_inline()

        def write(conn: Conn) -> queue.Placed:
            if len(news) == 1:  # a request alone: one statement (it announces a new row)
                return queue.enqueue_alone(conn, news[0], cap, announce=inline)
            placed = queue.enqueue_group(conn, news, cap)
            if inline:
                created = [job.id for job, made in placed.rows.values() if made]
                if created:
                    queue.announce(conn, created, wakeup=True)
            return placed

        if len(news) == 1 and self._link is not None and self._link.free:
            # A request alone: its one statement, a transaction of its own (autocommit),
            # sent from the trio thread on the collector's own connection: one round trip,
            # no thread hop, no pool checkout, no BEGIN or COMMIT (bench/README.md,
            # "Round 5"). The pool's way below (for groups, and while the link is busy)
            # sends the same statement between BEGIN and COMMIT.
            placed = await self._link.run(queue.enqueue_alone_plan(news[0], cap, announce=inline))
        else:
            placed = await self._database.run(write)
        over = {(n.job_id, n.result_file) for n in placed.over}
        created_count = 0
        for item in todo:
            assert item.new is not None
            if item.key in over:
                item.refuse(queue.quota_exceeded(item.new.tenant, cap))
                continue
            item.row, created = placed.rows[item.key]
            if not created:
                _compare(item, item.row)
                continue
            item.status = 202
            if not inline:
                self._announcer.add(item.row.id)
            created_count += 1
            if log_each:
                log_transition(item.row, logger=log)
        if created_count:  # one locked increment per group, not one per new row
            self._metrics.enqueued.inc(created_count)


def _outcome(item: Item) -> tuple[Job, bool]:
    """A single enqueue's answer: ``(job, created)``, or its refusal or failure raised."""
    if item.failure is not None:
        raise item.failure
    if item.refusal is not None:
        raise item.refusal
    assert item.row is not None
    return item.row, item.status == 202


def _compare(item: Item, row: Job) -> None:
    """200 when ``item`` is the request that made ``row``, 409 otherwise."""
    assert item.new is not None
    try:
        queue.check_identical(row, item.new)
        item.status = 200
    except JobsvcError as exc:
        item.refuse(exc)
