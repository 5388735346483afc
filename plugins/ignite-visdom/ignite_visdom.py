"""Ignite plugin: plot training, validation and learning-rate series on a Visdom server.

The series are those the TensorBoard plugin writes, one Visdom window per series, the window
id being the series name:

* ``training/iteration[/key]``: the training output every ``log_every`` iterations
  (x = ``trainer.current_iteration``);
* ``training/epoch_mean[/key]`` and ``validation/mean[/key]``: the epoch means
  (x = ``trainer.current_epoch``), reduced across ranks under torch.distributed;
* the keys of :func:`ignite.monitor.learning_rates` (``lr``, ``lr/0``, ...): the learning
  rates each training epoch ran with, when the option ``optimizer`` is given.

The training thread never touches the network: hooks append ``(series, x, y)`` to an
in-memory queue that one background daemon thread per run drains every two seconds, sending
each series' new points in one request. An unreachable server gives one warning and the
plugin goes quiet for the rest of the run; training is not slowed or stopped.
"""

from __future__ import annotations

import collections
import http.client
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from ignite import hookimpl
from ignite.distributed import is_main_process
from ignite.history import scalars_of
from ignite.monitor import epoch_means, learning_rates, tag

if TYPE_CHECKING:
    from ignite.trainer import Trainer

__all__ = ["VisdomLogger"]

logger = logging.getLogger("ignite.visdom")

SERVER_ENV = "VISDOM_SERVER_URL"
PORT_ENV = "VISDOM_PORT"
DEFAULT_SERVER = "http://localhost"
DEFAULT_PORT = 8097

#: Seconds between two sends of the background thread: each request costs this process CPU
#: (shared GIL) and the server tens of ms (benchmarks/README.md).
SEND_INTERVAL = 2.0
#: Seconds one HTTP request may take (connect, then read) before the server counts as unreachable.
REQUEST_TIMEOUT = (3.0, 10.0)
#: Name of the background threads.
THREAD_NAME = "ignite-visdom-sender"

_START_HINT = (
    "Start a server with `make visdom` or "
    '`python -c "from visdom.server.run_server import main; main()"`, '
    "or disable this plugin with Trainer(..., plugins={'visdom': False}) or IGNITE_DISABLE_PLUGINS=visdom."
)

#: What the training thread queues: a series name or prefix, x, and a number or an update output.
#: The sender turns it into points (``tag(prefix, key)``, x, y) with one ``scalars_of()`` call per
#: send, so the training thread neither reads the numbers nor waits for the device.
Item = Tuple[str, float, Any]


class VisdomLogger:
    """Plots the run's series on a Visdom server, from a background thread.

    Args:
        server: URL of the Visdom server. Default: environment variable ``VISDOM_SERVER_URL``,
            else ``"http://localhost"``. A port in the URL is used when ``port`` is not given.
        port: the server's port. Default: environment variable ``VISDOM_PORT``, else 8097.
        env: the Visdom environment (tab) to plot in. Default ``"main"``.
        log_every: plot the training output every this many iterations. Default 100, as
            the TensorBoard plugin: each point costs the sender thread CPU between training
            steps, and the server a copy and a diff of the whole window per append.
        optimizer: an optimizer (or a dict or list of them) whose learning rates are plotted
            once per epoch. Default None: no learning-rate series.
        flush_timeout: seconds to wait at the end of a run for the last points to be sent.
            Default 5.0.
    """

    #: Among plugins (ignite.hookspecs): after the controllers decided, before the checkpoint.
    ignite_phase = "log"

    def __init__(
        self,
        server: Optional[str] = None,
        port: Optional[int] = None,
        env: str = "main",
        log_every: int = 100,
        optimizer: Any = None,
        flush_timeout: float = 5.0,
    ) -> None:
        self.server, self.port = _server_and_port(server, port)
        if not isinstance(env, str) or not env:
            raise ValueError(f"visdom option env must be a non-empty string; got {env!r}")
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"visdom option log_every must be an integer of at least 1; got {log_every!r}")
        if optimizer is not None:
            try:
                learning_rates(optimizer)
            except (AttributeError, KeyError, TypeError, ValueError) as error:
                raise TypeError(
                    "visdom option optimizer must be a torch optimizer, or a dict or list of them; "
                    f"got {type(optimizer).__name__} ({error})"
                ) from None
        if (
            isinstance(flush_timeout, bool)
            or not isinstance(flush_timeout, (int, float))
            or not flush_timeout >= 0
        ):
            raise ValueError(f"visdom option flush_timeout must be a number of seconds >= 0; got {flush_timeout!r}")
        self.env = env
        self.log_every = log_every
        self.optimizer = optimizer
        self.flush_timeout = float(flush_timeout)
        # Series this instance has plotted: the first send of a series replaces whatever window
        # of that id the env holds (a previous run's), later sends, also in later run() calls
        # of the same trainer, append to it.
        self._plotted: set = set()
        self._sender: Optional[_Sender] = None

    @property
    def url(self) -> str:
        """``server:port``, as the warnings name it."""
        return f"{self.server}:{self.port}"

    @property
    def sender_thread(self) -> Optional[threading.Thread]:
        """The background thread of the run in progress (None between runs and off rank 0)."""
        return self._sender.thread if self._sender is not None else None

    # -- hooks ----------------------------------------------------------------------------

    @hookimpl
    def ignite_training_started(self, trainer: Trainer) -> None:
        self._close()  # a previous run that ended without a closing event
        if is_main_process():
            self._sender = _Sender(self.server, self.port, self.env, self._plotted)
            self._sender.thread.start()

    def _queue(self, prefix: str, x: float, value: Any) -> None:
        """Hand ``value`` to this run's sender, unless it has gone quiet or this is not rank 0."""
        sender = self._sender
        if sender is not None and not sender.quiet:
            sender.items.append((prefix, x, value))  # atomic: the sender thread pops meanwhile

    def ignite_every(self) -> dict[str, int | None]:
        """The iteration hook runs every ``log_every`` iterations: the ones between cost nothing."""
        return {"ignite_training_iteration_completed": self.log_every}

    @hookimpl
    def ignite_training_iteration_completed(self, trainer: Trainer) -> None:
        """Queue the training output (every ``log_every`` iterations; a no-op off rank 0)."""
        self._queue("training/iteration", trainer.current_iteration, trainer.training_history[-1])

    @hookimpl
    def ignite_training_epoch_completed(self, trainer: Trainer) -> None:
        means = epoch_means(trainer)  # a collective: every rank calls it
        self._queue("training/epoch_mean", trainer.current_epoch, means)
        if self.optimizer is not None and self._sender is not None:
            for name, rate in learning_rates(self.optimizer).items():
                self._queue(name, trainer.current_epoch, rate)

    @hookimpl
    def ignite_validation_completed(self, trainer: Trainer) -> None:
        means = epoch_means(trainer, validation=True)  # a collective: every rank calls it
        self._queue("validation/mean", trainer.current_epoch, means)

    @hookimpl
    def ignite_training_completed(self, trainer: Trainer) -> None:
        self._close()

    @hookimpl
    def ignite_exception_raised(self, trainer: Trainer, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.stop(self.flush_timeout)


def _server_and_port(server: Optional[str], port: Optional[int]) -> Tuple[str, int]:
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


class _Unreachable(Exception):
    """The server refused, timed out or answered with an HTTP error."""


class _Sender:
    """One run's queue of points and the daemon thread that sends them."""

    def __init__(self, server: str, port: int, env: str, plotted: set) -> None:
        self.server, self.port, self.env = server, port, env
        self.plotted = plotted
        # The training thread only appends here (deque.append is atomic); stop() sets `wake`.
        self.items: Deque[Item] = collections.deque()
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
                "Visdom server at %s did not take the last points within flush_timeout=%gs: %d queued outputs and "
                "means were not plotted. Training is not affected. Raise the option flush_timeout, or: %s",
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
        client = None
        try:
            client = _connect(self.server, self.port, self.env)
            while not self._abandoned:
                self.wake.wait(SEND_INTERVAL)
                self.wake.clear()
                stopping = self._stopping  # read before draining: points queued before stop() go out
                self._send_pending(client)
                if stopping:
                    break
        except _Unreachable as error:
            self.quiet = True
            if not self._abandoned:
                self._warn(
                    "Cannot plot to the Visdom server at %s (%s): nothing more is plotted in this run; "
                    "training continues. %s",
                    self.url,
                    error,
                    _START_HINT,
                )
        except Exception as error:  # never let a plotting problem surface in the training loop
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
            if client is not None:
                client.close_connection()
            if self.quiet:
                self.items.clear()

    def _send_pending(self, client: Any) -> None:
        batches: Dict[str, Tuple[List[float], List[float]]] = {}
        items = self.items
        taken: List[Item] = []
        while items:
            taken.append(items.popleft())
        # One read for everything queued since the last send: at most one host sync per send.
        for (prefix, x, _), numbers in zip(taken, scalars_of([value for _, _, value in taken])):
            for key, y in numbers.items():
                xs, ys = batches.setdefault(tag(prefix, key), ([], []))
                xs.append(x)
                ys.append(y)
        for series, (xs, ys) in batches.items():
            if self._abandoned:
                return
            _plot(client, series, xs, ys, replace=series not in self.plotted)
            self.plotted.add(series)


def _plot(client: Any, series: str, xs: List[float], ys: List[float], replace: bool) -> None:
    import numpy as np

    x_label = "iteration" if series.startswith("training/iteration") else "epoch"
    opts = {"title": series, "xlabel": x_label, "ylabel": series}
    client.line(
        Y=np.asarray(ys, dtype=np.float64),
        X=np.asarray(xs, dtype=np.float64),
        win=series,
        env=client.env,
        opts=opts,
        update=None if replace else "append",
    )


def _reason(error: BaseException) -> str:
    """The most telling cause of a failed request: the innermost OS error (``[Errno 111]
    Connection refused``), else the first cause below the error itself (a timeout), else the
    message itself."""
    chain: List[BaseException] = []
    current: Optional[BaseException] = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        wrapped = getattr(current, "reason", None)  # urllib3's MaxRetryError
        if not isinstance(wrapped, BaseException):
            wrapped = next((arg for arg in current.args if isinstance(arg, BaseException)), None)
        current = wrapped or current.__cause__ or current.__context__
    os_errors = [e for e in chain if isinstance(e, OSError) and e.errno is not None]
    below = [e for e in chain[1:] if str(e) != str(error)]
    found = os_errors[-1] if os_errors else below[0] if below else error
    text = str(found) or type(found).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class _Connection:
    """One keep-alive HTTP connection to the server, for visdom's client to post through.

    visdom's client posts with ``requests``, several times the CPU of a request over a kept-alive
    ``http.client`` connection, on a thread that shares the GIL with training
    (benchmarks/README.md). Proxy settings from the environment are not applied.
    """

    def __init__(self, server: str, port: int) -> None:
        parts = urlsplit(server)
        self._host, self._port = parts.hostname or "localhost", port
        self._kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._connection: Optional[http.client.HTTPConnection] = None

    def post(self, url: str, body: Any) -> str:
        """POST ``body`` (JSON text) to ``url``'s path; the answer's text. Raises _Unreachable."""
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        while True:
            reused = self._connection is not None
            try:
                connection = self._connection if reused else self._open()
                self._connection = connection
                connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                text = response.read().decode("utf-8", "replace")
            except (ConnectionResetError, BrokenPipeError) as error:
                self.close()
                if reused:
                    continue  # the server closed the idle connection before the request: once more
                raise _Unreachable(_reason(error)) from error
            except (OSError, http.client.HTTPException) as error:
                self.close()
                raise _Unreachable(_reason(error)) from error
            if response.status >= 400:
                self.close()
                raise _Unreachable(f"HTTP {response.status} {response.reason} for {path}")
            return text

    def _open(self) -> http.client.HTTPConnection:
        connect_timeout, read_timeout = REQUEST_TIMEOUT
        connection = self._kind(self._host, self._port, timeout=connect_timeout)
        connection.connect()
        connection.sock.settimeout(read_timeout)
        return connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


_client_class: Any = None


def _connect(server: str, port: int, env: str) -> Any:
    """Import visdom (only now, on the sender thread), make a quiet client and check that the
    server answers by creating the env. Raises _Unreachable."""
    global _client_class
    if _client_class is None:
        _client_class = _make_client_class()
    client = _client_class(server=server, port=port, env=env)
    client._send({"eid": env}, endpoint="env/" + env)
    return client


def _make_client_class() -> Any:
    import visdom

    class QuietVisdom(visdom.Visdom):
        """visdom's client made quiet, bounded and cheaper: it builds the messages, they are
        posted over one kept-alive connection (see _Connection) with a timeout on every request
        (visdom sets none); failures (refused, timed out, HTTP errors) raise _Unreachable
        instead of printing tracebacks; no websocket (no 5 s wait, no warning); appends to the
        windows it made skip the extra "does the window exist" request."""

        def __init__(self, server: str, port: int, env: str) -> None:
            # send=False: the constructor's request and its socket warning are skipped.
            super().__init__(
                server=server, port=port, env=env, send=False, raise_exceptions=True, use_incoming_socket=False
            )
            self.send = True
            self._ignite_connection = _Connection(server, port)
            self._ignite_windows: set = set()

        def _handle_post(self, url: str, data: Any = None) -> str:
            return self._ignite_connection.post(url, data if data is not None else "")

        def close_connection(self) -> None:
            self._ignite_connection.close()

        def _send(self, msg: Any, endpoint: str = "events", *args: Any, **kwargs: Any) -> Any:
            result = super()._send(msg, endpoint, *args, **kwargs)
            if endpoint in ("events", "update") and msg.get("win") is not None:
                self._ignite_windows.add((msg.get("eid"), msg["win"]))
            return result

        def win_exists(self, win: str, env: Optional[str] = None) -> Optional[bool]:
            if (env, win) in self._ignite_windows:
                return True
            return self._win_exists_wrap(win, env) == "true"  # raises _Unreachable

    return QuietVisdom
