"""Ignite plugin: atomic checkpoints of the trainer and the user's objects, and exact resume.

Enable it with a folder and the objects to save::

    trainer = Trainer(train_loader, update, val_loader, validate, plugins={
        "checkpoint": {"dir": "checkpoints", "objects": {"model": model, "optimizer": optimizer},
                       "every_iterations": 500, "resume": True},
    })

A checkpoint is ``{"format": "ignite-checkpoint/1", "trainer": trainer.state_dict(),
"objects": {name: encode(obj.state_dict())}}`` written with :func:`torch.save` to a temporary
file in the same folder, flushed, fsynced and renamed over its final name, so a file under a
final name is always complete. Its zip comment holds a CRC-32 of the file, verified on load.
Checkpoints are read with ``torch.load(weights_only=True)``: loading one cannot run code.

Models sharded with FSDP2 (``fully_shard``: DTensor parameters) and their optimizers are saved
with :mod:`torch.distributed.checkpoint` instead: a checkpoint is then a folder in which every
rank writes its own shards (``async_save``: training goes on during the write) and rank 0 the
file ``ignite.pt`` (the format above, without the sharded objects), written into a temporary
folder renamed to its final name once every rank's shards are on disk.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import datetime
import io
import logging
import os
import queue
import re
import shutil
import socket
import threading
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import IO, TYPE_CHECKING, Any

import torch

import ignite
from ignite import distributed, hookimpl
from ignite.serialization import decode, encode

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no folder lock
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ignite.trainer import Trainer

__all__ = [
    "FORMAT",
    "Checkpoint",
    "CheckpointError",
    "NewerFormatError",
    "checkpoint_name",
    "list_checkpoints",
    "load_checkpoint",
]

logger = logging.getLogger("ignite.checkpoint")

#: The value of the ``"format"`` key of every checkpoint this module writes.
FORMAT = "ignite-checkpoint/1"
_FORMAT_VERSION = 1
_FORMAT_PATTERN = re.compile(r"ignite-checkpoint/(\d+)")

_NAME = re.compile(r"checkpoint_e(\d+)_i(\d+)(\.pt)?")  # without .pt: a sharded checkpoint's folder
#: In a sharded checkpoint's folder: the trainer's state and the objects that are not sharded.
SHARDED_STATE_FILE = "ignite.pt"
# A finished folder moved aside to make room for its replacement (same epoch and iteration):
# put back at the next start if the replacement never landed.
_REPLACED_SUFFIX = ".replaced"
_TEMPORARY_PREFIX = ".checkpoint_"
_TEMPORARY_SUFFIX = ".tmp"
_UNREADABLE_SUFFIX = ".unreadable"
#: Held (fcntl.flock) by the run that writes the folder; it holds that run's pid and host.
LOCK_NAME = ".ignite-checkpoint.lock"

# The zip "end of central directory" record torch.save ends its file with: 22 bytes, the last
# two the length of the archive's comment (torch writes none). The checksum goes in that
# comment, so the file stays a valid zip that torch.load and unzip read as before.
_END_SIGNATURE = b"PK\x05\x06"
_END_SIZE = 22
_CHECKSUM_PREFIX = b"ignite-checkpoint crc32 "
_CHECKSUM_SIZE = len(_CHECKSUM_PREFIX) + 8  # 8 hex digits: the CRC-32 of every byte before them
_READ_CHUNK = 4 * 2**20

_TORCH = tuple(int(part) for part in torch.__version__.split(".")[:2])  # (major, minor)
# Sharded saves stage through torch.distributed.checkpoint's DefaultStager (torch 2.9 and newer).
_SHARDED_TORCH = (2, 9)
# torch 2.11 and 2.12 close a DefaultStager after its first stage (pytorch/pytorch#170431): a
# later save through it fails, so they get one stager per save (host buffers not reused).
_STAGER_REUSABLE = not ((2, 11) <= _TORCH < (2, 13))


class CheckpointError(Exception):
    """A file cannot be used as a checkpoint (missing, truncated, corrupt, failing its
    checksum, refused by the weights-only loader, not a checkpoint of this plugin), or a
    checkpoint does not fit this run, or the folder is in use by another run. The message names
    the file or folder and the fix."""


class NewerFormatError(CheckpointError):
    """The checkpoint was written by a newer ignite-checkpoint, in a format this one cannot
    read: upgrade ignite-checkpoint. Resume stops on it rather than fall back to older files."""


def checkpoint_name(epoch: int, iteration: int, sharded: bool = False) -> str:
    """The file name of the checkpoint taken in ``epoch`` after global ``iteration``, e.g.
    ``checkpoint_e0003_i00000150.pt``, or with ``sharded`` its folder's name (no ``.pt``).
    Zero-padded, so names sort like the runs' progress (numerically beyond 9999 epochs or
    10^8 iterations, see :func:`list_checkpoints`)."""
    return f"checkpoint_e{epoch:04d}_i{iteration:08d}{'' if sharded else '.pt'}"


def list_checkpoints(dirname: str | os.PathLike[str]) -> list[str]:
    """The paths of the checkpoints in ``dir`` (files, and folders of sharded ones), oldest
    first (by epoch, then iteration, compared as numbers). Temporary files and folders of
    unfinished saves are not listed. An absent folder holds none."""
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
    """Read a checkpoint written by :class:`Checkpoint`, on the CPU, after verifying its
    checksum, with ``torch.load(weights_only=True)``.

    Returns ``{"format": ..., "trainer": {...}, "objects": {name: state}}``, the objects' states
    as encoded when saved (:func:`ignite.serialization.decode` turns numpy values back). Raises
    :class:`CheckpointError` naming the file when it is missing, truncated or corrupt (its
    checksum does not match), holds anything the weights-only loader refuses, or is some other
    torch file; :class:`NewerFormatError` when a newer ignite-checkpoint wrote it. A file written
    before checkpoints carried a checksum loads unverified, with an INFO log saying so.

    For a sharded checkpoint (a folder), this reads its ``ignite.pt`` and checks that the
    folder's torch.distributed.checkpoint metadata names every sharded object; the result's
    ``"sharded"`` maps those names to ``"model"`` or ``"optimizer"``, and their shards stay
    on disk: ``torch.distributed.checkpoint.load`` reads them, on every rank. DCP's metadata is
    a pickle: read only folders you trust.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _load_sharded(path)
    return _load_file(path)


def _load_sharded(path: str) -> dict[str, Any]:
    """:func:`load_checkpoint` of a sharded checkpoint's folder."""
    import torch.distributed.checkpoint as dcp

    state_file = os.path.join(path, SHARDED_STATE_FILE)
    if not os.path.exists(state_file):
        raise CheckpointError(
            f"Sharded checkpoint {path!r} is incomplete: it has no {SHARDED_STATE_FILE}, which its save writes last "
            "(a folder with a checkpoint's name that ignite-checkpoint did not finish, or a copy that lost it)"
        )
    state = _load_file(state_file)
    sharded = state.get("sharded")
    if not isinstance(sharded, dict):
        raise CheckpointError(f"{state_file!r} lacks its 'sharded' entry: it is not the state file of a sharded checkpoint")
    try:
        metadata = dcp.FileSystemReader(path).read_metadata()
    except Exception as error:  # missing, truncated or foreign .metadata
        raise CheckpointError(
            f"Sharded checkpoint {path!r} has no readable torch.distributed.checkpoint metadata: "
            f"{type(error).__name__}: {error}"
        ) from error
    keys = metadata.state_dict_metadata
    lacking = [name for name in sharded if not any(key.startswith(f"{name}.") for key in keys)]
    if lacking:
        raise CheckpointError(f"Sharded checkpoint {path!r} holds no shards of {', '.join(map(repr, lacking))}")
    return state


def _load_file(path: str) -> dict[str, Any]:
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint {path!r} does not exist") from None
    except OSError as error:  # a folder, no permission
        raise CheckpointError(f"Checkpoint {path!r} cannot be opened: {type(error).__name__}: {error}") from error
    with file:
        try:
            verified = _verify_checksum(file, path)
            file.seek(0)
            state = torch.load(file, map_location="cpu", weights_only=True)
        except CheckpointError:
            raise
        except OSError as error:  # an I/O error
            raise CheckpointError(f"Checkpoint {path!r} cannot be read: {type(error).__name__}: {error}") from error
        except Exception as error:  # zip, pickle, EOF and weights-only errors all mean "unusable"
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise CheckpointError(
                f"Checkpoint {path!r} cannot be read (truncated, corrupt, or holding objects that a "
                f"weights-only load refuses): {type(error).__name__}: {first_line}"
            ) from error
    found = state.get("format") if isinstance(state, dict) else None
    match = _FORMAT_PATTERN.fullmatch(found) if isinstance(found, str) else None
    if match is not None and int(match.group(1)) > _FORMAT_VERSION:
        raise NewerFormatError(
            f"Checkpoint {path!r} was written by a newer ignite-checkpoint (format {int(match.group(1))}); this one "
            f"reads format {_FORMAT_VERSION}: upgrade ignite-checkpoint to load it"
        )
    if not isinstance(state, dict) or found != FORMAT:
        found_text = f"format {found!r}" if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path!r} is not an ignite checkpoint (expected a dict with format {FORMAT!r}, found {found_text})"
        )
    if not isinstance(state.get("trainer"), dict) or not isinstance(state.get("objects"), dict):
        raise CheckpointError(f"Checkpoint {path!r} lacks its 'trainer' or 'objects' entry")
    if not verified:
        logger.info("Checkpoint %s has no checksum (written before ignite-checkpoint recorded one): loaded unverified", path)
    return state


def _verify_checksum(file: IO[bytes], path: str) -> bool:
    """True when the file's checksum matches its content; False for a torch file without one
    (an older checkpoint, or a foreign file that the format check then refuses). Raises
    :class:`CheckpointError` when the checksum does not match or the file ends like neither."""
    size = os.fstat(file.fileno()).st_size
    tail_size = _END_SIZE + _CHECKSUM_SIZE
    file.seek(max(0, size - tail_size))
    tail = file.read(tail_size)
    if len(tail) == tail_size and tail[:4] == _END_SIGNATURE and tail[-_CHECKSUM_SIZE:-8] == _CHECKSUM_PREFIX:
        file.seek(0)
        crc, remaining = 0, size - 8
        while remaining:  # in chunks: a checkpoint may be larger than the memory to spare
            chunk = file.read(min(remaining, _READ_CHUNK))
            if not chunk:
                raise CheckpointError(f"Checkpoint {path!r} became shorter while it was read")
            crc = zlib.crc32(chunk, crc)
            remaining -= len(chunk)
        stored = tail[-8:].decode("ascii", "replace")
        if f"{crc:08x}" != stored:
            raise CheckpointError(
                f"Checkpoint {path!r} is corrupt: its content does not match its checksum (crc32 {stored} saved, "
                f"{crc:08x} now), so a disk or copy error changed it. Restore it from a copy or remove it"
            )
        return True
    if len(tail) >= _END_SIZE and tail[-_END_SIZE:-_END_SIZE + 4] == _END_SIGNATURE and tail[-2:] == b"\0\0":
        return False
    raise CheckpointError(
        f"Checkpoint {path!r} is truncated or corrupt: it ends neither with an ignite-checkpoint checksum nor "
        "like a torch file"
    )


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
    """``torch.save(payload)`` in memory, with room for the checksum in its zip comment (see
    :func:`_seal`, which fills it in). On the writer thread, from a :class:`_Snapshot`.

    Whoever holds the view releases it once written (``_Writer._run``): on Python 3.12.0 and
    3.12.1 the garbage collector crashes the process on a view of a BytesIO left in a reference
    cycle (CPython gh-111049), which a failed write's traceback makes."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    size = buffer.tell()
    with buffer.getbuffer() as view:
        end_record = bytes(view[size - _END_SIZE : size - _END_SIZE + 4]) if size >= _END_SIZE else b""
        if end_record != _END_SIGNATURE or view[size - 2 : size] != b"\0\0":
            raise RuntimeError("torch.save did not end its file with a zip end record without comment: cannot add a checksum")
        view[size - 2 : size] = _CHECKSUM_SIZE.to_bytes(2, "little")
    buffer.write(_CHECKSUM_PREFIX + b"0" * 8)
    return buffer.getbuffer()


def _seal(data: memoryview) -> None:
    """Write the CRC-32 of ``data`` (from :func:`_serialized`) into its last 8 bytes. On the
    writer thread: zlib releases the GIL, so the training thread does not pay for it."""
    data[-8:] = b"%08x" % zlib.crc32(data[:-8])


def _atomic_write(data: Any, path: str, directory_fd: int | None) -> None:
    """Write the serialized ``data`` (bytes-like) to ``path`` atomically and durably: to a
    temporary file, fsynced, renamed over ``path``, and the folder fsynced through
    ``directory_fd`` (see :func:`_open_directory`; None where folders cannot be opened).

    Plain ``os`` calls, as few as can do it: each system call on the writer thread gives the
    GIL away and back, and the training thread may wait each time (benchmarks/README.md)."""
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


class _HostBuffers:
    """Host memory that snapshots copy tensors into, reused by the next save of the same sizes:
    pinned (page-locked) for device tensors, so their copies are asynchronous, and plain for CPU
    tensors (a copy into a buffer already touched is several times faster than a clone). It
    holds one save's buffers at a time; :meth:`release` drops them at the run's end.

    Only the training thread uses it, and only once the previous save's writer is done with
    them (:meth:`Checkpoint._write` waits for that first)."""

    def __init__(self) -> None:
        self._free: dict[tuple[bool, int], list[torch.Tensor]] = {}
        self._used: dict[tuple[bool, int], list[torch.Tensor]] = {}
        self.allocations = 0  # buffers allocated since the plugin was made: what reuse saves

    def start(self) -> None:
        """Before a snapshot: the previous save's buffers become the ones to reuse."""
        for key, buffers in self._used.items():
            self._free.setdefault(key, []).extend(buffers)
        self._used = {}

    def take(self, nbytes: int, pinned: bool) -> torch.Tensor:
        """A uint8 buffer of ``nbytes`` bytes, reused if the previous save had one."""
        key = (pinned, nbytes)
        free = self._free.get(key)
        if free:
            buffer = free.pop()
        else:
            buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
            self.allocations += 1
        self._used.setdefault(key, []).append(buffer)
        return buffer

    def finish(self) -> None:
        """After a snapshot: buffers it did not reuse (other sizes now) are freed."""
        self._free = {}

    def release(self) -> None:
        """Drop every buffer (pinned memory goes back to torch's pinned-memory cache)."""
        self._free, self._used = {}, {}

    @property
    def held_bytes(self) -> int:
        return sum(key[1] * len(buffers) for held in (self._free, self._used) for key, buffers in held.items())


# Stored as they are: immutable, so the snapshot may share them with the live state.
_IMMUTABLE = frozenset(
    (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.layout, torch.memory_format,
     torch.Size)
)


class _Snapshot:
    """A copy of a checkpoint's payload at the moment of the save, taken on the training thread
    and serialized later on the writer thread: containers rebuilt, tensors copied to host
    buffers. A device (CUDA) tensor is copied with a non-blocking copy into pinned memory and
    the writer waits for :attr:`events`, recorded after the copies: the training thread does not
    wait for the device. Tensors sharing storage share it in the copy too (torch.save writes
    each storage once), so the file is the one torch.save of the live state would write, with
    every tensor on the CPU."""

    def __init__(self, buffers: _HostBuffers) -> None:
        self._buffers = buffers
        self._memo: dict[int, tuple[Any, Any]] = {}  # id -> (original, copy): shared objects stay shared
        self._storages: dict[tuple[torch.device, int], torch.UntypedStorage] = {}
        self._devices: set[torch.device] = set()
        self.sources: list[Any] = []  # device tensors being read: kept alive until the copies are done
        self.events: list[Any] = []

    def take(self, payload: Any) -> Any:
        self._buffers.start()
        try:
            copy_ = self._copy(payload)
        finally:
            self._buffers.finish()
        for device in self._devices:
            event = torch.cuda.Event()
            # The copies were enqueued on this stream, before any later step's kernels that change
            # the tensors: stream order makes them read the values of this moment.
            event.record(torch.cuda.current_stream(device))
            self.events.append(event)
        self._memo = {}
        return copy_

    def _copy(self, value: Any) -> Any:
        kind = type(value)
        if kind in _IMMUTABLE:
            return value
        memo = self._memo.get(id(value))
        if memo is not None:
            return memo[1]
        if isinstance(value, torch.Tensor):
            result: Any = self._tensor(value)
        elif kind in (dict, collections.OrderedDict, collections.Counter):
            result = kind()
            self._memo[id(value)] = (value, result)  # before the items: a container may hold itself
            for key, item in value.items():
                result[key] = self._copy(item)
            if value.__dict__ if kind is not dict else False:  # e.g. a module state dict's _metadata
                result.__dict__.update(self._copy(dict(value.__dict__)))
        elif kind is list:
            result = []
            self._memo[id(value)] = (value, result)
            result.extend(self._copy(item) for item in value)
        elif kind is tuple:
            result = tuple(self._copy(item) for item in value)
        elif kind is set:
            result = set(value)  # items of sets are hashable, and encode() allows only immutable ones there
        else:  # a type the user allowed with add_safe_globals, bytearray
            result = copy.deepcopy(value)
        self._memo[id(value)] = (value, result)
        return result

    def _tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        device = tensor.device
        if (
            type(tensor) not in (torch.Tensor, torch.nn.Parameter)
            or tensor.layout != torch.strided
            or tensor.is_quantized
            or tensor.is_conj()
            or tensor.is_neg()
            or device.type not in ("cpu", "cuda")
        ):
            # Rare kinds (sparse, quantized, subclasses, other devices): a copy on their own
            # device, which torch.save moves to the host on the writer thread.
            if device.type == "cuda":
                self._devices.add(device)
            return copy.deepcopy(tensor.detach())
        storage = tensor.untyped_storage()
        key = (device, storage.data_ptr())
        host = self._storages.get(key) if storage.nbytes() else None
        if host is None:
            nbytes = storage.nbytes()
            buffer = self._buffers.take(nbytes, pinned=device.type == "cuda")
            # Copied as 4-byte words where they fit: a uint8 copy_ on the CPU went through a
            # slow multithreaded path (340 us for 256 kB on 2 cores, against 4 us as int32).
            words = torch.int32 if nbytes % 4 == 0 else torch.int16 if nbytes % 2 == 0 else torch.uint8
            source = torch.empty(0, dtype=torch.uint8, device=device).set_(storage).view(words)
            if device.type == "cuda":
                buffer.view(words).copy_(source, non_blocking=True)
                self._devices.add(device)
                self.sources.append(source)
            else:
                buffer.view(words).copy_(source)
            host = self._storages[key] = buffer.untyped_storage()
        copied = torch.empty(0, dtype=tensor.dtype).set_(host, tensor.storage_offset(), tensor.size(), tensor.stride())
        if type(tensor) is torch.nn.Parameter:
            return torch.nn.Parameter(copied, requires_grad=tensor.requires_grad)
        return copied.requires_grad_(tensor.requires_grad) if tensor.requires_grad else copied


def _holds_device_tensors(value: Any) -> bool:
    """Whether a payload holds a tensor that is not on the CPU (a CUDA model or optimizer)."""
    if isinstance(value, torch.Tensor):
        return value.device.type != "cpu"
    if isinstance(value, Mapping):
        return any(_holds_device_tensors(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_device_tensors(item) for item in value)
    return False


class _BackgroundWriter:
    """Serializes and writes checkpoints on a thread of its own, one at a time.

    The training thread hands it a snapshot (see :class:`_Snapshot`): this thread waits for the
    snapshot's device copies, serializes it with torch.save, computes the checksum and writes,
    fsyncs and renames, tens of milliseconds on a plain disk, while the next iterations run. A
    new save first waits for the previous job (its buffers are reused); ``wait()`` makes every
    checkpoint durable and re-raises a job's error on the training thread; ``close()`` (at the
    end of a run) also ends the thread.

    The thread lives from the first save to ``close()``: a thread started per save made the
    training thread wait for the GIL that the new thread took at once (benchmarks/README.md).
    """

    def __init__(self, dirname: str) -> None:
        self._dirname = dirname
        self._jobs: queue.SimpleQueue[
            tuple[Any, _Snapshot | None, str, Callable[[], None], Callable[[], None] | None, threading.Event] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._written: threading.Event | None = None  # set once the newest job is finished
        self._error: BaseException | None = None

    def submit(
        self,
        payload: Any,
        snapshot: _Snapshot | None,
        path: str,
        done: Callable[[], None],
        first: Callable[[], None] | None = None,
    ) -> None:
        """Once ``snapshot``'s copies are done, serialize ``payload`` (its result) and write it
        to ``path``, then call ``done``. Without a snapshot, ``payload`` is already serialized
        (:func:`_serialized`). ``first`` runs before all that (a sharded save: wait for its shards)."""
        try:
            self.wait()
        except BaseException:
            if isinstance(payload, memoryview):
                payload.release()  # the bytes are the writer's from here on (see _serialized)
            raise
        self._written = threading.Event()
        self._jobs.put((payload, snapshot, path, done, first, self._written))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ignite-checkpoint-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        # Opened once, not at every save: two system calls fewer a checkpoint (see _atomic_write).
        directory_fd = _open_directory(self._dirname)
        try:
            while (job := self._jobs.get()) is not None:
                payload, snapshot, path, done, first, written = job
                del job
                data: Any = payload if snapshot is None else None  # already serialized without a snapshot
                try:
                    if first is not None:
                        first()
                    if snapshot is not None:
                        for event in snapshot.events:
                            event.synchronize()  # here, not on the training thread: it releases the GIL
                        snapshot.sources.clear()  # copied: the device may reuse their memory
                        data = _serialized(payload)
                    del payload  # only the bytes are needed now
                    _seal(data)
                    _atomic_write(data, path, directory_fd)
                    done()
                except BaseException as error:  # handed to the training thread by wait()
                    error.add_note(f"while writing the checkpoint {path} on the ignite-checkpoint-writer thread")
                    self._error = error
                finally:
                    if isinstance(data, memoryview):
                        data.release()  # see _serialized
                    payload = data = snapshot = first = None
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


# Lock descriptors this process holds: a forked child (a DataLoader worker) closes its copies,
# so the lock goes with the process that took it, not with its longest-lived child.
_HELD_LOCKS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _HELD_LOCKS:
        try:
            os.close(fd)
        except OSError:  # pragma: no cover - already closed
            pass
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


def _lock_folder(dirname: str) -> int | None:
    """Take the folder's lock (``fcntl.flock`` on :data:`LOCK_NAME`, which then names this
    process) and return its descriptor, held until :func:`_unlock_folder` or the process ends.
    Raises :class:`CheckpointError` naming the holder when another run holds it. None where
    the platform or filesystem has no locks (with a warning)."""
    if fcntl is None:  # pragma: no cover - Windows
        logger.warning("No folder lock on this platform: make sure one run at a time writes %s", dirname)
        return None
    path = os.path.join(dirname, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "a process that has not written its name yet"
        os.close(fd)
        raise CheckpointError(
            f"Checkpoint folder {dirname!r} is in use by another run ({holder}; lock file {path}): two runs writing "
            "one folder would delete each other's files. Give this run another dir, or stop that one first "
            "(its lock goes when its process ends)"
        ) from None
    except OSError as error:  # e.g. ENOLCK: a filesystem without locks
        os.close(fd)
        logger.warning("Cannot lock %s (%s: %s): make sure one run at a time writes it", path, type(error).__name__, error)
        return None
    record = (
        f"pid {os.getpid()} on host {socket.gethostname()}, "
        f"since {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}\n"
    ).encode()
    os.pwrite(fd, record, 0)  # written before truncating: a reader never sees it empty
    os.ftruncate(fd, len(record))
    _HELD_LOCKS.add(fd)
    return fd


def _unlock_folder(fd: int | None) -> None:
    """Release a lock from :func:`_lock_folder`; the lock file stays (removing it would race
    with a run opening it)."""
    if fd is not None:
        _HELD_LOCKS.discard(fd)
        os.close(fd)


def _module_misfit(path: str, name: str, module: torch.nn.Module, state: Any) -> str | None:
    """Why ``state`` cannot load into ``module`` (keys and shapes, as a strict
    ``load_state_dict`` needs them), or None; checked before anything is restored."""
    where = f"objects[{name!r}] ({type(module).__name__})"
    fix = "resume with the model it was saved with, or give this run another dir"
    if not isinstance(state, Mapping):
        return f"Checkpoint {path!r} holds a {type(state).__name__} for {where}, not a state dict: {fix}"
    current = module.state_dict()
    missing = [key for key in current if key not in state]
    unexpected = [key for key in state if key not in current]
    if missing or unexpected:
        return (
            f"Checkpoint {path!r} does not fit {where}: keys missing from the checkpoint {missing[:5]}, keys the "
            f"model lacks {unexpected[:5]}: {fix}"
        )
    for key, value in current.items():
        if not isinstance(value, torch.Tensor) or torch.nn.parameter.is_lazy(value):
            continue
        saved = state[key]
        if not isinstance(saved, torch.Tensor):
            return f"Checkpoint {path!r} holds a {type(saved).__name__} for {where}[{key!r}], not a tensor: {fix}"
        if saved.shape != value.shape:
            return (
                f"Checkpoint {path!r} does not fit {where}: {key!r} has shape {tuple(saved.shape)} in the checkpoint "
                f"and {tuple(value.shape)} in this model: {fix}"
            )
    return None


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


class _Sharded:
    """The objects saved with torch.distributed.checkpoint: modules with DTensor parameters
    (sharded with FSDP2's ``fully_shard``, or otherwise), and the optimizers of their
    parameters, each paired with the module whose parameter names key its state."""

    def __init__(self, objects: Mapping[str, Any]) -> None:
        from torch.distributed.tensor import DTensor

        self.modules: dict[str, torch.nn.Module] = {
            name: obj
            for name, obj in objects.items()
            if isinstance(obj, torch.nn.Module) and any(isinstance(p, DTensor) for p in obj.parameters())
        }
        if self.modules and _TORCH < _SHARDED_TORCH:
            raise ValueError(
                f"checkpoint option objects[{next(iter(self.modules))!r}] is sharded (DTensor parameters), and sharded "
                f"checkpoints need torch {'.'.join(map(str, _SHARDED_TORCH))} or newer (torch.distributed.checkpoint's "
                f"DefaultStager); this is torch {torch.__version__}: upgrade torch"
            )
        self.optimizers: dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]] = {}
        for name, obj in objects.items():
            if not isinstance(obj, torch.optim.Optimizer):
                continue
            parameters = {id(p) for group in obj.param_groups for p in group["params"]}
            if not any(isinstance(p, DTensor) for group in obj.param_groups for p in group["params"]):
                continue
            owner = next((m for m in self.modules.values() if parameters <= {id(p) for p in m.parameters()}), None)
            if owner is None:
                raise ValueError(
                    f"checkpoint option objects[{name!r}] ({type(obj).__name__}) optimizes sharded (DTensor) "
                    "parameters, and no sharded module in objects holds all of them: name the model it optimizes in "
                    f"objects too, e.g. {{'model': model, {name!r}: optimizer}} (torch.distributed.checkpoint keys an "
                    "optimizer's state by its model's parameter names)"
                )
            self.optimizers[name] = (owner, obj)
        #: Name -> "model" or "optimizer": what a sharded checkpoint's state file records.
        self.kinds: dict[str, str] = {**dict.fromkeys(self.modules, "model"), **dict.fromkeys(self.optimizers, "optimizer")}

    def state_dicts(self) -> dict[str, Any]:
        """Each object's sharded state (its DTensors are the live shards: no copy), by name."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        states: dict[str, Any] = {name: get_model_state_dict(module) for name, module in self.modules.items()}
        for name, (module, optimizer) in self.optimizers.items():
            states[name] = get_optimizer_state_dict(module, optimizer)
        return states

    def load_state_dicts(self, states: Mapping[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        for name, module in self.modules.items():
            set_model_state_dict(module, states[name])
        for name, (module, optimizer) in self.optimizers.items():
            set_optimizer_state_dict(module, optimizer, states[name])

    def on_cuda(self) -> bool:
        return any(p.device.type == "cuda" for module in self.modules.values() for p in module.parameters())


def _remove_tree(path: str) -> None:
    """Remove a checkpoint folder: renamed to a temporary name first, so that a removal cut
    short leaves no half folder under a checkpoint's name (the next start sweeps it)."""
    dirname, name = os.path.split(path)
    doomed = os.path.join(dirname, f"{_TEMPORARY_PREFIX}{name}.removed{_TEMPORARY_SUFFIX}")
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _publish_folder(temporary: str, path: str) -> None:
    """Rename a finished sharded save's folder to its final name, durably. A folder already
    there (a save of the same epoch and iteration, e.g. the epoch's after its last batch's) is
    set aside first and removed once the new one is in place; if the process dies between the
    two renames, the next start puts it back."""
    _fsync_folder(temporary)  # the entries of DCP's files and of the state file
    aside = None
    if os.path.exists(path):
        dirname, name = os.path.split(path)
        aside = os.path.join(dirname, f"{_TEMPORARY_PREFIX}{name}{_REPLACED_SUFFIX}")
        os.rename(path, aside)
    os.rename(temporary, path)
    _fsync_folder(os.path.dirname(path) or ".")
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _shards_written(upload: Future[Any], path: str) -> None:
    """Wait for a sharded save's upload; its failure becomes a CheckpointError naming the
    checkpoint and each failed rank (DCP's CheckpointException is a BaseException, which
    ``except Exception`` would not catch)."""
    from torch.distributed.checkpoint import CheckpointException

    try:
        upload.result()
    except CheckpointException as error:
        # Each failure is the exception, or (exception, traceback summary) in torch 2.13.
        failures = {rank: found[0] if isinstance(found, tuple) else found for rank, found in error.failures.items()}
        reasons = "; ".join(f"rank {rank}: {type(failure).__name__}: {failure}" for rank, failure in failures.items())
        raise CheckpointError(f"Writing the shards of {path} with torch.distributed.checkpoint failed ({reasons})") from error
    except Exception as error:
        raise CheckpointError(
            f"Writing the shards of {path} with torch.distributed.checkpoint failed: {type(error).__name__}: {error}"
        ) from error


def _fsync_folder(folder: str) -> None:
    fd = _open_directory(folder)
    if fd is not None:
        try:
            _fsync_directory(fd)
        finally:
            os.close(fd)


def _check_sharding(path: str, state: Mapping[str, Any], kinds: Mapping[str, str]) -> None:
    """Refuse a checkpoint whose objects were sharded where this run's are not, or the reverse."""
    saved = state.get("sharded")
    if kinds and saved is None:
        raise CheckpointError(
            f"Checkpoint {path!r} was saved by a run whose objects were not sharded (one file), and this run's "
            f"{', '.join(f'objects[{name!r}]' for name in kinds)} are sharded (DTensor parameters): resume it with "
            "the model as it was saved (unsharded, or in DDP), or give this run another dir. Its model state is a "
            "full state dict: torch.distributed.checkpoint.state_dict.set_model_state_dict(model, state, "
            "options=StateDictOptions(full_state_dict=True)) loads it into a sharded model"
        )
    if saved is not None and not kinds:
        raise CheckpointError(
            f"Checkpoint {path!r} is sharded (saved with torch.distributed.checkpoint, its "
            f"{', '.join(f'objects[{name!r}]' for name in saved)} as shards), and this run's objects are not sharded: "
            "resume it with the model sharded as it was (fully_shard), or give this run another dir; "
            "torch.distributed.checkpoint.format_utils.dcp_to_torch_save turns its shards into one torch file"
        )
    if saved is not None:
        # A name saved as shards and given now unsharded, or sharded now as another kind; names
        # sharded now and absent from the checkpoint are reported as missing.
        differ = sorted(name for name in kinds if name in saved and saved[name] != kinds[name])
        if differ:
            raise CheckpointError(
                f"Sharded checkpoint {path!r} holds shards of {sorted(saved)} and this run shards {sorted(kinds)} "
                f"(they differ on {differ}): resume with the objects it was saved with, or give this run another dir"
            )


def _order(name: str) -> tuple[int, int]:
    """(epoch, iteration) of a checkpoint's file name: the order list_checkpoints sorts by."""
    match = _NAME.fullmatch(name)
    assert match is not None, name
    return int(match.group(1)), int(match.group(2))


def _raise_for_other_ranks(reasons: list[str | None], what: str) -> None:
    """Raise a CheckpointError naming the first rank whose reason is not None: every rank
    stops, instead of the others waiting for it in their next collective."""
    failed = [(rank, reason) for rank, reason in enumerate(reasons) if reason is not None]
    if failed:
        rank, reason = failed[0]
        raise CheckpointError(f"rank {rank} {what}: {reason}")


def _no_common_checkpoint(dirname: str, names: list[str | None], unreadable: dict[str, str]) -> str:
    lacking = [rank for rank, name in enumerate(names) if name is None]
    having = next((rank, name) for rank, name in enumerate(names) if name is not None)
    here = distributed.rank()
    reasons = "; ".join(unreadable.values()) if here in lacking and unreadable else "none there, or see that rank's log"
    return (
        f"resume=True: rank {lacking[0]} can read no checkpoint ({reasons}), while rank {having[0]} would resume "
        f"from {having[1]}: every rank must read the checkpoints that rank 0 writes, so dir ({dirname!r} on rank "
        f"{here}) must be storage that all of them see (a shared filesystem, not a folder per node)"
    )


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
        dir: folder of the checkpoints, created at TRAINING_STARTED. Without it the plugin
            is inactive.
        objects: what to save beside the trainer, by name: anything with ``state_dict()`` and
            ``load_state_dict()`` (models, optimizers, LR schedulers, GradScalers).
        every_iterations: save after every this many training iterations (global count).
        every_epochs: save after every this many epochs. When neither is given: 1.
        keep: how many of this run's readable checkpoints to keep (the newest ones); None keeps
            all. Files that cannot be read are never counted nor deleted.
        resume: at TRAINING_STARTED, load the newest checkpoint in ``dir`` that can be
            read (unreadable ones are skipped with a warning and renamed ``*.unreadable``) and
            continue from it. When checkpoints exist and none can be read: CheckpointError.
        start_over_if_unreadable: with ``resume``, start from scratch instead of raising when
            no checkpoint in ``dir`` can be read (they are kept, renamed ``*.unreadable``).
        save_on_interrupt: on KeyboardInterrupt, save a checkpoint of the point reached before
            the exception goes on; on preemption (SIGTERM during the run, see
            ``ignite.Preempted``), at TRAINING_COMPLETED, save the point where every rank
            stopped (unless the newest checkpoint holds it), before run() raises Preempted.
        background_serialization: True: a save copies the state to host buffers (pinned, with
            non-blocking copies, for device tensors) and torch.save runs on the writer thread;
            False: torch.save runs on the training thread, in one go. None (the default): True
            when the state holds device (CUDA) tensors, False for a state on the CPU alone,
            where on 2 cores the writer's serializing slowed the next steps by about what it
            took off the save (see the README).

    Only the main process (rank 0) writes files, and it locks the folder for the run (a second
    run writing it is refused at TRAINING_STARTED); every rank loads on resume, so the folder
    must be visible to all of them. Objects sharded with FSDP2 (DTensor parameters) are the
    exception: every rank writes its shards with torch.distributed.checkpoint (see the module
    docstring and the README).
    """

    #: Last among plugins at each event (ignite.hookspecs): it saves what the controllers decided.
    ignite_phase = "checkpoint"

    def __init__(
        self,
        dir: str | os.PathLike[str] | None = None,
        objects: Mapping[str, Any] | None = None,
        every_iterations: int | None = None,
        every_epochs: int | None = None,
        keep: int | None = 3,
        resume: bool = False,
        save_on_interrupt: bool = True,
        start_over_if_unreadable: bool = False,
        background_serialization: bool | None = None,
    ) -> None:
        if dir is None:
            raise ignite.PluginInactive(
                "no folder to write to: pass plugins={'checkpoint': {'dir': 'checkpoints', "
                "'objects': {'model': model, 'optimizer': optimizer}}}"
            )
        if not isinstance(dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint option dir must be a path (str or os.PathLike); got {type(dir).__name__}")
        self.dir = os.fspath(dir)
        if not self.dir:
            raise ValueError("checkpoint option dir must not be empty; pass '.' for the current folder")
        self.objects = _check_objects(objects)
        self._sharded = _Sharded(self.objects)  # saved with torch.distributed.checkpoint, when any
        self.every_iterations = _positive_int_or_none("every_iterations", every_iterations)
        self.every_epochs = _positive_int_or_none("every_epochs", every_epochs)
        if self.every_iterations is None and self.every_epochs is None:
            self.every_epochs = 1
        self.keep = _positive_int_or_none("keep", keep)
        self.resume = _check_bool("resume", resume)
        self.save_on_interrupt = _check_bool("save_on_interrupt", save_on_interrupt)
        self.start_over_if_unreadable = _check_bool("start_over_if_unreadable", start_over_if_unreadable)
        if background_serialization is not None:
            _check_bool("background_serialization", background_serialization)
        self.background_serialization = background_serialization
        self._started = False  # TRAINING_STARTED seen: resume only once
        self._ready = False  # TRAINING_STARTED done (resumed if asked): interrupts may save
        self._written: list[str] = []  # this run's checkpoints, oldest first: what keep prunes
        self._saved_iteration: int | None = None  # the global iteration of the newest of them
        self._last_save_iteration: int | None = None  # of the newest save asked for, known on every rank
        self._writer = _BackgroundWriter(self.dir)
        self._buffers = _HostBuffers()  # the snapshots' host memory, reused from save to save
        self._lock: int | None = None  # descriptor of the folder's lock, held from TRAINING_STARTED to the run's end
        # Sharded saves: their own gloo group (DCP's collectives run on the upload thread, beside the
        # training's), the newest save's upload, the staging buffers DCP reuses, a count for unique
        # temporary folders (a rank may start the next save before rank 0 renamed the previous one).
        self._save_group: Any = None
        self._upload: tuple[Future[Any], str] | None = None  # and the checkpoint it is part of
        self._stager: Any = None
        self._sharded_saves = 0

    # -- hooks --------------------------------------------------------------------------

    @hookimpl(tryfirst=True)
    def ignite_training_started(self, trainer: Trainer) -> None:
        """Create and lock the folder (rank 0), remove unfinished temporary files and, with
        ``resume``, load the newest good checkpoint (once per plugin instance: a second
        ``run()`` continues from where the first ended)."""
        if distributed.is_main_process() and self._lock is None:
            os.makedirs(self.dir, exist_ok=True)
            self._lock = _lock_folder(self.dir)
            # Only now: without the lock, these could be another run's saves in progress.
            self._remove_temporary_files()
        if self._sharded.kinds and self._save_group is None and torch.distributed.is_initialized():
            # On every rank, after rank 0's sweep above: no rank writes a shard before this returns.
            self._save_group = torch.distributed.new_group(backend="gloo")
        if self._started:
            return
        self._started = True
        existing = list_checkpoints(self.dir)
        if self.resume:
            self._resume(trainer, existing)
        elif existing and distributed.is_main_process():
            logger.warning(
                "%s already holds %d checkpoint(s), the newest %s; resume=False: this run starts from scratch "
                "and leaves them alone (keep does not prune them). A later resume=True picks the newest by epoch "
                "and iteration, which may be one of them: remove them or use another dir.",
                self.dir,
                len(existing),
                os.path.basename(existing[-1]),
            )
        self._ready = True

    def ignite_every(self) -> dict[str, int | None]:
        """Save every ``every_iterations`` iterations and every ``every_epochs`` epochs; a
        period of None leaves that hook out, so the training iterations cost nothing."""
        return {"ignite_training_iteration_completed": self.every_iterations, "ignite_epoch_completed": self.every_epochs}

    @hookimpl
    def ignite_training_iteration_completed(self, trainer: Trainer) -> None:
        """Save (when the global iteration is a multiple of ``every_iterations``)."""
        self.save(trainer)

    @hookimpl
    def ignite_epoch_completed(self, trainer: Trainer) -> None:
        """Save (when the epoch number is a multiple of ``every_epochs``)."""
        self.save(trainer)

    @hookimpl
    def ignite_training_completed(self, trainer: Trainer) -> None:
        """On preemption, save the point where the ranks stopped; wait until the last
        checkpoint is on disk, then release the folder."""
        try:
            try:
                self._save_on_preemption(trainer)
            finally:
                try:
                    self._close_sharded()
                finally:
                    self._writer.close()
        finally:
            self._release()

    @hookimpl
    def ignite_exception_raised(self, trainer: Trainer, exception: BaseException) -> None:
        """Finish the pending write; on KeyboardInterrupt, save the point reached, unless the
        newest checkpoint already holds it (see the README for what an interrupt inside an
        update means). Never a collective here: a failing rank must exit at once, so a sharded
        save of several ranks still in progress is abandoned (it never becomes a checkpoint)."""
        if self._upload is not None and distributed.world_size() > 1:
            # Its upload may wait for a rank that is gone; the finished checkpoints stay.
            logger.warning("The sharded save %s in progress is abandoned: this rank stops", self._upload[1])
            self._upload = None
            self._writer = _BackgroundWriter(self.dir)  # the old one's job would wait for that upload
            self._stager = None
        try:
            self._close_sharded()
            self._writer.wait()
        except Exception:  # the run's own exception is the one to report
            logger.exception("Writing the last checkpoint failed")
        try:
            self._save_on_interrupt(trainer, exception)
        finally:
            try:
                self._writer.close()
            finally:
                self._release()

    def _release(self) -> None:
        # The writer is done (closed): its buffers are not needed until the next run's first save.
        self._buffers.release()
        lock, self._lock = self._lock, None
        _unlock_folder(lock)

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
        sharded = bool(self._sharded.kinds)
        path = os.path.join(self.dir, checkpoint_name(state["current_epoch"], iteration, sharded))
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
        if sharded:  # one process: DCP's collectives have no one to wait for
            self._save_sharded(state, None)
            self._wait_upload()
        else:
            self._write(state, path, None)
        self._writer.wait()
        logger.info("Interrupted: saved %s (epoch %d, iteration %d)", path, state["current_epoch"], iteration)

    def _save_on_preemption(self, trainer: Trainer) -> None:
        """After a stop for SIGTERM (``trainer.preempted``, true on every rank at the same
        point, so the save's gather is safe), save that point unless the newest checkpoint
        holds it already. Every rank decides alike, on what every rank knows."""
        if not (self.save_on_interrupt and trainer.preempted and self._ready):
            return
        self._writer.wait()
        if self._last_save_iteration == trainer.current_iteration:
            if distributed.is_main_process():
                logger.info(
                    "Preempted at iteration %d, which the newest checkpoint already holds: nothing to save",
                    trainer.current_iteration,
                )
            return
        path = self.save(trainer)
        self._writer.wait()
        if path is not None:
            logger.info("Preempted: saved %s (epoch %d, iteration %d)", path, trainer.current_epoch, trainer.current_iteration)

    # -- saving -------------------------------------------------------------------------

    def wait(self) -> None:
        """Block until every checkpoint saved so far is complete on disk (the run's end does
        this itself); re-raises the error of a failed write."""
        self._wait_upload()
        self._writer.wait()

    def save(self, trainer: Trainer) -> str | None:
        """Save a checkpoint of the trainer now and prune old ones; returns the path, which
        is complete on disk once the run ends (the write finishes in the background). In a
        distributed run call it on every rank: each rank's trainer state (its histories, its
        RNG streams) is gathered to rank 0, which writes; other ranks return None. With
        sharded objects every rank writes its shards, and the ranks learn, in that same gather,
        whether each wrote its part of the previous save: if one did not, every rank raises here
        (none starts a save that another would leave waiting)."""
        state = trainer.state_dict()
        failure = self._finish_sharded_save() if self._sharded.kinds else None
        ranks = None
        if distributed.world_size() > 1:
            gathered = distributed.all_gather_object((state, None if failure is None else f"{type(failure).__name__}: {failure}"))
            ranks = [rank_state for rank_state, _ in gathered]
            if failure is None:
                _raise_for_other_ranks(
                    [reason for _, reason in gathered], "could not write its part of the previous sharded checkpoint"
                )
        if failure is not None:
            raise failure
        self._last_save_iteration = state["current_iteration"]  # on every rank (see _save_on_preemption)
        if self._sharded.kinds:
            return self._save_sharded(state, ranks)
        if not distributed.is_main_process():
            return None
        path = os.path.join(self.dir, checkpoint_name(state["current_epoch"], state["current_iteration"]))
        self._write(state, path, ranks)
        logger.debug("Saving %s", path)
        return path

    def _save_sharded(self, trainer_state: dict[str, Any], ranks: list[dict[str, Any]] | None) -> str | None:
        """Every rank: write this rank's shards into a temporary folder with DCP's async_save
        (the training thread only copies them to host buffers); rank 0: once every rank's are
        on disk, write the state file there and rename the folder to its final name."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

        self._sharded_saves += 1  # alike on every rank: saves happen at the same points
        path = os.path.join(self.dir, checkpoint_name(trainer_state["current_epoch"], trainer_state["current_iteration"], True))
        temporary = os.path.join(
            self.dir, f"{_TEMPORARY_PREFIX}{os.path.basename(path)}.{self._sharded_saves}{_TEMPORARY_SUFFIX}"
        )
        if self._stager is None or not _STAGER_REUSABLE:
            if self._stager is not None:
                self._stager.close()
            cuda = self._sharded.on_cuda()
            # On the GPU: pinned buffers, non-blocking copies, one wait for them per save.
            self._stager = DefaultStager(StagingOptions(cuda, False, False, cuda))
        upload = dcp.async_save(
            self._sharded.state_dicts(), checkpoint_id=temporary, process_group=self._save_group, async_stager=self._stager
        )
        assert isinstance(upload, Future), type(upload)  # a synchronous stager: no separate staging future
        self._upload = (upload, path)
        if not distributed.is_main_process():
            return None
        self._write(trainer_state, path, ranks, (temporary, upload))
        logger.debug("Saving %s", path)
        return path

    def _finish_sharded_save(self) -> BaseException | None:
        """Wait for the previous sharded save (this rank's shards; on rank 0 its publication
        too): the staging buffers are reused, and every rank must know how it ended."""
        try:
            self._wait_upload()
            if distributed.is_main_process():
                self._writer.wait()
        except Exception as error:
            return error
        return None

    def _wait_upload(self) -> None:
        """Wait until this rank's shards of the newest sharded save are written. Rank 0 hears
        of a failed upload through its writer (which waits for it too); other ranks here."""
        pending, self._upload = self._upload, None
        if pending is None:
            return
        upload, path = pending
        if distributed.is_main_process():
            concurrent.futures.wait([upload])
            return
        _shards_written(upload, path)

    def _close_sharded(self) -> None:
        self._wait_upload()
        stager, self._stager = self._stager, None
        if stager is not None:
            stager.close()

    def _write(
        self,
        trainer_state: dict[str, Any],
        path: str,
        ranks: list[dict[str, Any]] | None,
        sharded: tuple[str, Future[Any]] | None = None,
    ) -> None:
        """Rank 0: write the checkpoint file at ``path``; with ``sharded`` (the temporary folder
        and its upload), its state file in that folder, published as ``path`` once uploaded."""
        payload: dict[str, Any] = {
            "format": FORMAT,
            # Refuses here, naming where, what a weights-only load would refuse; the trainer's
            # state comes encoded from trainer.state_dict().
            "trainer": trainer_state,
            "objects": {
                name: encode(obj.state_dict(), f"objects[{name!r}]")
                for name, obj in self.objects.items()
                if name not in self._sharded.kinds
            },
        }
        if ranks is not None:
            payload["trainer_ranks"] = ranks
        if sharded is not None:
            payload["sharded"] = self._sharded.kinds
        background = self.background_serialization
        if background is None:
            background = _holds_device_tensors(payload)
        snapshot: _Snapshot | None = None
        if background:
            # The previous job first: its snapshot's buffers are the ones this one reuses.
            self._writer.wait()
            # Copied here, so the file holds this moment though it is serialized and written later.
            snapshot = _Snapshot(self._buffers)
            data = snapshot.take(payload)
        else:
            # Serialized here, in one go: torch.save reads this moment; no copy to make first.
            data = _serialized(payload)
        iteration = trainer_state["current_iteration"]

        def written() -> None:
            self._saved_iteration = iteration
            # An iteration save on an epoch's last batch and the epoch save share a name: the
            # later, more complete state replaced the earlier one atomically.
            if path in self._written:
                self._written.remove(path)
            self._written.append(path)
            self._prune()

        if sharded is None:
            self._writer.submit(data, snapshot, path, written)
            return
        temporary, upload = sharded

        def published() -> None:
            _publish_folder(temporary, path)
            written()

        # Every rank's shards are on disk once this rank's upload is done: DCP's coordinator waits for them.
        self._writer.submit(
            data, snapshot, os.path.join(temporary, SHARDED_STATE_FILE), published, lambda: _shards_written(upload, path)
        )

    def _prune(self) -> None:
        if self.keep is None:
            return
        while len(self._written) > self.keep:
            old = self._written.pop(0)
            if os.path.isdir(old):
                _remove_tree(old)
                continue
            try:
                os.unlink(old)
            except FileNotFoundError:
                pass

    def _remove_temporary_files(self) -> None:
        removed = 0
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.startswith(_TEMPORARY_PREFIX) and name.endswith(_REPLACED_SUFFIX):
                final = os.path.join(self.dir, name[len(_TEMPORARY_PREFIX) : -len(_REPLACED_SUFFIX)])
                if os.path.exists(final):  # its replacement landed
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.rename(path, final)
                    logger.warning("Put back %s, set aside for a replacement that was never finished", final)
            elif name.startswith(_TEMPORARY_PREFIX) and name.endswith(_TEMPORARY_SUFFIX):
                try:
                    if os.path.isdir(path):  # an unfinished sharded save
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
                    removed += 1
                except FileNotFoundError:  # pragma: no cover - removed meanwhile
                    pass
        if removed:
            logger.info("Removed %d unfinished temporary checkpoint file(s) from %s", removed, self.dir)

    # -- resuming -----------------------------------------------------------------------

    def _resume(self, trainer: Trainer, existing: list[str]) -> None:
        # Every rank loads; only rank 0 logs, renames and prunes. The ranks agree on the file:
        # each picks the newest it can read, and all go back to the oldest of their picks.
        main = distributed.is_main_process()
        unreadable: dict[str, str] = {}  # path -> why it was skipped, on this rank
        newest_allowed: tuple[int, int] | None = None
        while True:
            found, fatal = self._newest_readable(existing, unreadable, newest_allowed)
            picks = distributed.all_gather_object(
                (None if found is None else os.path.basename(found[0]), None if fatal is None else str(fatal))
            )
            if fatal is not None:
                raise fatal
            _raise_for_other_ranks([reason for _, reason in picks], "cannot resume")
            names = [name for name, _ in picks]
            if len(set(names)) == 1:
                break
            if None in names:
                raise CheckpointError(_no_common_checkpoint(self.dir, names, unreadable))
            newest_allowed = min(_order(name) for name in names)
        if found is None:
            seen = distributed.all_gather_object(len(existing))
            if min(seen) == 0 < max(seen):
                raise CheckpointError(
                    f"resume=True: rank {seen.index(0)} sees no checkpoint in {self.dir!r} while rank "
                    f"{seen.index(max(seen))} sees {max(seen)}: every rank must read the checkpoints that rank 0 writes, "
                    "so dir must be storage that all of them see (a shared filesystem, not a folder per node)"
                )
            self._start_from_scratch(existing, unreadable)
            return
        path, state = found
        # A checkpoint that does not fit (other shapes, objects, world size) is the run's
        # configuration error: it raises, with nothing restored and nothing renamed.
        failure = None
        try:
            self._restore(trainer, path, state)
        except Exception as error:
            failure = error
        outcomes = distributed.all_gather_object(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        _raise_for_other_ranks(outcomes, f"could not restore {path!r}")
        index = existing.index(path)
        if main:
            self._set_aside(existing[index + 1 :])
            # This run's predecessors, readable ones only: keep prunes them.
            self._written = [*self._readable(existing[:index]), path]
        else:
            self._written = [path]
        self._saved_iteration = self._last_save_iteration = state["trainer"]["current_iteration"]

    def _newest_readable(
        self, existing: list[str], unreadable: dict[str, str], newest_allowed: tuple[int, int] | None
    ) -> tuple[tuple[str, dict[str, Any]] | None, NewerFormatError | None]:
        """The newest checkpoint this rank can read, no newer than ``newest_allowed``, with
        its state; or a fatal error (a newer format: falling back to an older file would lose
        work), returned so that every rank hears of it before it is raised."""
        for path in reversed(existing):
            if path in unreadable or (newest_allowed is not None and _order(os.path.basename(path)) > newest_allowed):
                continue
            try:
                return (path, load_checkpoint(path)), None
            except NewerFormatError as error:
                return None, error
            except CheckpointError as error:
                if distributed.is_main_process():
                    logger.warning("Skipping %s; trying the previous checkpoint", error)
                unreadable[path] = str(error)
        return None, None

    def _start_from_scratch(self, existing: list[str], unreadable: dict[str, str]) -> None:
        main = distributed.is_main_process()
        if not existing:
            if main:
                logger.info("resume=True: no checkpoint in %s yet; starting from scratch", self.dir)
            return
        listing = "\n".join(f"  - {unreadable.get(path, path)}" for path in existing)
        if not self.start_over_if_unreadable:
            raise CheckpointError(
                f"resume=True: none of the {len(existing)} checkpoint(s) in {self.dir!r} can be read, and "
                f"starting from scratch would write over them:\n{listing}\nRestore them from a copy, move them "
                "away, or pass start_over_if_unreadable=True to start from scratch (they are then kept, renamed "
                f"*{_UNREADABLE_SUFFIX})"
            )
        if main:
            logger.warning(
                "resume=True, start_over_if_unreadable=True: none of the %d checkpoint(s) in %s can be read; "
                "starting from scratch:\n%s",
                len(existing),
                self.dir,
                listing,
            )
            self._set_aside(existing)

    def _set_aside(self, paths: list[str]) -> None:
        """Rename the unreadable checkpoints resume skipped to ``*.unreadable``: the resumed
        run writes the same names again, and an unreadable file is never deleted."""
        for path in paths:
            target, number = path + _UNREADABLE_SUFFIX, 1
            while os.path.exists(target):
                number += 1
                target = f"{path}{_UNREADABLE_SUFFIX}{number}"
            try:
                os.rename(path, target)
            except FileNotFoundError:  # removed meanwhile: nothing to keep
                continue
            logger.warning(
                "Renamed %s, which resume skipped (unreadable here or on another rank), to %s: kept for you, out of "
                "resume's and keep's way",
                path,
                target,
            )

    def _readable(self, paths: list[str]) -> list[str]:
        """The paths whose checkpoint can be read (checksum verified; a full load for older
        files without one); the others are logged and left alone. All of them without keep."""
        if self.keep is None:
            return list(paths)
        readable = []
        for path in paths:
            try:
                if os.path.isdir(path):  # sharded: its state file and DCP's metadata
                    load_checkpoint(path)
                else:
                    with open(path, "rb") as file:
                        verified = _verify_checksum(file, path)
                    if not verified:
                        load_checkpoint(path)
            except OSError as error:
                reason = f"{path}: {type(error).__name__}: {error}"
            except CheckpointError as error:
                reason = str(error)
            else:
                readable.append(path)
                continue
            logger.warning("%s; it is left alone and not counted by keep", reason)
        return readable

    def _restore(self, trainer: Trainer, path: str, state: dict[str, Any]) -> None:
        """Restore the trainer and the objects from ``state``, all or nothing: everything is
        validated before anything changes, and a step that fails anyway is rolled back."""
        kinds = self._sharded.kinds
        _check_sharding(path, state, kinds)
        saved = {**state["objects"], **state.get("sharded", {})}
        missing = [name for name in self.objects if name not in saved]
        if missing:
            raise CheckpointError(
                f"Checkpoint {path!r} holds no state for {', '.join(map(repr, missing))} (it has "
                f"{', '.join(map(repr, saved)) or 'none'}): resume with the objects it was saved with"
            )
        for name in saved:
            if name not in self.objects and distributed.is_main_process():
                logger.warning("Checkpoint %s holds a state for %r, which objects= does not name: not restored", path, name)
        trainer_state = self._own_trainer_state(path, state)
        states = {}
        for name in self.objects:
            if name in kinds:
                continue
            try:
                states[name] = decode(saved[name])
            except ValueError as error:  # an encoding this version does not know
                raise CheckpointError(f"Checkpoint {path!r}: objects[{name!r}] cannot be decoded: {error}") from error
        modules = [name for name, obj in self.objects.items() if isinstance(obj, torch.nn.Module) and name not in kinds]
        others = [name for name in self.objects if name not in modules and name not in kinds]
        for name in modules:
            misfit = _module_misfit(path, name, self.objects[name], states[name])
            if misfit is not None:
                raise CheckpointError(misfit)
        # Read into copies, on every rank (a collective): nothing changes unless all of it fits.
        shards = self._read_shards(path) if kinds else None
        # The states to go back to: the trainer's, and deep copies of the other objects'
        # (modules, validated above, are loaded last and need none).
        before = {name: self._snapshot(path, name) for name in others}
        trainer_before = trainer.state_dict()
        name = None  # the trainer first: it validates everything before changing anything
        try:
            for name in [None, *others, *modules]:
                target = trainer if name is None else self.objects[name]
                try:
                    target.load_state_dict(trainer_state if name is None else states[name])
                except Exception as error:
                    culprit = "its trainer state" if name is None else f"objects[{name!r}] ({type(target).__name__})"
                    raise CheckpointError(
                        f"Checkpoint {path!r}: {culprit} was refused, so nothing was restored: "
                        f"{type(error).__name__}: {error}"
                    ) from error
            if shards is not None:  # read and checked above; loaded last, like modules
                self._sharded.load_state_dicts(shards)
        except BaseException as error:
            # Every snapshot, not only those loaded: a plugin's state (LR reduction) may set an object.
            self._roll_back(trainer, trainer_before, before, error)
            raise
        if not distributed.is_main_process():
            return
        logger.info(
            "Resumed from %s: epoch %d, iteration %d (%s)",
            path,
            state["trainer"]["current_epoch"],
            state["trainer"]["current_iteration"],
            _where(state["trainer"]),
        )

    def _read_shards(self, path: str) -> dict[str, Any]:
        """The sharded objects' states in ``path``, read by torch.distributed.checkpoint into
        copies of their current states (which give the shards' layout on this run's ranks:
        DCP reshards a checkpoint saved by another number of ranks)."""
        import torch.distributed.checkpoint as dcp

        states = copy.deepcopy(self._sharded.state_dicts())
        try:
            dcp.load(states, checkpoint_id=path)
        except (Exception, dcp.CheckpointException) as error:  # the latter is a BaseException
            text = str(error).strip()
            raise CheckpointError(
                f"Sharded checkpoint {path!r} does not fit objects {', '.join(map(repr, self._sharded.kinds))} "
                f"(torch.distributed.checkpoint: {type(error).__name__}: {text.splitlines()[0] if text else ''}): resume "
                "with the model and optimizer it was saved with, or give this run another dir"
            ) from error
        return states

    def _snapshot(self, path: str, name: str) -> Any:
        try:
            return copy.deepcopy(self.objects[name].state_dict())
        except Exception as error:
            raise CheckpointError(
                f"Not resuming from {path!r}: the state of objects[{name!r}] cannot be copied to go back to if "
                f"restoring fails: {type(error).__name__}: {error}"
            ) from error

    def _roll_back(self, trainer: Trainer, trainer_before: dict[str, Any], before: dict[str, Any], error: BaseException) -> None:
        for name, state in before.items():
            try:
                self.objects[name].load_state_dict(state)
            except Exception as failure:  # the original error is the one to raise
                error.add_note(f"and objects[{name!r}] could not be put back: {type(failure).__name__}: {failure}")
        try:
            trainer.load_state_dict(trainer_before)
        except Exception as failure:
            error.add_note(f"and the trainer could not be put back: {type(failure).__name__}: {failure}")

    @staticmethod
    def _own_trainer_state(path: str, state: dict[str, Any]) -> dict[str, Any]:
        """This rank's trainer state: its own when every rank's was saved. Another number of
        processes resumes only from the end of an epoch (a data sampler splits an epoch by
        the number of ranks), each rank from rank 0's state."""
        ranks, world = state.get("trainer_ranks"), distributed.world_size()
        if ranks is not None:
            if len(ranks) == world:
                return ranks[distributed.rank()]
            if state["trainer"].get("position") is not None:
                raise CheckpointError(
                    f"Checkpoint {path!r} was saved by {len(ranks)} processes in the middle of an epoch "
                    f"({_where(state['trainer'])}) and this run has {world}: the ranks' samplers split an epoch by "
                    f"their number, so the rest of that epoch cannot be found. Resume it with {len(ranks)} processes, "
                    f"or with {world} from a checkpoint taken at an epoch's end (every_epochs)"
                )
            if distributed.is_main_process():
                logger.warning(
                    "Checkpoint %s was saved by %d processes and this run has %d: %severy rank resumes with rank 0's "
                    "trainer state (its histories and random streams), so the run is not the one the %d would have made",
                    path,
                    len(ranks),
                    world,
                    "the shards are redistributed by torch.distributed.checkpoint; " if "sharded" in state else "",
                    len(ranks),
                )
            return state["trainer"]
        if world > 1 and distributed.is_main_process():
            logger.warning(
                "Checkpoint %s holds one process's trainer state: every rank resumes from it, so the other ranks' "
                "histories and random streams are not those they had",
                path,
            )
        return state["trainer"]
