"""The issue's targets, checked against the medians of this run."""

from __future__ import annotations

from bench.report import Results, Row

#: Memory allowance per job in flight (issue 5: concurrency x 1 MiB).
MIB_PER_SLOT = 1.0


def _rows(results: Results, bench: str, prefix: str, metric: str) -> list[Row]:
    return [r for r in results.rows(bench) if r.label.startswith(prefix) and r.metric == metric and r.values]


def _best(rows: list[Row]) -> Row | None:
    return max(rows, key=lambda r: r.median, default=None)


def _peak_rss(results: Results, size: str, where: str) -> Row | None:
    """The memory benchmark's peak-RSS row for ``size`` images (``"10 KB"``, ``"20 MB"``) into ``where``."""
    rows = _rows(results, "memory", "", "peak RSS")
    return next((r for r in rows if r.label.endswith(f"{size} → {where}")), None)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def evaluate(results: Results) -> list[list[str]]:
    out: list[list[str]] = []
    # Default settings only: the lever rows (note set) show what a setting buys, apart.
    ours = _best([r for r in _rows(results, "throughput", "jobsvc 1 proc", "no-op") if not r.note])
    pgq_psycopg = _best(_rows(results, "throughput", "pgqueuer-psycopg", "no-op"))
    if ours and pgq_psycopg:
        ratio = ours.median / pgq_psycopg.median
        out.append(
            [
                "no-op throughput ≥ 3x pgqueuer on psycopg",
                f"{ours.median:,.0f} / {pgq_psycopg.median:,.0f} = {ratio:.2f}x",
                _verdict(ratio >= 3),
            ]
        )
    ceiling = next((r for r in results.rows("ceiling") if r.note == "our claim size" and r.values), None)
    if ours and ceiling:
        share = ours.median / ceiling.median * 100
        out.append(
            [
                "≥ 50 % of the pgbench ceiling at our batch size",
                f"{ours.median:,.0f} / {ceiling.label} {ceiling.median:,.0f} = {share:.0f} %",
                _verdict(share >= 50),
            ]
        )
    p50 = results.get("pickup", "jobsvc", "p50")
    p99 = results.get("pickup", "jobsvc", "p99")
    if p50 and p99 and p50.values:
        out.append(["pickup p50 ≤ 2 ms", f"{p50.median:.2f} ms", _verdict(p50.median <= 2)])
        out.append(["pickup p99 ≤ 10 ms", f"{p99.median:.2f} ms", _verdict(p99.median <= 10)])
    cancel = results.get("cancel", "jobsvc", "p50")
    if cancel and cancel.values:
        out.append(["cancel p50 ≤ 50 ms", f"{cancel.median:.1f} ms", _verdict(cancel.median <= 50)])
    for client in ("raw", "httpx"):
        row = results.get("http", f"api, probe off, {client} client", "throughput")
        if row and row.values:
            out.append(
                [
                    f"enqueue ≥ 2,000 req/s per API process, probe off ({client} client)",
                    f"{row.median:,.0f} req/s",
                    _verdict(row.median >= 2000),
                ]
            )
    out += http_targets(results)
    out += pipeline_targets(results)
    out += worker_targets(results)
    for where in ("file", "moto S3"):
        small = _peak_rss(results, "10 KB", where)
        big = _peak_rss(results, "20 MB", where)
        if small and big:
            from bench.memory import CONCURRENCY

            limit = small.median * 1.10 + CONCURRENCY * MIB_PER_SLOT
            out.append(
                [
                    f"peak RSS, 20 MB images ≤ 1.10 x 10 KB run + {CONCURRENCY} MiB ({where})",
                    f"{big.median:.0f} MiB vs limit {limit:.0f} MiB (10 KB run {small.median:.0f} MiB)",
                    _verdict(big.median <= limit),
                ]
            )
    return out


def http_targets(results: Results) -> list[list[str]]:
    """Issue 14: the API against the framework's floor measured in the same run."""
    out: list[list[str]] = []
    pickup = results.get("pickup", "jobsvc through the API", "p50")
    if pickup and pickup.values:
        out.append(
            ["pickup through the API p50 ≤ 3 ms", f"{pickup.median:.2f} ms", _verdict(pickup.median <= 3)]
        )
    one = results.get("http", "api, probe off, one request at a time", "p50")
    floor_one = results.get("http", "floor, one request at a time", "p50")
    if one and one.values:
        out.append(["single enqueue p50 ≤ 3 ms", f"{one.median:.2f} ms", _verdict(one.median <= 3)])
        if floor_one and floor_one.values:
            ratio = one.median / floor_one.median
            out.append(
                [
                    "single enqueue p50 ≤ 2x the floor route's",
                    f"{one.median:.2f} / {floor_one.median:.2f} ms = {ratio:.2f}x",
                    _verdict(ratio <= 2),
                ]
            )
    rate = results.get("http", "api, probe off, raw client", "throughput")
    floor_rate = results.get("http", "floor (bare QuartTrio JSON POST), raw client", "throughput")
    if rate and rate.values:
        out.append(
            [
                "single enqueues ≥ 1,000 req/s per API process",
                f"{rate.median:,.0f} req/s",
                _verdict(rate.median >= 1000),
            ]
        )
        if floor_rate and floor_rate.values:
            share = rate.median / floor_rate.median * 100
            out.append(
                [
                    "single enqueues ≥ 50 % of the floor's JSON POST rate",
                    f"{rate.median:,.0f} / {floor_rate.median:,.0f} = {share:.0f} %",
                    _verdict(share >= 50),
                ]
            )
    batch = results.get("batch", "api, batches of 1,000", "throughput")
    single = results.get("batch", "api, single enqueues", "throughput")
    if batch and batch.values:
        out.append(
            [
                "batch ≥ 10,000 jobs/s through one API process",
                f"{batch.median:,.0f} jobs/s",
                _verdict(batch.median >= 10_000),
            ]
        )
        if single and single.values:
            ratio = batch.median / single.median
            out.append(
                [
                    "batch ≥ 10x the single rate",
                    f"{batch.median:,.0f} / {single.median:,.0f} = {ratio:.1f}x",
                    _verdict(ratio >= 10),
                ]
            )
    return out


#: Issue 14's baseline: small images → file storage, one worker, before round 2.
PIPELINE_BASELINE = 237.0
#: Issue 14: peak RSS of a worker with 20 MB images, either storage.
PEAK_RSS_LIMIT = 150.0


def pipeline_targets(results: Results) -> list[list[str]]:
    """Issue 14: the image pipeline against its baseline and its neighbours' own ceilings."""
    out: list[list[str]] = []
    small = "small (70 B PNG)"
    to_file = results.get("pipeline", f"{small} → file", "1 worker")
    get_ceiling = results.get("pipeline", f"{small}: image server GET ceiling", "bare GETs")
    if to_file and to_file.values:
        ratio = to_file.median / PIPELINE_BASELINE
        beside = ""
        if get_ceiling and get_ceiling.values:
            share = to_file.median / get_ceiling.median * 100
            beside = f"; image server ceiling {get_ceiling.median:,.0f}/s ({share:.0f} % of it)"
        noop = results.get("pipeline", "no-op handler (the queue alone)", "1 worker")
        if noop and noop.values:  # the machine's state: the same jobs with no download at all
            beside += f"; no-op handler {noop.median:,.0f} jobs/s in this run"
        out.append(
            [
                f"small → file ≥ 2x {PIPELINE_BASELINE:.0f}/s (≥ 500/s), per worker",
                f"{to_file.median:,.0f}/s = {ratio:.2f}x{beside}",
                _verdict(to_file.median >= 500),
            ]
        )
    to_s3 = results.get("pipeline", f"{small} → moto S3", "1 worker")
    put_ceiling = results.get("pipeline", f"{small}: moto PUT ceiling", "bare boto3 PUTs")
    if to_s3 and to_s3.values and put_ceiling and put_ceiling.values:
        share = to_s3.median / put_ceiling.median * 100
        out.append(
            [
                "small → S3 ≥ 80 % of moto's bare PUT rate (same concurrency and size)",
                f"{to_s3.median:,.0f} / {put_ceiling.median:,.0f} = {share:.0f} %",
                _verdict(share >= 80),
            ]
        )
    for where in ("file", "moto S3"):
        big = _peak_rss(results, "20 MB", where)
        if big:
            out.append(
                [
                    f"peak RSS, 20 MB images ≤ {PEAK_RSS_LIMIT:.0f} MiB ({where})",
                    f"{big.median:.0f} MiB",
                    _verdict(big.median <= PEAK_RSS_LIMIT),
                ]
            )
    return out


def worker_targets(results: Results) -> list[list[str]]:
    """Issue 14: the worker against pgqueuer on asyncpg + uvloop and pgbench, in the same run."""
    out: list[list[str]] = []
    mine = [r for r in _rows(results, "throughput", "jobsvc", "no-op") if not r.note]
    one = _best([r for r in mine if r.label.startswith("jobsvc 1 proc")])
    fastest = _best(mine)
    pgq = _best(_rows(results, "throughput", "pgqueuer-asyncpg", "no-op"))
    if one and pgq:
        ratio = one.median / pgq.median
        out.append(
            [
                "one worker process ≥ 1x pgqueuer-asyncpg+uvloop (stretch 2x)",
                f"{one.label} {one.median:,.0f} / {pgq.median:,.0f} = {ratio:.2f}x",
                _verdict(ratio >= 1) + (" (stretch met)" if ratio >= 2 else ""),
            ]
        )
    ceiling = next((r for r in results.rows("ceiling") if r.note == "our claim size" and r.values), None)
    if fastest and ceiling:
        share = fastest.median / ceiling.median * 100
        out.append(
            [
                "≥ 50 % of the pgbench ceiling at our batch size, best process count",
                f"{fastest.label} {fastest.median:,.0f} / {ceiling.label} {ceiling.median:,.0f}"
                f" = {share:.0f} %",
                _verdict(share >= 50),
            ]
        )
    ours = results.get("pickup", "jobsvc", "p50")
    peers = [
        r
        for r in results.rows("pickup")
        if r.metric == "p50" and r.values and not r.label.startswith("jobsvc")
    ]
    peer = min(peers, key=lambda r: r.median, default=None)
    if ours and ours.values and peer:
        ratio = ours.median / peer.median
        out.append(
            [
                "pickup direct p50 ≤ the fastest peer's p50",
                f"{ours.median:.2f} / {peer.label} {peer.median:.2f} ms = {ratio:.2f}x",
                _verdict(ours.median <= peer.median),
            ]
        )
    return out
