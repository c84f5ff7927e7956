"""Errors that the CLI turns into one clear line and an exit code (ARCHITECTURE.md: exit codes)."""

EXIT_OK = 0
EXIT_WARNING = 1
EXIT_CRITICAL = 2  # bad input or critical failure
EXIT_UNKNOWN = 3  # unknown / timeout


class CordeeError(Exception):
    """Base class: an error the user can act on; printed as one line, never a traceback."""

    exit_code = EXIT_CRITICAL


class InputError(CordeeError):
    """Bad input: environment, arguments, files. Exit 2."""


SHOWN_MAX = 80  # characters of a user's value quoted in a message


def shown(value: object, limit: int = SHOWN_MAX) -> str:
    """A user's value as it may appear in a one-line message: repr() escapes newlines and control
    characters (a value must never split a message or forge a line of its own), long values are
    cut and their length said."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit - 20]!r}... ({len(text)} characters)"


def one_line(message: str) -> str:
    """A message forced onto one line: line breaks and other control characters escaped. The last
    guard before stderr; values should already be quoted with shown()."""
    if message.isprintable():
        return message
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
