"""Open and read the files a user names (config, data, check prompts, a run's status) without ever
blocking and without reading without end.

A FIFO, socket or device is refused from its ``stat`` before it is opened (a FIFO blocks ``open()``
until a writer comes, ``/dev/zero`` never ends); a regular file is opened ``O_NONBLOCK`` (a path
swapped for a FIFO after the check still returns at once) and read to at most a stated limit.
This is the one home of that rule: the dataset readers and the config loader both use it.

Pure helpers: no printing, nothing written, no heavy imports.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
         stat.S_IFBLK: "a block device"}
COPY_FIX = "copy it into a regular file (e.g. `cat SOURCE > FILE`) and use that"


class UnsafeFile(OSError):
    """A path that cannot be read safely: missing, unreadable, a special file, or over its size limit.
    The message is one line naming the path, the reason and the fix."""


def check_regular(path: str | os.PathLike, what: str = "a regular file", fix: str = COPY_FIX,
                  folders: bool = False) -> os.stat_result:
    """The path's stat when it is a regular file (or, with ``folders``, a folder); UnsafeFile otherwise.
    Never opens it."""
    p = Path(path).expanduser()
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise UnsafeFile(f"{p}: no such file{' or folder' if folders else ''}. Fix: check the path.") from None
    except OSError as exc:
        raise UnsafeFile(f"{p}: cannot be read ({exc.strerror or exc}). Fix: check its permissions.") from None
    if stat.S_ISREG(st.st_mode) or folders and stat.S_ISDIR(st.st_mode):
        return st
    if stat.S_ISDIR(st.st_mode):
        raise UnsafeFile(f"{p}: is a folder, not {what}. Fix: point at the file itself.")
    kind = KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
    raise UnsafeFile(f"{p}: is {kind}, not {what}; reading it could block or never end. Fix: {fix}.")


def open_regular(path: str | os.PathLike, what: str = "a regular file", fix: str = COPY_FIX,
                 buffering: int = 1 << 20) -> BinaryIO:
    """Open a regular file for reading (binary) without ever blocking; UnsafeFile for anything else."""
    p = Path(path).expanduser()
    check_regular(p, what, fix)
    try:  # O_NONBLOCK: if the path was swapped for a FIFO since the check, open() still returns at once
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UnsafeFile(f"{p}: cannot be read ({exc.strerror or exc}). Fix: check the file's permissions.") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        check_regular(p, what, fix)  # raises with the kind
        raise UnsafeFile(f"{p}: is not {what}. Fix: {fix}.")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=buffering)


def read_bounded(path: str | os.PathLike, limit: int, what: str = "a regular file", fix: str = COPY_FIX) -> bytes:
    """The whole file, at most ``limit`` bytes of it; UnsafeFile (with the limit) when it holds more."""
    with open_regular(path, what, fix) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFile(f"{Path(path).expanduser()}: is over the {size_text(limit)} limit for {what}; "
                         f"it cannot be one. Fix: check the path.")
    return data


def size_text(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 and n % 2**20 == 0 else f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} bytes"


MAX_YAML_NODES = 100_000  # a config holds ~60 values; a structure this big is not a config


def read_yaml(path: str | os.PathLike, limit: int, what: str = "a YAML file", fix: str = COPY_FIX):
    """The YAML document in `path`, read to at most `limit` bytes (UnsafeFile: one line, never a traceback)."""
    return load_yaml(read_bounded(path, limit, what, fix), str(Path(path).expanduser()))


def load_yaml(data: bytes, source: str):
    """Parse YAML bytes safely and boundedly: aliases (`*name`, with which a few hundred bytes stand for
    billions of values) are refused as they are met, never expanded; so are more than MAX_YAML_NODES
    values, nesting deeper than Python's recursion limit, and bytes that are not UTF-8 text."""
    import yaml

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeFile(f"{source}: not a text file (byte {exc.start} is 0x{data[exc.start]:02x}, not UTF-8). "
                         "Fix: point at a YAML file saved as UTF-8.") from None
    loader = None
    try:
        loader = _bounded_loader()(text)  # the reader checks the characters here
        return loader.get_single_data()
    except yaml.reader.ReaderError as exc:
        raise UnsafeFile(f"{source}: not a text file (a 0x{exc.character:02x} character at position {exc.position}). "
                         "Fix: point at a YAML file.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = clip(str(getattr(exc, "problem", None) or str(exc).splitlines()[0]))
        raise UnsafeFile(f"{source}{line}: not valid YAML ({problem}).") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a constructor's own fault: 5000 digits, month 13...
        raise UnsafeFile(f"{source}: not valid YAML ({clip(str(exc))}).") from None
    except _Refused as exc:
        raise UnsafeFile(f"{source}{f' line {exc.line}' if exc.line else ''}: {exc.reason}.") from None
    except RecursionError:
        raise UnsafeFile(f"{source}: values nested too deep to be a config. Fix: check the file.") from None
    finally:
        if loader is not None:
            loader.dispose()


def clip(value, limit: int = 80) -> str:
    """`value` as quoted in a message: at most `limit` characters (a huge value never reaches stderr)."""
    if not isinstance(value, str):
        import reprlib

        shortener = reprlib.Repr()
        shortener.maxstring = shortener.maxother = limit
        value = shortener.repr(value)
    return value if len(value) <= limit else value[:limit - 3] + "..."


_LOADER = None


class _Refused(Exception):
    def __init__(self, line: int | None, reason: str):
        super().__init__(reason)
        self.line, self.reason = line, reason


def _bounded_loader():
    global _LOADER
    if _LOADER is None:
        import yaml

        class BoundedLoader(yaml.SafeLoader):
            nodes = 0

            def compose_node(self, parent, index):
                if self.check_event(yaml.AliasEvent):
                    raise _Refused(self.peek_event().start_mark.line + 1,
                                   "a YAML alias (*name) is not accepted: one can stand for billions of values, and "
                                   "a config never needs one. Fix: write the value out")
                self.nodes += 1
                if self.nodes > MAX_YAML_NODES:
                    raise _Refused(None, f"more than {MAX_YAML_NODES:,} values: not a config. Fix: check the file")
                return super().compose_node(parent, index)

        _LOADER = BoundedLoader
    return _LOADER
