"""Ignite plugin: plot training, validation, learning-rate and metric series on a Visdom server.

The series are those the TensorBoard plugin writes, one Visdom window per series, the window
id being the series name:

* ``training/iteration[/key]``: the training output every ``every_iterations`` iterations
  (x = ``trainer.current_iteration``);
* ``training/epoch_mean[/key]`` and ``validation/mean[/key]``: the epoch means
  (x = ``trainer.current_epoch``), reduced across ranks under torch.distributed;
* the keys of :func:`ignite.monitor.learning_rates` (``lr``, ``lr/0``, ...): the learning
  rates each training epoch ran with, when the option ``optimizer`` is given;
* ``metrics/<name>``: each entry of ``trainer.metrics`` at EPOCH_COMPLETED, when there is any.

The training thread never touches the network: hooks append ``(series, x, value)`` to an
in-memory queue that one background daemon thread per run drains every ``send_every_secs``,
with one call of visdom's public ``Visdom.line`` per series and batch. An unreachable server,
at the start or later, gives one warning and the plugin goes quiet for the rest of the run;
nothing is raised into the training loop.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ignite import hookimpl
from ignite.distributed import is_main_process
from ignite.history import scalars_of
from ignite.monitor import check_optimizer, check_period, check_seconds, epoch_means, learning_rates, tag

if TYPE_CHECKING:
    from ignite.trainer import Trainer

__all__ = ["VisdomLogger"]

logger = logging.getLogger("ignite.visdom")

SERVER_ENV = "VISDOM_SERVER_URL"
PORT_ENV = "VISDOM_PORT"
DEFAULT_SERVER = "http://localhost"
DEFAULT_PORT = 8097
#: Name of the background threads.
THREAD_NAME = "ignite-visdom-sender"

_START_HINT = (
    "Start a server with `make visdom` or "
    '`python -c "from visdom.server.run_server import main; main()"`, '
    "or disable this plugin with Trainer(..., plugins={'visdom': False}) or IGNITE_DISABLE_PLUGINS=visdom."
)

#: What the training thread queues: a series name or prefix, x, and a number, a dict of them or
#: an update output. The sender turns it into points (``tag(prefix, key)``, x, y) with one
#: ``scalars_of()`` call per send, so the training thread neither reads numbers nor waits for the device.
Item = tuple[str, float, Any]


class VisdomLogger:
    """Plots the run's series on a Visdom server, from a background thread.

    Args:
        server: URL of the Visdom server. Default: environment variable ``VISDOM_SERVER_URL``,
            else ``"http://localhost"``. A port in the URL is used when ``port`` is not given.
        port: the server's port. Default: environment variable ``VISDOM_PORT``, else 8097.
        env: the Visdom environment (tab) to plot in. Default ``"main"``.
        every_iterations: plot the training output every this many iterations. Default 100,
            as the TensorBoard plugin.
        optimizer: an optimizer (or a dict or list of them) whose learning rates are plotted
            once per epoch. Default None: no learning-rate series.
        send_every_secs: seconds between two sends of the background thread. Default 2.0.
        flush_timeout_secs: seconds the end of a run waits for the last points to be sent.
            Default 5.0.
    """

    #: Among plugins (ignite.hookspecs): after the controllers decided, before the checkpoint.
    ignite_phase = "log"

    def __init__(
        self,
        server: str | None = None,
        port: int | None = None,
        env: str = "main",
        every_iterations: int = 100,
        optimizer: Any = None,
        send_every_secs: float = 2.0,
        flush_timeout_secs: float = 5.0,
    ) -> None:
        self.server, self.port = _server_and_port(server, port)
        if not isinstance(env, str) or not env:
            raise ValueError(f"visdom option env must be a non-empty string; got {env!r}")
        check_period("visdom", "every_iterations", every_iterations)
        if optimizer is not None:
            check_optimizer("visdom", optimizer)
        self.env = env
        self.every_iterations = every_iterations
        self.optimizer = optimizer
        self.send_every_secs = check_seconds("visdom", "send_every_secs", send_every_secs)
        self.flush_timeout_secs = check_seconds("visdom", "flush_timeout_secs", flush_timeout_secs, zero=True)
        # Series this instance has plotted: the first send of a series replaces whatever window
        # of that id the env holds (a previous run's), later sends, also in later run() calls
        # of the same trainer, append to it.
        self._plotted: set = set()
        self._sender: _Sender | None = None

    @property
    def url(self) -> str:
        """``server:port``, as the warnings name it."""
        return f"{self.server}:{self.port}"

    @property
    def sender_thread(self) -> threading.Thread | None:
        """The background thread of the run in progress (None between runs and off rank 0)."""
        return self._sender.thread if self._sender is not None else None

    # -- hooks ----------------------------------------------------------------------------

    @hookimpl
    def ignite_training_started(self, trainer: Trainer) -> None:
        self._close()  # a previous run that ended without a closing event
        if is_main_process():
            self._sender = _Sender(self.server, self.port, self.env, self._plotted, self.send_every_secs)
            self._sender.thread.start()

    def _queue(self, prefix: str, x: float, value: Any) -> None:
        """Hand ``value`` to this run's sender, unless it has gone quiet or this is not rank 0."""
        sender = self._sender
        if sender is not None and not sender.quiet:
            sender.items.append((prefix, x, value))  # atomic: the sender thread pops meanwhile

    def ignite_every(self) -> dict[str, int | None]:
        """The iteration hook runs every ``every_iterations`` iterations: the ones between cost nothing."""
        return {"ignite_training_iteration_completed": self.every_iterations}

    @hookimpl
    def ignite_training_iteration_completed(self, trainer: Trainer) -> None:
        """Queue the training output (every ``every_iterations`` iterations; a no-op off rank 0)."""
        self._queue("training/iteration", trainer.current_iteration, trainer.training_history[-1])

    @hookimpl
    def ignite_training_epoch_completed(self, trainer: Trainer) -> None:
        means = epoch_means(trainer)  # a collective: every rank calls it
        self._queue("training/epoch_mean", trainer.current_epoch, means)
        if self.optimizer is not None and self._sender is not None:
            self._queue("", trainer.current_epoch, learning_rates(self.optimizer))

    @hookimpl
    def ignite_validation_completed(self, trainer: Trainer) -> None:
        means = epoch_means(trainer, validation=True)  # a collective: every rank calls it
        self._queue("validation/mean", trainer.current_epoch, means)

    @hookimpl
    def ignite_epoch_completed(self, trainer: Trainer) -> None:
        if trainer.metrics:
            self._queue("metrics", trainer.current_epoch, dict(trainer.metrics))  # a copy: plugins update it

    @hookimpl
    def ignite_training_completed(self, trainer: Trainer) -> None:
        self._close()

    @hookimpl
    def ignite_exception_raised(self, trainer: Trainer, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.stop(self.flush_timeout_secs)


def _server_and_port(server: str | None, port: int | None) -> tuple[str, int]:
    """Resolve the options against the environment; raise naming the culprit."""
    where = "option server"
    if server is None:
        server = os.environ.get(SERVER_ENV) or DEFAULT_SERVER
        where = f"{SERVER_ENV}={server!r}" if os.environ.get(SERVER_ENV) else where
    if not isinstance(server, str) or not server.strip():
        raise ValueError(f"visdom option server must be a URL such as 'http://localhost'; got {server!r}")
    server = server.strip().rstrip("/")
    if "://" not in server:
        server = "http://" + server
    parts = urlsplit(server)
    try:
        url_port = parts.port
    except ValueError:
        raise ValueError(f"visdom {where}: the URL has an invalid port") from None
    if not parts.hostname or parts.path or parts.query:
        raise ValueError(
            f"visdom {where} must be a scheme and host such as 'http://localhost' (the port goes in option "
            f"port); got {server!r}"
        )
    if url_port is not None:
        server = f"{parts.scheme}://{parts.netloc.rsplit(':', 1)[0]}"
    if port is None:
        raw = os.environ.get(PORT_ENV)
        if raw:
            try:
                port = int(raw)
            except ValueError:
                raise ValueError(f"{PORT_ENV}={raw!r} is not a port number (used for visdom option port)") from None
            where_port = f"{PORT_ENV}={raw!r}"
        else:
            port = url_port if url_port is not None else DEFAULT_PORT
            where_port = "option port"
    else:
        where_port = "option port"
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"visdom option port must be an integer; got {type(port).__name__} {port!r}")
        if url_port is not None and url_port != port:
            raise ValueError(f"visdom options server ({server}:{url_port}) and port ({port}) name different ports")
    if not 0 < port < 65536:
        raise ValueError(f"visdom {where_port} must be a port number between 1 and 65535; got {port}")
    return server, port


class _Refused(Exception):
    """The server answered a plot with something other than the window id (an HTTP error page)."""


class _Sender:
    """One run's queue of points and the daemon thread that sends them."""

    def __init__(self, server: str, port: int, env: str, plotted: set, interval: float) -> None:
        self.server, self.port, self.env = server, port, env
        self.plotted = plotted
        self.interval = interval
        # The training thread only appends here (deque.append is atomic); stop() sets `wake`.
        self.items: collections.deque[Item] = collections.deque()
        self.wake = threading.Event()
        # True once the sender gave up (server unreachable, error, or flush timed out): the
        # training thread then stops queueing.
        self.quiet = False
        self._stopping = False
        self._abandoned = False
        self._warned = False
        self._warn_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.server}:{self.port}"

    def stop(self, timeout: float) -> None:
        """Send what is pending, waiting at most ``timeout`` seconds, and end the thread."""
        self._stopping = True
        self.wake.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            self._abandoned = True
            self.quiet = True
            self._warn(
                "Visdom server at %s did not take the last points within flush_timeout_secs=%gs: %d queued outputs "
                "and means were not plotted. Training is not affected. Raise the option flush_timeout_secs, or: %s",
                self.url,
                timeout,
                len(self.items),
                _START_HINT,
            )

    def _warn(self, message: str, *args: Any, exc_info: bool = False) -> None:
        with self._warn_lock:
            if self._warned:
                return
            self._warned = True
        logger.warning(message, *args, exc_info=exc_info)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            client = _connect(self.server, self.port, self.env)
            while not self._abandoned:
                self.wake.wait(self.interval)
                self.wake.clear()
                stopping = self._stopping  # read before draining: points queued before stop() go out
                self._send_pending(client)
                if stopping:
                    break
        except (ConnectionError, _Refused) as error:  # visdom raises ConnectionError for any failed request
            self.quiet = True
            if not self._abandoned:
                self._warn(
                    "Cannot plot to the Visdom server at %s (%s): nothing more is plotted in this run; "
                    "training continues. %s",
                    self.url,
                    _reason(error),
                    _START_HINT,
                )
        except Exception as error:
            self.quiet = True
            if not self._abandoned:
                self._warn(
                    "Plotting to Visdom at %s failed (%s: %s): nothing more is plotted in this run; training "
                    "continues.",
                    self.url,
                    type(error).__name__,
                    error,
                    exc_info=True,
                )
        finally:
            if self.quiet:
                self.items.clear()

    def _send_pending(self, client: Any) -> None:
        batches: dict[str, tuple[list[float], list[float]]] = {}
        items = self.items
        taken: list[Item] = []
        while items:
            taken.append(items.popleft())
        # One read for everything queued since the last send: at most one host sync per send.
        for (prefix, x, _), numbers in zip(taken, scalars_of([value for _, _, value in taken])):
            for key, y in numbers.items():
                xs, ys = batches.setdefault(tag(prefix, key) if prefix else key, ([], []))
                xs.append(x)
                ys.append(y)
        for series, (xs, ys) in batches.items():
            if self._abandoned:
                return
            _plot(client, self.env, series, xs, ys, replace=series not in self.plotted)
            self.plotted.add(series)


def _plot(client: Any, env: str, series: str, xs: list[float], ys: list[float], replace: bool) -> None:
    """One ``Visdom.line`` call with all new points of ``series``; raise _Refused unless the
    server answers with the window id, as visdom's server does for a plot it took."""
    import numpy as np

    x_label = "iteration" if series.startswith("training/iteration") else "epoch"
    answer = client.line(
        Y=np.asarray(ys, dtype=np.float64),
        X=np.asarray(xs, dtype=np.float64),
        win=series,
        env=env,
        opts={"title": series, "xlabel": x_label, "ylabel": series},
        update=None if replace else "append",
    )
    if answer != series:
        text = " ".join(str(answer).split())
        raise _Refused(f"it answered {text[:200]!r} to a plot of window {series!r}")


def _reason(error: BaseException) -> str:
    """The most telling cause of a failed request: the innermost OS error (``[Errno 111]
    Connection refused``) in the chain visdom's ConnectionError carries, else the message."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        wrapped = getattr(current, "reason", None)  # urllib3's MaxRetryError
        if not isinstance(wrapped, BaseException):
            wrapped = next((arg for arg in current.args if isinstance(arg, BaseException)), None)
        current = wrapped or current.__cause__ or current.__context__
    os_errors = [e for e in chain[1:] if isinstance(e, OSError) and e.errno is not None]
    found = os_errors[-1] if os_errors else error
    text = str(found) or type(found).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class _SenderThreadOnly(logging.Filter):
    """Drops the visdom client's own log records made on the sender threads ("Setting up a new
    session...", "Without the incoming socket..."): notices about features the plugin does not
    use; failures reach the user as the plugin's one warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD_NAME


_visdom_filter: _SenderThreadOnly | None = None
_filter_lock = threading.Lock()


def _connect(server: str, port: int, env: str) -> Any:
    """Import visdom (only now, on the sender thread) and make a client; its constructor
    creates the env on the server and raises ConnectionError when it cannot be reached."""
    global _visdom_filter
    with _filter_lock:
        if _visdom_filter is None:
            _visdom_filter = _SenderThreadOnly()
            logging.getLogger("visdom").addFilter(_visdom_filter)
    import visdom

    # No incoming socket: the plugin receives no events, and would otherwise wait up to 5 s for it.
    return visdom.Visdom(server=server, port=port, env=env, use_incoming_socket=False, raise_exceptions=True)
