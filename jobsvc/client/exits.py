"""Exit codes of the client commands, and the one place a `ClientError` becomes one.

Shared with `jobsvc.cli`:

    0    the request succeeded (``watch JOBID``: every result ended Completed)
    1    the API refused the request (its error sentence goes to stderr), the
         watched job ended Failed or Canceled, or ``watch --timeout`` passed
    2    bad usage: a malformed flag or job id, decided before any request
         (`jobsvc.client.arguments`); also the API's 400 to a command that names a
         job (its id or file was malformed)
    3    the API could not be reached, or answered 502/503/504
    130  interrupted (Ctrl-C) before the end; ``watch`` without JOBID exits 0

`command` wraps each command: a `ClientError` becomes one line on stderr and its exit
code. Loading this module imports only the standard library (`ClientError`, with httpx
and pydantic, is imported when a command runs).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "WATCH_EXIT_CODES_HELP",
    "command",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: The epilog of each command's ``--help``.
EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  the API refused the request (its reason is printed on stderr)
  2  bad usage (a malformed flag or job id; also the API's 400 to a command that names a job)
  3  the API could not be reached (or answered 502/503/504)
  130  interrupted (Ctrl-C)
"""
WATCH_EXIT_CODES_HELP = """\
exit codes:
  0  every result of JOBID ended Completed; without JOBID: interrupted, or --timeout
  1  a result ended Failed or Canceled, --timeout passed, or the API refused the request
  2  bad usage (a malformed flag or job id, or the API answered 400 to it)
  3  the API could not be reached (or answered 502/503/504), or the event stream was lost
  130  interrupted (Ctrl-C) while following JOBID
"""


def command(
    run: Callable[[argparse.Namespace], int], *, bad_request: int = EXIT_FAILED
) -> Callable[[argparse.Namespace], int]:
    """Print a `ClientError` as one line on stderr and return its exit code.

    ``bad_request`` is the exit code of the API's 400: `EXIT_USAGE` for the commands
    whose only input is a job id (and file name), as the client's own check of the id
    would have said; `EXIT_FAILED` for ``enqueue``, whose 400 also means an unreachable
    or non-image URL (refused, not misused).
    """

    def run_command(args: argparse.Namespace) -> int:
        from jobsvc.client.core import ClientError  # httpx and pydantic: only when a command runs

        try:
            return run(args)
        except ClientError as exc:
            print(f"jobsvc {args.command_name}: {exc}", file=sys.stderr)
            if exc.unavailable:
                return EXIT_UNAVAILABLE
            return bad_request if exc.status == 400 else EXIT_FAILED
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader went away (`jobsvc list | head`): not an error of ours.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK

    return run_command
