"""How every ``python -m ...`` entry point reports bad input: one line, no traceback (``--debug`` for it).

Every command's ``if __name__ == "__main__":`` block is ``raise SystemExit(run_cli(main))``. ``main(argv)`` itself
stays an ordinary function that raises (tests and other code call it directly); ``run_cli``:

* removes ``--debug`` from the arguments (any command accepts it, before a ``--`` separator) and then lets every
  error propagate, traceback included;
* otherwise turns an *expected* error into one line ``error: <message>`` on stderr and exit status 2. Expected are
  the errors bad input raises, whose messages name the file, line or key and what was expected: ``ValueError``
  (``ConfigError``, malformed pairs lines, JSON/YAML parse errors), ``OSError`` (missing / unreadable / existing
  files and folders), ``KeyError`` (a key a config or checkpoint lacks), ``RuntimeError`` (a checkpoint that does
  not load or does not match the model, an unavailable device), ``ArithmeticError`` (a non-finite training loss,
  with the checkpoint it saved) and ``ImportError`` (an optional package that is not installed);
* leaves programming errors (``TypeError``, ``AttributeError``, ``IndexError``, ``NameError``, ``AssertionError``,
  ...) and ``KeyboardInterrupt`` alone: those print their traceback, as a bug report needs it;
* returns ``main``'s integer result as the exit status (0 when ``main`` returns something else, e.g. a path).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, List, Optional, Sequence, TextIO

DEBUG_FLAG = "--debug"
EXIT_BAD_INPUT = 2
EXPECTED_ERRORS = (ValueError, OSError, KeyError, RuntimeError, ArithmeticError, ImportError)


def split_debug_flag(argv: Sequence[str]) -> "tuple[List[str], bool]":
    """``argv`` without ``--debug`` (only before a ``--`` separator) and whether it was there."""
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = DEBUG_FLAG in argv[:end]
    return [a for a in argv[:end] if a != DEBUG_FLAG] + argv[end:], debug


def error_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's message without the quotes ``str`` adds)."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        message = error.args[0]
    else:
        message = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in message:
        message = f"{error.filename}: {message}"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "error: " + (" | ".join(lines) if lines else type(error).__name__)


def run_cli(main: Callable[[Optional[List[str]]], Any], argv: Optional[Sequence[str]] = None,
            stderr: Optional[TextIO] = None) -> int:
    """Run ``main(argv)`` (default: ``sys.argv[1:]``) as a command; returns the exit status (see the module doc)."""
    arguments, debug = split_debug_flag(sys.argv[1:] if argv is None else argv)
    if debug:
        result = main(arguments)
    else:
        try:
            result = main(arguments)
        except EXPECTED_ERRORS as error:
            print(error_line(error), file=stderr or sys.stderr, flush=True)
            return EXIT_BAD_INPUT
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
