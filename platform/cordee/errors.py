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
