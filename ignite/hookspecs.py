"""The plugin contract: one hook per :class:`~ignite.events.TrainingEvents` member.

A plugin is a module or a class with functions or methods named like the hooks below and
marked with ``@ignite.hookimpl``. Each takes the arguments of its spec, or any subset of
them, by name. Plugins are found through the ``ignite.plugins`` entry-point group; a class
is instantiated once per :class:`~ignite.trainer.Trainer` with that plugin's options::

    from ignite import hookimpl

    class PrintEpochs:
        def __init__(self, prefix: str = ">>") -> None:   # options are keyword arguments
            self.prefix = prefix

        @hookimpl
        def ignite_epoch_completed(self, trainer):
            print(self.prefix, trainer.current_epoch)

A plugin class may also define:

* ``state_dict()`` / ``load_state_dict(state)``: saved and restored with the trainer's.
* raise :class:`ignite.PluginInactive` from ``__init__`` when it lacks what it needs (an
  optimizer, a folder): it is then not registered and says why in one log line.

Periods. A hook of an event with a counter (the TRAINING_ITERATION_* events count
``current_iteration``; the epoch, training-epoch and validation-run events ``current_epoch``)
runs only every n-th time when the plugin says so in ``ignite_every()``, read once at
registration::

    def ignite_every(self) -> dict[str, int | None]:
        return {"ignite_training_iteration_completed": self.log_every}  # when the count % n == 0

n = 1 (or the hook left out) runs it every time; None or 0 leaves the hook unregistered
(an option that turns it off). The iterations between cost one comparison, no call; the
hook is profiled, named on failure and listed (``ignite plugins``) like any other, and runs
in its place in the order below. ``trainer.set_period(plugin, hook_name, n)`` changes the
period from the next time its event fires (None pauses it), for a plugin that adapts it.

Order. At each event the plugins' hooks run by phase, a class attribute
``ignite_phase`` (default ``"log"``)::

    "observe"     compute what the others read (metrics)
    "decide"      controllers: early stopping, LR reduction
    "log"         observers: TensorBoard, Visdom, the progress bar
    "checkpoint"  save, after the controllers decided and the loggers wrote

then by ``ignite_after = ("early_stopping",)`` / ``ignite_before = (...)`` (plugin names;
names not installed are ignored), then by plugin name: never by install order. A cycle, or a
declaration against the phases, is a :class:`ignite.PluginError` naming the plugins at
registration. ``tryfirst``/``trylast`` on a hookimpl still put that one hook before/after
the others of its event. A hookwrapper needs pluggy's own call, which takes no order from
outside: on an event where a plugin has one, pluggy orders that event's hooks (``tryfirst``/
``trylast``, then the last registered first); periods still apply. ``ignite plugins`` prints
the resolved order per event.

``__init__`` should only check options: open files and connections at TRAINING_STARTED, so
that ``ignite plugins`` can construct every plugin cheaply to report its status.

The order in which events fire, and in which handlers and hooks run for one event, is given
in the :class:`~ignite.events.TrainingEvents` docstring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from .events import TrainingEvents

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("ignite")
hookimpl = pluggy.HookimplMarker("ignite")


@hookspec
def ignite_training_started(trainer: Trainer) -> None:
    """Once, at the start of ``run()``, before the first epoch (open writers, load state here)."""


@hookspec
def ignite_epoch_started(trainer: Trainer) -> None:
    """At the start of each epoch; ``trainer.current_epoch`` is already its 1-based number."""


@hookspec
def ignite_training_epoch_started(trainer: Trainer) -> None:
    """Before the first training batch of an epoch."""


@hookspec
def ignite_training_iteration_started(trainer: Trainer) -> None:
    """Before each training update. Runs once per batch: keep it cheap."""


@hookspec
def ignite_training_iteration_completed(trainer: Trainer) -> None:
    """After each training update; ``trainer.training_history[-1]`` is its output."""


@hookspec
def ignite_training_epoch_completed(trainer: Trainer) -> None:
    """After the last training batch of an epoch; ``training_history.run()`` holds its outputs."""


@hookspec
def ignite_validation_starting(trainer: Trainer) -> None:
    """Before a validation run (only when the trainer has validation data)."""


@hookspec
def ignite_validation_iteration_started(trainer: Trainer) -> None:
    """Before each validation update."""


@hookspec
def ignite_validation_iteration_completed(trainer: Trainer) -> None:
    """After each validation update; ``trainer.validation_history[-1]`` is its output."""


@hookspec
def ignite_validation_completed(trainer: Trainer) -> None:
    """After a validation run; ``validation_history.run_mean()`` is its mean."""


@hookspec
def ignite_epoch_completed(trainer: Trainer) -> None:
    """At the end of each epoch, after its validation run."""


@hookspec
def ignite_training_completed(trainer: Trainer) -> None:
    """Once, at the end of a run that ended normally or by ``terminate()`` (flush, close here)."""


@hookspec
def ignite_exception_raised(trainer: Trainer, exception: BaseException) -> None:
    """Once, when the run ends with an exception, before it propagates (close, save here)."""


def _check_against_events() -> None:
    specs = {name for name in globals() if name.startswith("ignite_")}
    events = {event.hook_name for event in TrainingEvents}
    if specs != events:  # pragma: no cover - guards edits to this file
        raise ImportError(
            f"ignite.hookspecs and TrainingEvents disagree: specs without an event {sorted(specs - events)}, "
            f"events without a spec {sorted(events - specs)}"
        )


_check_against_events()
