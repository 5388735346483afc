"""The ``ignite`` command line: ``ignite plugins [--json]``."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__, _plugins
from ._config import ProjectConfig
from .events import TrainingEvents


def _plugins_command(as_json: bool) -> int:
    try:
        config = _plugins.project_config()
        unmet = _plugins.required_error(config)
    except _plugins.PluginError as error:  # the project file itself is wrong
        print(f"ignite plugins: error: {error}", file=sys.stderr)
        return 2
    manager = _plugins.new_plugin_manager()
    try:
        # Loaded and registered as a Trainer does, so that "active" means a Trainer accepts it.
        records = _plugins.load_plugins(None, manager, config=config, check_required=False)
    except _plugins.PluginError as error:  # the environment or the project file is wrong
        for problem in (error, unmet):
            if problem is not None:
                print(f"ignite plugins: error: {problem}", file=sys.stderr)
        return 2
    try:
        _plugins.plugin_order({record.name: record.plugin for record in records if record.status == "active"})
        orders: dict[TrainingEvents, list[str]] | None = _plugins.event_orders(manager)
        order_error = None
    except _plugins.PluginError as error:  # declared orders that cannot all hold: a Trainer refuses them
        orders, order_error = None, error
    if as_json:
        # A TOML date or time is no JSON value: it is written as its repr.
        json.dump([record.as_dict() for record in records], sys.stdout, indent=2, default=repr)
        sys.stdout.write("\n")
    else:
        _print_listing(config, records)
        if orders:
            _print_orders(orders, records)
    if order_error is not None:
        print(f"ignite plugins: error: {order_error}", file=sys.stderr)
        return 1
    # Printed after the listing, so that what is installed is in view; the exit status serves CI checks.
    if unmet is not None:
        print(f"ignite plugins: error: {unmet}", file=sys.stderr)
        return 1
    return 0


def _print_listing(config: ProjectConfig, records: list[_plugins.PluginRecord]) -> None:
    if config.path is not None:
        print(f"Configuration: {config.where()} ({config.found_by})")
    else:
        print(f"Configuration: {config.found_by}")
    if not records:
        print(f"No plugins installed (entry-point group {_plugins.ENTRY_POINT_GROUP!r}).")
        return
    for record in records:
        status = record.status if not record.reason else f"{record.status}: {record.reason}"
        print(f"{record.name}  ({record.origin}, {record.entry_point})")
        print(f"    status: {status}")
        if record.error is not None:
            print(f"    error:  {record.error}")
        if record.options:
            print(f"    options: {', '.join(f'{key}={value!r}' for key, value in record.options.items())}")
        periods = record.periods()
        hooks = [f"{hook} every {periods[hook]}" if hook in periods else hook for hook in record.hooks()]
        print(f"    hooks:  {', '.join(hooks) or '-'}")
        if record.plugin is not None:
            print(f"    phase:  {_plugins.phase_of(record.plugin)}")


def _print_orders(orders: dict[TrainingEvents, list[str]], records: list[_plugins.PluginRecord]) -> None:
    # Plugins wrap handlers: at *_STARTED events before the trainer's handlers, else after them.
    print("Order of plugin hooks per event (phases: " + ", ".join(_plugins.PHASES) + "):")
    periods = {record.name: record.periods() for record in records}
    for event, names in orders.items():
        shown = [
            f"{name} (every {periods[name][event.hook_name]})" if event.hook_name in periods.get(name, {}) else name
            for name in names
        ]
        where = "before handlers" if event.opens_scope else "after handlers"
        print(f"    {event.name:<31} {', '.join(shown)}  ({where})")


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = argparse.ArgumentParser(prog="ignite", description="Ignite training loop tools.")
    parser.add_argument("--version", action="version", version=f"ignite-trainer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser(
        "plugins", help="name the project file used; list every installed plugin, its status, options and hooks"
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    arguments = parser.parse_args(argv)
    return _plugins_command(arguments.json)
