"""Shared start-up of the command-line tools: logging, and errors printed without a traceback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from perlclip.errors import PerlclipError
from perlclip.logs import setup_console_logging

logger = logging.getLogger("perlclip.tools")

# Errors caused by input: printed as one line. Set PERLCLIP_DEBUG=1 to see their tracebacks.
USER_ERRORS = (PerlclipError, ValueError, FileNotFoundError)


def user_message(error: BaseException) -> str:
    """Return the error's message without the worker traceback PyTorch's DataLoader puts around it.

    An exception raised in a loader worker is raised again in the main process with the worker's
    whole traceback as its message; its last line is the original message.
    """
    message = str(error)
    if message.startswith("Caught ") and "Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        prefix = f"{type(error).__module__}.{type(error).__name__}: "
        return last[len(prefix):] if last.startswith(prefix) else last
    return message


def run_main(main: Callable[[], int | None]) -> None:
    """Run a tool's `main`, turning input errors into a message and exit status 2."""
    setup_console_logging()
    try:
        status = main()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as error:
        if os.environ.get("PERLCLIP_DEBUG"):
            raise
        print(f"error: {user_message(error)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
