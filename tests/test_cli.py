"""``ignite plugins``: status of every plugin, in process, with written distributions."""

from __future__ import annotations

import json

from ignite._cli import main

GOOD = """
    from ignite import hookimpl

    class Plugin:
        @hookimpl
        def ignite_training_started(self, trainer):
            pass

        @hookimpl
        def ignite_epoch_completed(self, trainer):
            pass
"""


def test_statuses(make_distribution, monkeypatch, capsys):
    make_distribution("ignite-good", "1.0", {"good": "good_mod:Plugin"}, "good_mod", GOOD)
    make_distribution("ignite-bad", "2.0", {"bad": "bad_mod:Plugin"}, "bad_mod", "raise ImportError('no gpu lib')\n")
    make_distribution(
        "ignite-idle",
        "3.0",
        {"idle": "idle_mod:Plugin"},
        "idle_mod",
        "from ignite import PluginInactive\nclass Plugin:\n    def __init__(self, dirname=None):\n        raise PluginInactive('needs dirname')\n",
    )
    make_distribution("ignite-off", "4.0", {"off": "off_mod:Plugin"}, "off_mod", GOOD)
    monkeypatch.setenv("IGNITE_DISABLE_PLUGINS", "off")
    assert main(["plugins", "--json"]) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert records["good"]["status"] == "active"
    assert records["good"]["hooks"] == ["ignite_training_started", "ignite_epoch_completed"]
    assert records["bad"]["status"] == "failed" and records["bad"]["reason"] == "failed to import: ImportError: no gpu lib"
    assert records["idle"]["status"] == "inactive" and records["idle"]["reason"] == "needs dirname"
    assert records["off"]["status"] == "disabled"
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert "status: failed: failed to import: ImportError: no gpu lib" in text
    assert "good  (ignite-good 1.0, good_mod:Plugin)" in text
