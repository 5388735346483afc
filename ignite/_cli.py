"""The ``ignite`` command line: ``ignite plugins [--json]``."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__, _plugins


def _plugins_command(as_json: bool) -> int:
    try:
        # Loaded and registered as a Trainer does, so that "active" means a Trainer accepts it.
        records = _plugins.load_plugins(None)
    except _plugins.PluginError as error:  # the environment itself is wrong (a bad variable)
        print(f"ignite plugins: error: {error}", file=sys.stderr)
        return 2
    if as_json:
        json.dump([record.as_dict() for record in records], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not records:
        print(f"No plugins installed (entry-point group {_plugins.ENTRY_POINT_GROUP!r}).")
        return 0
    for record in records:
        status = record.status if not record.reason else f"{record.status}: {record.reason}"
        print(f"{record.name}  ({record.origin}, {record.entry_point})")
        print(f"    status: {status}")
        if record.error is not None:
            print(f"    error:  {record.error}")
        print(f"    hooks:  {', '.join(record.hooks()) or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = argparse.ArgumentParser(prog="ignite", description="Ignite training loop tools.")
    parser.add_argument("--version", action="version", version=f"ignite-trainer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("plugins", help="list every installed plugin, its status and hooks")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    arguments = parser.parse_args(argv)
    return _plugins_command(arguments.json)
