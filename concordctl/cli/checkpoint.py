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
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from concordctl.errors import UsageError

__all__ = ["Checkpoint"]


@dataclass
class Checkpoint:
    path: Path
    chat_id: int | None = None
    created_at: int | None = None
    #: The chat noted last is not on disk yet.
    dirty: bool = False

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
        return cls(path, chat_id, created_at)

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
        body = json.dumps({"chatId": self.chat_id, "createdAt": self.created_at})
        directory = self.path.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise UsageError(f"--checkpoint: cannot write {self.path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body + "\n")
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
