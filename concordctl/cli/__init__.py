"""The ``concordctl`` command line (Typer). Nothing else imports this package."""

from concordctl.cli.app import main

__all__ = ["main"]
