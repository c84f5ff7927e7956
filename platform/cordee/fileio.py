"""File I/O with cordee's guarantees: atomic writes (a temporary file beside the target, then a
rename: nothing is lost) and bounded reads of small regular files (nothing hangs)."""

from __future__ import annotations

import os
import stat
import tempfile

from cordee.errors import InputError, one_line, shown


def write_atomic(path: str | os.PathLike, data: str | bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data` in one rename; readers see the old file or the new one, never a
    part. Mode 0644 by default (EDFs, env files and build files are read by the user's other
    tools; mkstemp alone would give 0600). Nothing is left behind on failure; the directory must
    exist. Raises OSError."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


MAX_READ_BYTES = 16 << 20  # specs, EDFs, profiles, nccl.conf: a few KB each; 16 MiB is far past any


class ReadError(InputError):
    """A file cordee was given cannot be read as a small regular file: `reason` says why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"{shown(self.path)}: {reason}")


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"))
_KINDS += ((stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_bounded(path: str | os.PathLike, limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or ReadError. Opened non-blocking and
    checked with fstat before any read: a FIFO would block open() and read() for ever, /dev/zero
    never ends, and a name longer than the system allows is a clear error, not an OSError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ReadError(path, f"cannot read: {e.strerror or e}") from None
    except (ValueError, TypeError) as e:  # a NUL byte in the name
        raise ReadError(path, f"cannot read: {e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise ReadError(path, f"cannot read: {kind}, not a regular file")
        data = bytearray()
        while len(data) <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - len(data)))
            if not chunk:
                return bytes(data)
            data += chunk
        raise ReadError(path, f"cannot read: larger than {limit} bytes")
    except OSError as e:
        raise ReadError(path, f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)


def read_toml(path: str, what: str) -> dict:
    """A small TOML file (`what` names it in messages: "profile", "system profile"), parsed; every
    way it can be unreadable or malformed is one InputError naming the file."""
    import tomllib  # deferred: most commands read no TOML

    try:
        return tomllib.loads(read_bounded(path).decode("utf-8"))
    except ReadError as e:
        raise InputError(f"{path}: {what} {e.reason}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {one_line(str(e))}") from None
    except ValueError as e:  # tomllib's int(): an integer of more than 4,300 digits
        raise InputError(f"{path}: TOML value cordee cannot read: {one_line(str(e))[:120]}") from None
    except RecursionError:
        raise InputError(f"{path}: not valid TOML: nested too deeply") from None


def read_json(path: str | os.PathLike, what: str, limit: int = MAX_READ_BYTES):
    """A JSON file (`what` names it in messages: "results file", "config.json"), parsed; every way
    it can be unreadable or malformed is one InputError naming the file."""
    import json  # deferred like tomllib: most commands read no JSON file

    name = shown(os.fspath(path))
    try:
        return json.loads(read_bounded(path, limit).decode("utf-8"))
    except ReadError as e:
        raise InputError(f"{name}: {what} {e.reason}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{name}: {what} is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{name}: {what} is not JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except ValueError as e:  # int() of more than 4,300 digits
        raise InputError(f"{name}: {what} is not JSON cordee can read: {one_line(str(e))[:100]}") from None
    except RecursionError:  # json nests by recursion: "[[[[..." exhausts the stack
        raise InputError(f"{name}: {what} is not JSON cordee can read: nested too deeply") from None
