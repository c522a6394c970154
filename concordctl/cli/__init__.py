"""The ``concordctl`` command line (Typer). Nothing else imports this package.

:func:`main` answers two things before Typer (about 60 ms of imports) is
loaded at all: ``concordctl --version`` and a shell's TAB on a channel, user
or profile name (:func:`concordctl.cli.complete.fast_complete`). Everything
else goes to :func:`concordctl.cli.app.run`.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]


def main() -> None:
    args = sys.argv[1:]
    if args == ["--version"]:
        from concordctl import __version__

        print(f"concordctl {__version__}")
        sys.exit(0)
    if os.environ.get("_CONCORDCTL_COMPLETE"):
        from concordctl.cli.complete import fast_complete

        if fast_complete():
            sys.exit(0)
    if args[:1] == ["send"]:
        # httpx imports its own CLI (click, rich: ~40 ms) when it can: not ours to pay.
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
        from concordctl.cli.quick import try_send

        code = try_send(args[1:])
        if code is not None:
            sys.exit(code)
    from concordctl.cli.app import run

    sys.exit(run(args))
