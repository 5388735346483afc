"""MLflow plugin for Ignite: the run's params and numbers in an MLflow tracking server.

Installed, it is active in every :class:`ignite.Trainer` (disable it with
``Trainer(..., plugins={"mlflow": False})``). On rank 0 only, it opens one MLflow run per
trainer (a trainer that runs again, or a run resumed from a checkpoint, continues the same MLflow
run) in the store at ``tracking_uri`` (``$MLFLOW_TRACKING_URI``, else MLflow's default: the
SQLite file ``mlflow.db`` in the working directory) and logs, all with the step
``trainer.current_iteration``:

* params: the plugin's options (``ignite.mlflow.<option>``) and the user's ``params``;
* tags: ``ignite.version`` and ``ignite.mlflow.version``;
* ``training/iteration[/<key>]``: the training output every ``every_iterations`` iterations;
* ``training/epoch_mean[/<key>]``, ``validation/mean[/<key>]``: each epoch's means;
* ``metrics/<name>``: :attr:`ignite.Trainer.metrics` at each epoch's end;
* ``lr[/...]``: the learning rates of ``optimizer``, as the epoch's last update used them.

The training thread only appends to a queue; one daemon thread per ``run()`` sends the queue to
MLflow with ``MlflowClient.log_batch`` every :data:`SEND_PERIOD_SECS`. A store that cannot be
reached gives one warning on ``ignite.mlflow``, and training goes on.
"""

from __future__ import annotations

import collections
import logging
import os
import posixpath
import re
import threading
import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ignite import hookimpl
from ignite.distributed import is_main_process
from ignite.history import scalars_of
from ignite.monitor import check_optimizer, check_period, check_seconds, epoch_means, learning_rates, tag

if TYPE_CHECKING:
    from ignite import Trainer

__all__ = ["DEFAULT_EVERY_ITERATIONS", "SEND_PERIOD_SECS", "MLflowLogger"]

logger = logging.getLogger("ignite.mlflow")

#: As the TensorBoard plugin: a logged iteration only keeps its output (measurements in README.md).
DEFAULT_EVERY_ITERATIONS = 100

#: Seconds between two sends of the background thread: each request costs this process CPU, so
#: what was queued meanwhile goes out together.
SEND_PERIOD_SECS = 1.0

#: Name of the background threads.
THREAD_NAME = "ignite-mlflow"

#: MLflow's limits on one ``log_batch`` request.
_METRICS_PER_BATCH = 1000
_PARAMS_PER_BATCH = 100
#: MLflow's limits on a param or metric name (its length and characters), and on a param's value.
_MAX_KEY = 250
_KEY = re.compile(r"^[\w\-. /:]+$")
_MAX_PARAM_VALUE = 6000
#: The prefix of the params that record this plugin's own options.
_OPTION_PREFIX = "ignite.mlflow."

#: What the training thread queues: ("output", step, wall time, update output) for a logged
#: iteration, ("values", step, wall time, {name: number}) for the per-epoch numbers.
_Item = tuple[str, int, float, Any]


def _distribution_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:  # imported from a source tree, not installed
        return "unknown"


def _name_problem(name: str) -> str | None:
    """Why MLflow would refuse ``name`` as a param or metric name, or None."""
    if len(name) > _MAX_KEY or not _KEY.match(name):
        return f"at most {_MAX_KEY} letters, digits, '_', '-', '.', ' ', ':' or '/'"
    normal = posixpath.normpath(name)
    if normal != name or normal == "." or normal.startswith(("..", "/")):
        return "a name must be a normalized relative path ('a/b', not '/a', 'a//b' or 'a/../b')"
    return None


def _flat_params(params: Mapping[Any, Any], prefix: str = "") -> dict[str, str]:
    """``params`` as MLflow params: nested mappings joined with ``.``, values as ``str()``;
    a key or value MLflow would refuse raises ValueError naming it."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"mlflow option params: keys must be non-empty strings; got {key!r}")
        name = prefix + key
        if isinstance(value, Mapping):
            flat.update(_flat_params(value, name + "."))
            continue
        problem = _name_problem(name)
        if problem is not None:
            raise ValueError(f"mlflow option params: MLflow refuses the param name {name!r}: {problem}")
        if name.startswith(_OPTION_PREFIX):
            raise ValueError(f"mlflow option params: {name!r}: names starting {_OPTION_PREFIX!r} are the plugin's own")
        text = str(value)
        if len(text) > _MAX_PARAM_VALUE:
            raise ValueError(
                f"mlflow option params: the value of {name!r} is {len(text)} characters once str()'d; MLflow keeps "
                f"at most {_MAX_PARAM_VALUE}: log a shorter summary of it"
            )
        flat[name] = text
    return flat


def _optional_name(option: str, value: Any, example: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"mlflow option {option} must be a non-empty string or None, e.g. {example!r}; got {value!r}")
    return value


class MLflowLogger:
    """Log the run's params and numbers to MLflow, from a background thread.

    Args:
        tracking_uri: where MLflow keeps runs: a server (``http://host:5000``) or a database
            (``sqlite:///mlflow.db``). None: ``$MLFLOW_TRACKING_URI``, else MLflow's default,
            ``mlflow.db`` in the working directory (read with ``mlflow ui`` there).
        experiment: the experiment's name, created when missing; None:
            ``$MLFLOW_EXPERIMENT_NAME``, else MLflow's "Default".
        run_name: the new run's name (None: one MLflow makes up). A resumed run keeps its name.
        params: the user's hyperparameters, logged as params (nested dicts as ``a.b``, values
            as ``str()``).
        every_iterations: log the training output every this many iterations (a positive
            int); the iterations in between cost nothing.
        optimizer: a torch optimizer, or a dict or list of them, whose learning rates are
            logged once per epoch (``lr``, ``lr/<group>``, ``lr/<name>/<group>``).
        flush_timeout_secs: at the end of a run, wait at most this long for the queued points
            to be sent and the run to be ended; also the longest a checkpoint's
            ``state_dict()`` waits for the run to be created (once per ``run()``).

    Attributes:
        run_id: the MLflow run's id (None until the background thread created or found it,
            and on ranks other than 0).
    """

    #: Among plugins (ignite.hookspecs): after the controllers and metrics, before the checkpoint.
    ignite_phase = "log"

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        every_iterations: int = DEFAULT_EVERY_ITERATIONS,
        optimizer: Any = None,
        flush_timeout_secs: float = 30.0,
    ) -> None:
        self.tracking_uri = _optional_name("tracking_uri", tracking_uri, "http://127.0.0.1:5000")
        self.experiment = _optional_name("experiment", experiment, "digits")
        self.run_name = _optional_name("run_name", run_name, "baseline")
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"mlflow option params must be a dict of name to value; got {type(params).__name__}")
        self.params = _flat_params(params or {})
        check_period("mlflow", "every_iterations", every_iterations)
        self.flush_timeout_secs = check_seconds("mlflow", "flush_timeout_secs", flush_timeout_secs, zero=True)
        if optimizer is not None:
            check_optimizer("mlflow", optimizer)
        self.every_iterations = every_iterations
        self.optimizer = optimizer
        self.run_id: str | None = None
        # Set by load_state_dict: the next run() continues run_id, whose points past the
        # checkpoint are replayed and must not be logged twice.
        self._resumed = False
        self._sender: _Sender | None = None
        self._previous: threading.Thread | None = None  # the last run()'s thread, maybe still sending
        self._epoch_lrs: dict[str, float] | None = None

    def option_params(self) -> dict[str, str]:
        """The plugin's options as MLflow logs them (``ignite.mlflow.<option>``)."""
        options: dict[str, Any] = {
            "every_iterations": self.every_iterations,
            "flush_timeout_secs": self.flush_timeout_secs,
            "experiment": self.experiment,
            "run_name": self.run_name,
        }
        optimizer = self.optimizer
        if optimizer is not None:
            if isinstance(optimizer, dict):
                optimizer = list(optimizer.values())
            elif not isinstance(optimizer, (list, tuple)):
                optimizer = [optimizer]
            options["optimizer"] = ",".join(type(one).__name__ for one in optimizer)
        return {_OPTION_PREFIX + name: str(value) for name, value in options.items() if value is not None}

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``{"run_id": ...}``: a resumed trainer continues this MLflow run. While the run is
        being created, waits for it at most ``flush_timeout_secs``, once per ``run()``: a
        server that does not answer stalls one checkpoint, not each."""
        sender = self._sender
        if sender is not None and sender.thread.is_alive() and not sender.waited:
            sender.waited = True
            if not sender.opened.wait(self.flush_timeout_secs):
                sender.warn(
                    "MLflow at %s has not created the run within flush_timeout_secs=%g: this checkpoint, and those "
                    "until it is created, hold no MLflow run id (resumed from them, training logs to a new MLflow "
                    "run). Training is not affected.",
                    sender.uri,
                    self.flush_timeout_secs,
                )
        return {"run_id": self.run_id}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the MLflow run of ``state`` at the next ``run()``, skipping the points it
        already holds (a resumed run replays those after its checkpoint, bit for bit)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"mlflow plugin state must be a dict {{'run_id': ...}}; got {type(state).__name__}")
        run_id = state.get("run_id")
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise ValueError(f"mlflow plugin state: run_id must be a non-empty string or None; got {run_id!r}")
        self.run_id = run_id
        self._resumed = run_id is not None

    # -- opening and closing --------------------------------------------------------------

    @hookimpl
    def ignite_training_started(self, trainer: Trainer) -> None:
        """Start this run's background thread (rank 0 only), which creates or continues the
        MLflow run. (The checkpoint plugin's resume runs before, ``tryfirst``.)"""
        if not is_main_process():
            return
        resumed, self._resumed = self._resumed, False
        self._sender = _Sender(self, resumed, self._previous)
        self._previous = self._sender.thread
        self._sender.thread.start()

    @hookimpl
    def ignite_training_completed(self, trainer: Trainer) -> None:
        """Send what is queued and end the MLflow run as FINISHED (bounded wait)."""
        self._close("FINISHED")

    @hookimpl
    def ignite_exception_raised(self, trainer: Trainer, exception: BaseException) -> None:
        """End the MLflow run as KILLED (KeyboardInterrupt) or FAILED, after sending what is
        queued (bounded wait); never raises, so that the run's own exception propagates."""
        try:
            self._close("KILLED" if isinstance(exception, KeyboardInterrupt) else "FAILED")
        except Exception:  # pragma: no cover - _close only joins a thread and logs
            logger.exception("Could not end the MLflow run %s", self.run_id)

    def _close(self, status: str) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.stop(status, self.flush_timeout_secs)

    def _queue(self, kind: str, step: int, value: Any) -> None:
        sender = self._sender
        if sender is not None and not sender.quiet:
            sender.items.append((kind, step, time.time(), value))  # deque.append: atomic, no wait

    # -- series ---------------------------------------------------------------------------

    def ignite_every(self) -> dict[str, int | None]:
        """The iteration hook runs every ``every_iterations`` iterations: those between cost nothing."""
        return {"ignite_training_iteration_completed": self.every_iterations}

    @hookimpl
    def ignite_training_iteration_completed(self, trainer: Trainer) -> None:
        """Queue the training output (read later, on the background thread)."""
        self._queue("output", trainer.current_iteration, trainer.training_history[-1])

    @hookimpl
    def ignite_epoch_started(self, trainer: Trainer) -> None:
        """Forget the previous epoch's learning rates."""
        self._epoch_lrs = None

    @hookimpl
    def ignite_training_epoch_completed(self, trainer: Trainer) -> None:
        """Read the learning rates the epoch's last update used (before an end-of-epoch
        scheduler step changes them)."""
        if self.optimizer is not None and self._sender is not None:
            self._epoch_lrs = learning_rates(self.optimizer)

    @hookimpl
    def ignite_validation_completed(self, trainer: Trainer) -> None:
        """Queue the validation means (a collective under a process group: every rank computes them)."""
        means = epoch_means(trainer, validation=True)
        self._queue("values", trainer.current_iteration, {tag("validation/mean", key): v for key, v in means.items()})

    @hookimpl
    def ignite_epoch_completed(self, trainer: Trainer) -> None:
        """Queue the epoch's training means, ``trainer.metrics`` and learning rates (the
        means are a collective under a process group: every rank computes them)."""
        means = epoch_means(trainer)
        if self._sender is None:
            return
        values = {tag("training/epoch_mean", key): value for key, value in means.items()}
        values.update({f"metrics/{name}": value for name, value in trainer.metrics.items()})
        if self.optimizer is not None:
            # Resumed after its training part, an epoch reads the rates at its end instead.
            values.update(self._epoch_lrs if self._epoch_lrs is not None else learning_rates(self.optimizer))
        self._queue("values", trainer.current_iteration, values)


class _Sender:
    """One ``run()``'s queue of points and the daemon thread that sends them to MLflow."""

    def __init__(self, plugin: MLflowLogger, resumed: bool, previous: threading.Thread | None) -> None:
        self.plugin = plugin
        self.resumed = resumed
        self.previous = previous
        # The training thread only appends here; the sender pops from the other end.
        self.items: collections.deque[_Item] = collections.deque()
        self.wake = threading.Event()
        self.opened = threading.Event()  # set once the run exists (or could not be created)
        self.waited = False  # a state_dict() waited for `opened` already
        # True once the sender gave up: the training thread stops queueing.
        self.quiet = False
        self.sent = 0  # metric points logged
        self.run_id = ""  # the MLflow run, once created or found
        self.uri = plugin.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "MLflow's default store"
        self._status: str | None = None  # set by stop(): end the run with it
        self._abandoned = False
        self._warned = False
        self._warn_lock = threading.Lock()
        # Per key, the newest step the continued run already holds: replayed points up to it are skipped.
        self._logged_through: dict[str, int] = {}
        self._accepted: set[str] = set()  # metric names checked once
        self._refused: set[str] = set()  # names MLflow would refuse: warned about once, never sent
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)

    def stop(self, status: str, timeout: float) -> None:
        """Send what is queued and end the run with ``status``, waiting at most ``timeout``."""
        self._status = status
        self.wake.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            self._abandoned = True
            self.quiet = True
            run = f"run {self.run_id} was not ended (it stays RUNNING)" if self.run_id else "no MLflow run was created"
            self.warn(
                "MLflow at %s did not take the last points within flush_timeout_secs=%g: %d queued items were not "
                "logged and %s. Training is not affected; raise flush_timeout_secs for a slow server, or check that "
                "the server is up (MLflow's client retries a failed request for minutes: "
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES).",
                self.uri,
                timeout,
                len(self.items),
                run,
            )

    def warn(self, message: str, *args: Any) -> None:
        with self._warn_lock:
            if self._warned:
                return
            self._warned = True
        logger.warning(message, *args)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self.previous is not None:
                self.previous.join()  # the last run()'s thread, past its flush timeout: keep the order
            client = self._open()
            self.opened.set()
            while not self._abandoned:
                self.wake.wait(SEND_PERIOD_SECS)
                self.wake.clear()
                status = self._status  # read before draining: what was queued before stop() goes out
                self._send_pending(client)
                if status is not None:
                    client.set_terminated(self.run_id, status)
                    logger.info(
                        "MLflow run %s ended %s: %d points logged to %s", self.run_id, status, self.sent, self.uri
                    )
                    break
        except Exception as error:
            self.quiet = True
            if not self._abandoned:
                self.warn(
                    "Cannot log to MLflow at %s (%s: %s): nothing more is logged in this run; training continues. "
                    "Start the server, or set tracking_uri / MLFLOW_TRACKING_URI to one that is reachable.",
                    self.uri,
                    type(error).__name__,
                    str(error).strip().splitlines()[0] if str(error).strip() else "",
                )
        finally:
            self.opened.set()
            if self.quiet:
                self.items.clear()

    def _open(self) -> Any:
        """Import MLflow, find or create the experiment, and create the run or continue it."""
        import mlflow  # here, off the training thread: importing it takes a second or more
        from mlflow import MlflowClient
        from mlflow.entities import Param

        plugin = self.plugin
        self.uri = plugin.tracking_uri or mlflow.get_tracking_uri()
        client = MlflowClient(tracking_uri=self.uri)
        params = {**plugin.option_params(), **plugin.params}
        tags = {
            "ignite.version": _distribution_version("ignite-trainer"),
            "ignite.mlflow.version": _distribution_version("ignite-mlflow"),
        }
        run = self._continued_run(client, plugin.run_id) if plugin.run_id is not None else None
        if run is None:
            experiment_id = self._experiment_id(client)
            run = client.create_run(experiment_id, tags=tags, run_name=plugin.run_name)
            self.run_id = plugin.run_id = run.info.run_id
            logger.info(
                "MLflow run %s (%s) in experiment %s at %s", run.info.run_name, self.run_id, experiment_id, self.uri
            )
        else:
            self.run_id = run.info.run_id
            client.update_run(self.run_id, status="RUNNING")
            for key, value in tags.items():
                client.set_tag(self.run_id, key, value)
            logged = run.data.params
            changed = sorted(key for key, value in params.items() if key in logged and logged[key] != value)
            if changed:
                logger.warning(
                    "MLflow run %s already holds other values for the params %s (MLflow params cannot change): "
                    "kept as they were",
                    self.run_id,
                    ", ".join(changed),
                )
            params = {key: value for key, value in params.items() if key not in logged}
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=items[start : start + _PARAMS_PER_BATCH], synchronous=True)
        return client

    def _continued_run(self, client: Any, run_id: str) -> Any:
        """The run to continue (the same trainer's, or a checkpoint's), or None when the
        store does not hold it (then a new one is created)."""
        from mlflow.exceptions import MlflowException

        plugin = self.plugin
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            if getattr(error, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                raise
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            logger.warning(
                "MLflow run %s is not in %s (another store, or deleted): this run is logged to a new MLflow run",
                run_id,
                self.uri,
            )
            plugin.run_id = None
            return None
        if self.resumed:
            for key in run.data.metrics:
                steps = [metric.step for metric in client.get_metric_history(run_id, key)]
                if steps:
                    self._logged_through[key] = max(steps)
        logger.info("MLflow run %s (%s) continues at %s", run.info.run_name, run_id, self.uri)
        return run

    def _acceptable(self, key: str) -> bool:
        """False for a name MLflow would refuse (which would fail the whole batch), with one
        warning per name; the other series go on."""
        if key in self._accepted:
            return True
        if key in self._refused:
            return False
        problem = _name_problem(key)
        if problem is None:
            self._accepted.add(key)
            return True
        self._refused.add(key)
        logger.warning(
            "MLflow refuses the metric name %r (%s): it is not logged; rename that output key or metric", key, problem
        )
        return False

    def _experiment_id(self, client: Any) -> str:
        from mlflow.exceptions import MlflowException

        name = self.plugin.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(name)
        except MlflowException:  # created meanwhile by another process
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _send_pending(self, client: Any) -> None:
        from mlflow.entities import Metric

        items = self.items
        taken: list[_Item] = []
        while items:
            taken.append(items.popleft())
        if not taken:
            return
        outputs = [value for kind, _, _, value in taken if kind == "output"]
        # One read for everything queued since the last send: at most one host sync per send.
        numbers = iter(scalars_of(outputs))
        metrics = []
        logged_through = self._logged_through
        for kind, step, wall_time, value in taken:
            if kind == "output":
                values = {tag("training/iteration", key): number for key, number in next(numbers).items()}
            else:
                values = value
            stamp = int(wall_time * 1000)
            for key, number in values.items():
                if step > logged_through.get(key, -1) and self._acceptable(key):
                    metrics.append(Metric(key, number, stamp, step))
        for start in range(0, len(metrics), _METRICS_PER_BATCH):
            client.log_batch(self.run_id, metrics=metrics[start : start + _METRICS_PER_BATCH], synchronous=True)
            self.sent += len(metrics[start : start + _METRICS_PER_BATCH])
