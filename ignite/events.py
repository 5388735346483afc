"""The training events: the one table that the hook specifications are checked against."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["PeriodicEvent", "TrainingEvents"]


class TrainingEvents(enum.Enum):
    """The 13 moments of a run at which handlers and plugin hooks are called, in firing order.

    ::

        TRAINING_STARTED
          per epoch:
            EPOCH_STARTED
            TRAINING_EPOCH_STARTED
              per batch: TRAINING_ITERATION_STARTED, update, history append,
                         TRAINING_ITERATION_COMPLETED
            TRAINING_EPOCH_COMPLETED
            VALIDATION_STARTING          (only when validation_data was given)
              per batch: VALIDATION_ITERATION_STARTED, update, history append,
                         VALIDATION_ITERATION_COMPLETED
            VALIDATION_COMPLETED         (only when validation_data was given)
            EPOCH_COMPLETED
        TRAINING_COMPLETED
        EXCEPTION_RAISED                 (instead of the rest, on an exception)

    Rules:

    * Every ``*_STARTED``/``*_STARTING`` event that fired is matched by its ``*_COMPLETED``
      event, also after :meth:`Trainer.terminate` and with empty validation data (a validation
      run with zero iterations still fires VALIDATION_STARTING and VALIDATION_COMPLETED).
    * ``terminate()`` ends the run after the iteration in progress: no new iteration,
      training epoch, validation run or epoch starts after it; the scopes already open close
      with their COMPLETED events, down to TRAINING_COMPLETED. Called from a
      TRAINING_ITERATION_* handler it skips that epoch's validation.
    * A SIGTERM received while ``run()`` runs (preemption) stops the run as ``terminate()``
      does, at an iteration all ranks agree on, with ``trainer.preempted`` true from then on;
      after TRAINING_COMPLETED, ``run()`` raises :class:`ignite.Preempted` (exit code 143).
      EXCEPTION_RAISED does not fire for it.
    * On an exception (``KeyboardInterrupt`` included) raised by an update function, a
      handler or a plugin hook, no further regular event fires: EXCEPTION_RAISED fires once
      with the exception, which then propagates unchanged. An exception raised by an
      EXCEPTION_RAISED handler or hook does not stop the others (they close what the run
      opened); once all have run, the first such exception propagates, with the run's
      exception as its context.
    * Plugins wrap ad-hoc handlers: at ``*_STARTED``/``*_STARTING`` events plugin hooks run
      before the handlers; at ``*_COMPLETED`` events and EXCEPTION_RAISED the handlers run
      first. So a plugin has set things up before user code runs, and sees what user code
      computed before it logs, checkpoints or decides. Handlers run in the order they were
      added, those attached with ``every(n)`` included.
    * Plugin hooks run in a declared order, the same whatever order the plugins were
      installed or registered in: hookwrappers outermost, then ``tryfirst``, plain and
      ``trylast`` hooks; within each, by the plugins' ``ignite_phase`` (observe, decide, log,
      checkpoint), then their ``ignite_after``/``ignite_before``, then plugin name (see
      :mod:`ignite.hookspecs`). A hook given a period by its plugin's ``ignite_every`` runs,
      when due, in that same place. On an event where a plugin has a hookwrapper, pluggy's
      own order applies instead (its call takes no order from outside).
    """

    TRAINING_STARTED = "training_started"
    EPOCH_STARTED = "epoch_started"
    TRAINING_EPOCH_STARTED = "training_epoch_started"
    TRAINING_ITERATION_STARTED = "training_iteration_started"
    TRAINING_ITERATION_COMPLETED = "training_iteration_completed"
    TRAINING_EPOCH_COMPLETED = "training_epoch_completed"
    VALIDATION_STARTING = "validation_starting"
    VALIDATION_ITERATION_STARTED = "validation_iteration_started"
    VALIDATION_ITERATION_COMPLETED = "validation_iteration_completed"
    VALIDATION_COMPLETED = "validation_completed"
    EPOCH_COMPLETED = "epoch_completed"
    TRAINING_COMPLETED = "training_completed"
    EXCEPTION_RAISED = "exception_raised"

    @property
    def hook_name(self) -> str:
        """The name of this event's plugin hook, e.g. ``ignite_training_started``."""
        return "ignite_" + self.value

    @property
    def opens_scope(self) -> bool:
        """True for the events at which plugin hooks run before ad-hoc handlers."""
        return self.value.endswith(("_started", "_starting"))

    def every(self, n: int) -> PeriodicEvent:
        """This event, for a handler to be called only when the trainer's counter is a
        multiple of ``n``: ``current_iteration`` for the TRAINING_ITERATION_* events,
        ``current_epoch`` for the epoch and validation-run events. For example
        ``trainer.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED.every(100), log)``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{self.name}.every(n): n must be a positive int; got {n!r}")
        if self not in COUNTER:
            raise ValueError(
                f"{self.name}.every(n): only the training-iteration events (counted by current_iteration) and the "
                "epoch and validation-run events (counted by current_epoch) can be filtered; attach the handler to "
                f"{self.name} itself and filter inside it"
            )
        return PeriodicEvent(self, n)


@dataclass(frozen=True)
class PeriodicEvent:
    """What :meth:`TrainingEvents.every` returns: ``event``, for handlers called every
    ``every``-th time (when the counter is a multiple of it)."""

    event: TrainingEvents
    every: int


#: The events that ``every(n)`` can filter, and the trainer attribute each is counted by.
COUNTER = {
    event: "current_iteration" if event.name.startswith("TRAINING_ITERATION") else "current_epoch"
    for event in TrainingEvents
    if event.name.startswith(("TRAINING_ITERATION", "EPOCH", "TRAINING_EPOCH"))
    or event in (TrainingEvents.VALIDATION_STARTING, TrainingEvents.VALIDATION_COMPLETED)
}
