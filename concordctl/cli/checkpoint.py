"""``tail --checkpoint FILE``: the last chat a tail has seen, kept on disk.

The file is a small JSON object, ``{"chatId": 123, "createdAt": 1700000000000}``,
replaced atomically (write a temporary file beside it, then ``os.replace``),
so a tail killed at any moment leaves either the old or the new checkpoint,
never half of one. A restarted tail passes ``chatId`` to the stream as its
cursor, and the stream recovers every chat sent after it first.

The file must never run ahead of the output: a chat named in it that never
reached stdout is lost for good by a tail killed at that moment. So the tail
notes each chat in memory (:meth:`note`) and writes the file (:meth:`commit`)
only after the flush that carried its line: once per flush, not per event.

That alone is at-least-once: a tail killed after a flush but before the
checkpoint prints those chats again when restarted. When stdout is a
regular file and the output is NDJSON (``tail --json --checkpoint F >>
log.ndjson``), it is exactly once: each save first fsyncs the output and
records its identity and size (``"output": {"dev", "ino", "size"}``); a
restarted tail appending to the same file reads what was written after
that size, drops a torn last line, and moves the cursor past every chat
found there (:meth:`attach_output`). Human output, ``--jq`` and pipes stay
at-least-once.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from concordctl.errors import UsageError

__all__ = ["Checkpoint"]

_OUT = ("dev", "ino", "size")


def _chat_of(line: bytes) -> tuple[int, int] | None:
    """(chat id, createdAt) of an NDJSON ``chat_sent`` line, else None."""
    if b'"chat_sent"' not in line:
        return None
    try:
        event = json.loads(line)
        chat = event["chat"]
        if event.get("type") != "chat_sent":
            return None
        return int(chat["id"]), int(chat.get("createdAt", 0))
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class Checkpoint:
    path: Path
    chat_id: int | None = None
    created_at: int | None = None
    #: The chat noted last is not on disk yet.
    dirty: bool = False
    #: The output file as last saved: {"dev", "ino", "size"}, or None.
    output: dict[str, int] | None = None
    #: stdout's descriptor when it is a regular file of NDJSON (exactly once).
    out_fd: int | None = None

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """The checkpoint in ``path``; an empty one when the file does not exist."""
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise UsageError(f"--checkpoint: cannot read {path}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
            chat_id = data["chatId"]
            created_at = data.get("createdAt")
            if not isinstance(chat_id, int) or isinstance(chat_id, bool) or chat_id < 0:
                raise ValueError(chat_id)
            if created_at is not None and not isinstance(created_at, int):
                raise ValueError(created_at)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError(
                f"--checkpoint: {path} is not a concordctl checkpoint",
                hint="delete it to start from now",
            ) from None
        output = data.get("output")
        if not (isinstance(output, dict) and all(isinstance(output.get(k), int) for k in _OUT)):
            output = None
        return cls(path, chat_id, created_at, output=output)

    def check_writable(self) -> None:
        """Fail now, not at the first chat, when the checkpoint cannot be written."""
        directory = self.path.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise UsageError(
                f"--checkpoint: cannot write {self.path}: {exc.strerror}",
                hint="choose a file in a directory you can write to",
            ) from None
        os.close(fd)
        os.unlink(tmp)

    def attach_output(self, stream: Any = None) -> None:
        """Make saves exactly-once for NDJSON appended to a regular file.

        Call before printing. When stdout is the file this checkpoint saved
        with last time, the chats written after that save are taken as seen.
        """
        import sys

        out = stream if stream is not None else sys.stdout
        try:
            fd = out.fileno()
            st = os.fstat(fd)
        except (AttributeError, ValueError, OSError):
            return
        if not stat.S_ISREG(st.st_mode):
            return
        self.out_fd = fd
        saved = self.output
        if saved is None or (saved["dev"], saved["ino"]) != (st.st_dev, st.st_ino):
            return
        if st.st_size <= saved["size"]:
            return
        # stdout is opened for appending only (``>>``): read it anew through
        # /proc (Linux); where that is missing the guarantee is at-least-once.
        try:
            with open(f"/proc/self/fd/{fd}", "rb") as f:
                f.seek(saved["size"])
                tail = f.read()
        except OSError:
            return
        complete, _, torn = tail.rpartition(b"\n")
        if torn:  # killed in the middle of a write: drop the half line
            os.ftruncate(fd, saved["size"] + len(complete) + (1 if complete else 0))
        for line in complete.split(b"\n"):
            chat = _chat_of(line)
            if chat is not None:
                self.note(*chat)

    def note(self, chat_id: int, created_at: int) -> bool:
        """Record ``chat_id`` in memory if it is newer than the last one.

        Returns whether it was; :meth:`commit` writes it once the output is out.
        """
        if self.chat_id is not None and chat_id <= self.chat_id:
            return False
        self.chat_id = chat_id
        self.created_at = created_at
        self.dirty = True
        return True

    def commit(self) -> None:
        """Write the chat noted last, if it is not on disk yet."""
        if self.dirty:
            self.save()

    def advance(self, chat_id: int, created_at: int) -> None:
        """Record ``chat_id`` if it is newer than the last one, on disk at once."""
        if self.note(chat_id, created_at):
            self.save()

    def save(self) -> None:
        record: dict[str, object] = {"chatId": self.chat_id, "createdAt": self.created_at}
        if self.out_fd is not None:
            # The output first, durable up to here; then the checkpoint naming it.
            try:
                os.fsync(self.out_fd)
                st = os.fstat(self.out_fd)
                record["output"] = {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size}
            except OSError:
                self.out_fd = None
        body = json.dumps(record)
        directory = self.path.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise UsageError(f"--checkpoint: cannot write {self.path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body + "\n")
                if self.out_fd is not None:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise UsageError(f"--checkpoint: cannot write {self.path}: {exc.strerror}") from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.dirty = False
