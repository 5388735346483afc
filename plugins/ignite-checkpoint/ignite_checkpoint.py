"""Ignite plugin: atomic checkpoints of the trainer and the user's objects, and exact resume.

Enable it with a folder and the objects to save::

    trainer = Trainer(train_loader, update, val_loader, validate, plugins={
        "checkpoint": {"dirname": "checkpoints", "objects": {"model": model, "optimizer": optimizer},
                       "every_iterations": 500, "resume": True},
    })

A checkpoint is ``{"format": "ignite-checkpoint/1", "trainer": trainer.state_dict(),
"objects": {name: obj.state_dict()}}`` written with :func:`torch.save` to a temporary file in
the same folder, flushed, fsynced and renamed over its final name, so a file under a final
name is always complete. Checkpoints are read with ``torch.load(weights_only=True)``: loading
one cannot run code.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

import torch

import ignite
from ignite import distributed, hookimpl

if TYPE_CHECKING:
    from ignite.trainer import Trainer

__all__ = ["FORMAT", "Checkpoint", "CheckpointError", "checkpoint_name", "list_checkpoints", "load_checkpoint"]

logger = logging.getLogger("ignite.checkpoint")

#: The value of the ``"format"`` key of every checkpoint this module writes.
FORMAT = "ignite-checkpoint/1"

_NAME = re.compile(r"checkpoint_e(\d+)_i(\d+)\.pt")
_TEMPORARY_PREFIX = ".checkpoint_"
_TEMPORARY_SUFFIX = ".tmp"


class CheckpointError(Exception):
    """A file cannot be used as a checkpoint: it is missing, truncated, corrupt, refused by
    the weights-only loader, or not a checkpoint of this plugin. The message names the file."""


def checkpoint_name(epoch: int, iteration: int) -> str:
    """The file name of the checkpoint taken in ``epoch`` after global ``iteration``, e.g.
    ``checkpoint_e0003_i00000150.pt``. Zero-padded, so names sort like the runs' progress
    (numerically beyond 9999 epochs or 10^8 iterations, see :func:`list_checkpoints`)."""
    return f"checkpoint_e{epoch:04d}_i{iteration:08d}.pt"


def list_checkpoints(dirname: str | os.PathLike[str]) -> list[str]:
    """The paths of the checkpoint files in ``dirname``, oldest first (by epoch, then
    iteration, compared as numbers). Temporary files of unfinished saves are not listed.
    An absent folder holds none."""
    try:
        names = os.listdir(dirname)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _NAME.fullmatch(name)
        if match is not None:
            found.append((int(match.group(1)), int(match.group(2)), name))
    return [os.path.join(dirname, name) for _, _, name in sorted(found)]


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :class:`Checkpoint`, on the CPU, with
    ``torch.load(weights_only=True)``.

    Returns ``{"format": ..., "trainer": {...}, "objects": {name: state}}``. Raises
    :class:`CheckpointError` naming the file when it is missing, truncated or corrupt, holds
    anything the weights-only loader refuses (a pickle that would run code), or is some other
    torch file.
    """
    path = os.fspath(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint {path!r} does not exist") from None
    except OSError as error:  # a folder, no permission, an I/O error
        raise CheckpointError(f"Checkpoint {path!r} cannot be opened: {type(error).__name__}: {error}") from error
    except Exception as error:  # zip, pickle, EOF and weights-only errors all mean "unusable"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"Checkpoint {path!r} cannot be read (truncated, corrupt, or holding objects that a "
            f"weights-only load refuses): {type(error).__name__}: {first_line}"
        ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = f"format {state.get('format')!r}" if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path!r} is not an ignite checkpoint (expected a dict with format {FORMAT!r}, found {found})"
        )
    if not isinstance(state.get("trainer"), dict) or not isinstance(state.get("objects"), dict):
        raise CheckpointError(f"Checkpoint {path!r} lacks its 'trainer' or 'objects' entry")
    return state


def _open_directory(dirname: str) -> int | None:
    """A descriptor of the folder, to fsync renames in it; None where folders cannot be opened."""
    try:
        return os.open(dirname, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return None


def _fsync_directory(directory_fd: int) -> None:
    # Makes a rename in the folder durable.
    try:
        os.fsync(directory_fd)
    except OSError:  # pragma: no cover - filesystems that refuse fsync on folders
        pass


def _serialized(payload: Any) -> memoryview:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getbuffer()


def _atomic_write(data: Any, path: str, directory_fd: int | None) -> None:
    """Write the serialized ``data`` (bytes-like) to ``path`` atomically and durably: to a
    temporary file, fsynced, renamed over ``path``, and the folder fsynced through
    ``directory_fd`` (see :func:`_open_directory`; None where folders cannot be opened).

    Plain ``os`` calls, one system call each: on the writer thread, each of them gives the
    GIL away and takes it back, and each time it takes it back the training thread may have
    to wait for it. ``open()`` with a buffered file and a folder opened per save made 11 such
    calls a checkpoint (strace), these make 6. In two measurements, the training thread then
    waited 3.8 and 5.5 times a save (voluntary context switches) instead of 6.2 and 6.5."""
    dirname = os.path.dirname(path) or "."
    temporary = os.path.join(dirname, f"{_TEMPORARY_PREFIX}{os.path.basename(path)}.{os.getpid()}{_TEMPORARY_SUFFIX}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with memoryview(data) as view:
                written = 0
                while written < len(view):  # a write may take only part of it
                    written += os.write(fd, view[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    if directory_fd is not None:
        _fsync_directory(directory_fd)


class _BackgroundWriter:
    """Writes serialized checkpoints to disk on a thread of its own, one at a time.

    The checkpoint is serialized on the training thread (a consistent snapshot, in one go);
    the write, fsync and rename, tens of milliseconds on a plain disk, overlap the next
    iterations and hold the GIL only briefly. (Serializing on this thread instead made the
    two threads hand the GIL back and forth at every small write: the first training steps
    after each save took ~1.4 ms longer in all, against ~0.2-0.4 ms to serialize a small
    model's checkpoint at once.) A new save first waits for the previous write; ``wait()``
    makes every checkpoint durable and re-raises a write's error on the training thread;
    ``close()`` (at the end of a run) also ends the thread.

    The thread lives from the first save to ``close()``: a thread started per save made the
    training thread wait for the GIL the new thread took at once (~2 ms a save, measured when
    that thread also serialized; ~75 us to start and join an idle thread in a loop).
    """

    def __init__(self, dirname: str) -> None:
        self._dirname = dirname
        self._jobs: queue.SimpleQueue[tuple[Any, str, Callable[[], None], threading.Event] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._written: threading.Event | None = None  # set once the newest job is finished
        self._error: BaseException | None = None

    def submit(self, payload: memoryview, path: str, done: Callable[[], None]) -> None:
        """Write the serialized ``payload`` to ``path``, then call ``done``."""
        self.wait()
        self._written = threading.Event()
        self._jobs.put((payload, path, done, self._written))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ignite-checkpoint-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        # Opened once, not at every save: two system calls fewer a checkpoint (see _atomic_write).
        directory_fd = _open_directory(self._dirname)
        try:
            while (job := self._jobs.get()) is not None:
                payload, path, done, written = job
                try:
                    _atomic_write(payload, path, directory_fd)
                    done()
                except BaseException as error:  # handed to the training thread by wait()
                    self._error = error
                finally:
                    written.set()
        finally:
            if directory_fd is not None:
                os.close(directory_fd)

    def wait(self) -> None:
        if self._written is not None:
            self._written.wait()
            self._written = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join()
                self._thread = None


def _positive_int_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"checkpoint option {name} must be a positive integer or None; got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"checkpoint option {name} must be at least 1; got {value}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"checkpoint option {name} must be True or False; got {value!r}")
    return value


def _check_objects(objects: Any) -> dict[str, Any]:
    if objects is None:
        return {}
    if not isinstance(objects, Mapping):
        raise TypeError(
            "checkpoint option objects must be a dict of name -> object with state_dict() and "
            f"load_state_dict(), e.g. {{'model': model, 'optimizer': optimizer}}; got {type(objects).__name__}"
        )
    for name, obj in objects.items():
        if not isinstance(name, str):
            raise TypeError(f"checkpoint option objects: names must be strings; got {name!r}")
        missing = [m for m in ("state_dict", "load_state_dict") if not callable(getattr(obj, m, None))]
        if missing:
            raise TypeError(
                f"checkpoint option objects[{name!r}] ({type(obj).__name__}) has no {' or '.join(missing)}(): "
                "only objects with state_dict() and load_state_dict() can be saved"
            )
    return dict(objects)


def _where(trainer_state: Mapping[str, Any]) -> str:
    position = trainer_state.get("position")
    if position is None:
        return "end of the epoch"
    if position["phase"] == "validation":
        return "after training, validation to run again"
    return f"after batch {position['batches_done']} of the epoch"


class Checkpoint:
    """Save the trainer's state and the given objects every few iterations and/or epochs,
    and on Ctrl-C; with ``resume``, continue from the newest good checkpoint.

    Args:
        dirname: folder of the checkpoints, created at TRAINING_STARTED. Without it the plugin
            is inactive.
        objects: what to save beside the trainer, by name: anything with ``state_dict()`` and
            ``load_state_dict()`` (models, optimizers, LR schedulers, GradScalers).
        every_iterations: save after every this many training iterations (global count).
        every_epochs: save after every this many epochs. When neither is given: 1.
        keep: how many of this run's checkpoints to keep (the newest ones); None keeps all.
        resume: at TRAINING_STARTED, load the newest checkpoint in ``dirname`` that can be
            read (unreadable ones are skipped with a warning) and continue from it.
        save_on_interrupt: on KeyboardInterrupt, save a checkpoint of the point reached before
            the exception goes on.

    Only the main process (rank 0) writes files; every rank loads on resume, so the folder
    must be visible to all of them.
    """

    def __init__(
        self,
        dirname: str | os.PathLike[str] | None = None,
        objects: Mapping[str, Any] | None = None,
        every_iterations: int | None = None,
        every_epochs: int | None = None,
        keep: int | None = 3,
        resume: bool = False,
        save_on_interrupt: bool = True,
    ) -> None:
        if dirname is None:
            raise ignite.PluginInactive(
                "no folder to write to: pass plugins={'checkpoint': {'dirname': 'checkpoints', "
                "'objects': {'model': model, 'optimizer': optimizer}}}"
            )
        if not isinstance(dirname, (str, os.PathLike)):
            raise TypeError(f"checkpoint option dirname must be a path (str or os.PathLike); got {type(dirname).__name__}")
        self.dirname = os.fspath(dirname)
        if not self.dirname:
            raise ValueError("checkpoint option dirname must not be empty; pass '.' for the current folder")
        self.objects = _check_objects(objects)
        self.every_iterations = _positive_int_or_none("every_iterations", every_iterations)
        self.every_epochs = _positive_int_or_none("every_epochs", every_epochs)
        if self.every_iterations is None and self.every_epochs is None:
            self.every_epochs = 1
        self.keep = _positive_int_or_none("keep", keep)
        self.resume = _check_bool("resume", resume)
        self.save_on_interrupt = _check_bool("save_on_interrupt", save_on_interrupt)
        if self.every_iterations is None:
            # No per-iteration hook at all when it has nothing to do: an attribute on the
            # instance hides the method from pluggy, so the hot path does not call it.
            self.ignite_training_iteration_completed = None  # type: ignore[assignment]
        self._started = False  # TRAINING_STARTED seen: resume only once
        self._ready = False  # TRAINING_STARTED done (resumed if asked): interrupts may save
        self._written: list[str] = []  # this run's checkpoints, oldest first: what keep prunes
        self._saved_iteration: int | None = None  # the global iteration of the newest of them
        self._writer = _BackgroundWriter(self.dirname)

    # -- hooks --------------------------------------------------------------------------

    @hookimpl(tryfirst=True)
    def ignite_training_started(self, trainer: Trainer) -> None:
        """Create the folder and, with ``resume``, load the newest good checkpoint (once per
        plugin instance: a second ``run()`` continues from where the first ended)."""
        if self._started:
            return
        self._started = True
        existing = list_checkpoints(self.dirname)
        if distributed.is_main_process():
            os.makedirs(self.dirname, exist_ok=True)
            self._remove_temporary_files()
        if self.resume:
            self._resume(trainer, existing)
        elif existing and distributed.is_main_process():
            logger.warning(
                "%s already holds %d checkpoint(s), the newest %s; resume=False: this run starts from scratch "
                "and leaves them alone (keep does not prune them). A later resume=True picks the newest by epoch "
                "and iteration, which may be one of them: remove them or use another dirname.",
                self.dirname,
                len(existing),
                os.path.basename(existing[-1]),
            )
        self._ready = True

    @hookimpl(trylast=True)
    def ignite_training_iteration_completed(self, trainer: Trainer) -> None:
        """Save when the global iteration is a multiple of ``every_iterations``."""
        if trainer.current_iteration % self.every_iterations == 0:  # type: ignore[operator]
            self.save(trainer)

    @hookimpl(trylast=True)
    def ignite_epoch_completed(self, trainer: Trainer) -> None:
        """Save when the epoch number is a multiple of ``every_epochs``."""
        if self.every_epochs is not None and trainer.current_epoch % self.every_epochs == 0:
            self.save(trainer)

    @hookimpl(trylast=True)
    def ignite_training_completed(self) -> None:
        """Wait until the last checkpoint is on disk."""
        self._writer.close()

    @hookimpl(trylast=True)
    def ignite_exception_raised(self, trainer: Trainer, exception: BaseException) -> None:
        """Finish the pending write; on KeyboardInterrupt, save the point reached, unless the
        newest checkpoint already holds it (see the README for what an interrupt inside an
        update means). Never a collective here: a failing rank must exit at once."""
        try:
            self._writer.wait()
        except Exception:  # the run's own exception is the one to report
            logger.exception("Writing the last checkpoint failed")
        try:
            self._save_on_interrupt(trainer, exception)
        finally:
            self._writer.close()

    def _save_on_interrupt(self, trainer: Trainer, exception: BaseException) -> None:
        if not (self.save_on_interrupt and isinstance(exception, KeyboardInterrupt) and self._ready):
            return
        if not distributed.is_main_process():
            return
        if distributed.world_size() > 1:
            logger.warning(
                "Interrupted: no checkpoint saved, since gathering every rank's state would need the other ranks; "
                "the newest regular checkpoint (%s) stays",
                self._written[-1] if self._written else "none yet",
            )
            return
        state = trainer.state_dict()
        iteration = state["current_iteration"]
        # Interrupted after iteration N started and before its output was recorded: in its
        # update function (or a TRAINING_ITERATION_STARTED handler). The state is then that
        # of iteration N - 1.
        inside_update = iteration < trainer.current_iteration
        if self._written and iteration == self._saved_iteration:
            # No iteration was completed since the newest checkpoint (this run's, or the one it
            # resumed from), which holds this point cleanly: keep it. This also avoids the
            # trainer's state_dict() between a resume and the resumed epoch's first batch.
            if inside_update:
                logger.warning(
                    "Interrupted inside iteration %d: keeping %s, saved cleanly after iteration %d, rather than "
                    "saving a state that the interrupted update may have changed",
                    trainer.current_iteration,
                    self._written[-1],
                    iteration,
                )
            else:
                logger.info("Interrupted at iteration %d, which %s already holds: nothing to save", iteration, self._written[-1])
            return
        path = os.path.join(self.dirname, checkpoint_name(state["current_epoch"], iteration))
        if inside_update:
            logger.warning(
                "Interrupted inside iteration %d, before its output was recorded: saving as after iteration %d. "
                "If the interrupt came after optimizer.step(), the model already holds part of iteration %d and a "
                "run resumed from %s will not be bit-identical to an uninterrupted one",
                trainer.current_iteration,
                iteration,
                trainer.current_iteration,
                path,
            )
        self._write(state, path, None)
        self._writer.wait()
        logger.info("Interrupted: saved %s (epoch %d, iteration %d)", path, state["current_epoch"], iteration)

    # -- saving -------------------------------------------------------------------------

    def wait(self) -> None:
        """Block until every checkpoint saved so far is complete on disk (the run's end does
        this itself); re-raises the error of a failed write."""
        self._writer.wait()

    def save(self, trainer: Trainer) -> str | None:
        """Save a checkpoint of the trainer now and prune old ones; returns the path, which
        is complete on disk once the run ends (the write finishes in the background). In a
        distributed run call it on every rank: each rank's trainer state (its histories, its
        RNG streams) is gathered to rank 0, which writes; other ranks return None."""
        state = trainer.state_dict()
        ranks = distributed.all_gather_object(state) if distributed.world_size() > 1 else None
        if not distributed.is_main_process():
            return None
        path = os.path.join(self.dirname, checkpoint_name(state["current_epoch"], state["current_iteration"]))
        self._write(state, path, ranks)
        logger.debug("Saving %s", path)
        return path

    def _write(self, trainer_state: dict[str, Any], path: str, ranks: list[dict[str, Any]] | None) -> None:
        payload: dict[str, Any] = {
            "format": FORMAT,
            "trainer": trainer_state,
            "objects": {name: obj.state_dict() for name, obj in self.objects.items()},
        }
        if ranks is not None:
            payload["trainer_ranks"] = ranks
        # Serialized here, so the file holds this moment though it is written later.
        data = _serialized(payload)

        def written() -> None:
            self._saved_iteration = trainer_state["current_iteration"]
            # An iteration save on an epoch's last batch and the epoch save share a name: the
            # later, more complete state replaced the earlier one atomically.
            if path in self._written:
                self._written.remove(path)
            self._written.append(path)
            self._prune()

        self._writer.submit(data, path, written)

    def _prune(self) -> None:
        if self.keep is None:
            return
        while len(self._written) > self.keep:
            old = self._written.pop(0)
            try:
                os.unlink(old)
            except FileNotFoundError:
                pass

    def _remove_temporary_files(self) -> None:
        removed = 0
        for name in os.listdir(self.dirname):
            if name.startswith(_TEMPORARY_PREFIX) and name.endswith(_TEMPORARY_SUFFIX):
                try:
                    os.unlink(os.path.join(self.dirname, name))
                    removed += 1
                except FileNotFoundError:  # pragma: no cover - removed meanwhile
                    pass
        if removed:
            logger.info("Removed %d unfinished temporary checkpoint file(s) from %s", removed, self.dirname)

    # -- resuming -----------------------------------------------------------------------

    def _resume(self, trainer: Trainer, existing: list[str]) -> None:
        # Every rank loads; only rank 0 logs.
        main = distributed.is_main_process()
        for index in range(len(existing) - 1, -1, -1):
            path = existing[index]
            try:
                state = load_checkpoint(path)
            except CheckpointError as error:
                if main:
                    logger.warning("Skipping %s; trying the previous checkpoint", error)
                continue
            self._restore(trainer, path, state)
            # The checkpoints up to this one are this run's predecessors: keep prunes them.
            self._written = existing[: index + 1]
            self._saved_iteration = state["trainer"]["current_iteration"]
            return
        if not main:
            return
        if existing:
            logger.warning(
                "resume=True: none of the %d checkpoint(s) in %s can be read; starting from scratch",
                len(existing),
                self.dirname,
            )
        else:
            logger.info("resume=True: no checkpoint in %s yet; starting from scratch", self.dirname)

    def _restore(self, trainer: Trainer, path: str, state: dict[str, Any]) -> None:
        saved = state["objects"]
        missing = [name for name in self.objects if name not in saved]
        if missing:
            raise CheckpointError(
                f"Checkpoint {path!r} holds no state for {', '.join(map(repr, missing))} (it has "
                f"{', '.join(map(repr, saved)) or 'none'}): resume with the objects it was saved with"
            )
        for name in saved:
            if name not in self.objects and distributed.is_main_process():
                logger.warning("Checkpoint %s holds a state for %r, which objects= does not name: not restored", path, name)
        for name, obj in self.objects.items():
            try:
                obj.load_state_dict(saved[name])
            except Exception as error:
                error.add_note(f"while restoring objects[{name!r}] from checkpoint {path!r}")
                raise
        trainer.load_state_dict(self._own_trainer_state(path, state))
        if not distributed.is_main_process():
            return
        logger.info(
            "Resumed from %s: epoch %d, iteration %d (%s)",
            path,
            state["trainer"]["current_epoch"],
            state["trainer"]["current_iteration"],
            _where(state["trainer"]),
        )


    @staticmethod
    def _own_trainer_state(path: str, state: dict[str, Any]) -> dict[str, Any]:
        """This rank's trainer state: its own when every rank's was saved."""
        ranks, world = state.get("trainer_ranks"), distributed.world_size()
        if ranks is not None:
            if len(ranks) != world:
                raise CheckpointError(
                    f"Checkpoint {path!r} was saved by {len(ranks)} processes and this run has {world}: resume it "
                    "with the same number of processes"
                )
            return ranks[distributed.rank()]
        if world > 1 and distributed.is_main_process():
            logger.warning(
                "Checkpoint %s holds one process's trainer state: every rank resumes from it, so the other ranks' "
                "histories and random streams are not those they had",
                path,
            )
        return state["trainer"]
