"""Tests of the ignite-progress plugin: bars written to a StringIO and to a real pseudo-terminal."""

from __future__ import annotations

import errno
import html
import io
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading

import ignite_progress
import pytest
from ignite_progress import ProgressBar

from ignite import PluginError, Trainer, TrainingEvents

pytestmark = pytest.mark.usefixtures("ignite_isolated")  # only the plugins a test names


def screen(text: str) -> list[str]:
    """The lines a terminal shows after printing ``text``: enough of a terminal for tqdm's
    output (carriage return, newline, cursor up, overwriting)."""
    lines: list[list[str]] = [[]]
    row = column = 0
    for part in re.split(r"(\x1b\[A|\r|\n)", text):
        if part == "\r":
            column = 0
        elif part == "\n":
            row, column = row + 1, 0
            if row == len(lines):
                lines.append([])
        elif part == "\x1b[A":
            row = max(row - 1, 0)
        else:
            line = lines[row]
            line.extend(" " * (column + len(part) - len(line)))
            line[column : column + len(part)] = part
            column += len(part)
    return [shown.rstrip() for shown in ("".join(line) for line in lines) if shown.strip()]


def plugin_of(trainer: Trainer) -> ProgressBar:
    return trainer.plugins["progress"]


def make_trainer(output: io.StringIO, training_data=None, **options) -> Trainer:
    epochs_validated = []

    def validate(batch):
        return batch / 10 + len(epochs_validated)

    trainer = Trainer(
        training_data if training_data is not None else list(range(20)),
        lambda batch: batch * 0.5 + 0.25,
        validation_data=[1.0, 2.0, 3.0, 4.0],
        validation_update_function=validate,
        plugins={"progress": {"file": output, "disable": False, **options}},
    )
    trainer.add_event_handler(TrainingEvents.VALIDATION_COMPLETED, lambda t: epochs_validated.append(t.current_epoch))
    return trainer


def test_epoch_bars_show_counter_total_training_value_and_validation_mean():
    output = io.StringIO()
    trainer = make_trainer(output, every_iterations=1)
    trainer.run(2)
    lines = screen(output.getvalue())
    # One line per epoch is left: the validation bars were cleared.
    assert len(lines) == 2, lines
    for epoch, line in enumerate(lines, start=1):
        assert line.startswith(f"Epoch {epoch}/2: 100%"), line
        assert "20/20" in line
        # The last training output (batch 19 -> 9.75) and this epoch's validation mean.
        assert f"train=9.75, val={trainer.validation_history.run_mean(epoch - 1):.4g}]" in line
    assert "val=0.25]" in lines[0] and "val=1.25]" in lines[1]
    assert "Validation:" in output.getvalue()  # it was shown while validating


def test_tuple_and_dict_outputs_are_shown_per_item():
    output = io.StringIO()
    trainer = Trainer(
        [1.0, 2.0, 3.0],
        lambda batch: {"loss": batch, "accuracy": batch / 4},
        validation_data=[2.0],
        validation_update_function=lambda batch: (batch, batch * 3),
        plugins={"progress": {"file": output, "disable": False}},
    )
    trainer.run(1)
    (line,) = screen(output.getvalue())
    assert line.endswith("train/loss=3, train/accuracy=0.75, val/0=2, val/1=6]"), line


def count_reads(monkeypatch) -> list:
    """The outputs whose numbers the plugin reads (its calls of scalars), as they are read."""
    reads: list = []
    real = ignite_progress.scalars
    monkeypatch.setattr(ignite_progress, "scalars", lambda output: reads.append(output) or real(output))
    return reads


def fake_clock(monkeypatch, seconds_per_call: float) -> None:
    """Make the plugin's clock advance by ``seconds_per_call`` each time it is read, so that
    the strides do not depend on this machine's speed."""
    ticks = itertools.count(0.0, seconds_per_call)
    monkeypatch.setattr(ignite_progress, "_clock", lambda: next(ticks))


def counting_trainer(output: io.StringIO, every_iterations: int, positions: list[int]) -> Trainer:
    trainer = Trainer(
        list(range(20)),
        lambda batch: {"loss": float(batch)},
        plugins={"progress": {"file": output, "disable": False, "every_iterations": every_iterations}},
    )
    # Plugin hooks run after handlers at COMPLETED events: look at the bar when the next
    # iteration starts, and before the epoch's end brings it up to date.
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_STARTED, lambda t: positions.append(plugin_of(t)._training.bar.n)
    )
    trainer.add_event_handler(
        TrainingEvents.TRAINING_EPOCH_COMPLETED, lambda t: positions.append(plugin_of(t)._training.bar.n)
    )
    return trainer


def test_fast_iterations_move_the_bar_only_at_the_epoch_end_within_0_1_s(monkeypatch):
    fake_clock(monkeypatch, 1e-6)  # 1 us a clock reading: the whole epoch takes far less than 0.1 s
    reads = count_reads(monkeypatch)
    positions: list[int] = []
    output = io.StringIO()
    trainer = counting_trainer(output, 5, positions)
    trainer.run(1)
    # tqdm would not redraw within 0.1 s: the bar is moved, and the output read, at the
    # epoch's end only.
    assert positions == [0] * 21
    assert len(reads) == 1
    (line,) = screen(output.getvalue())
    assert line.startswith("Epoch 1/1: 100%") and "20/20" in line and line.endswith("train/loss=19]"), line


def test_the_bar_moves_once_0_1_s_has_passed_looking_every_stride(monkeypatch):
    fake_clock(monkeypatch, 1 / 32)  # each look at the clock: 31.25 ms later (exact in binary)
    reads = count_reads(monkeypatch)
    positions: list[int] = []
    output = io.StringIO()
    trainer = counting_trainer(output, 5, positions)
    trainer.run(1)
    # The trainer calls the plugin at multiples of its stride, which follows the rate: after
    # iteration 1 (rate unknown: next at 3), 3 and 4 (strides of 4 while 5 iterations looked
    # longer than 0.1 s), then 8, 10, 15 and 20 (every 5th). The bar moves, and the output is
    # read, once 0.1 s has passed since the bar last moved: at 8 (0.125 s), not at 10, 15 or
    # 20 (0.03-0.09 s after); and at the epoch's end.
    assert positions == [0] * 8 + [8] * 13
    assert len(reads) == 2
    (line,) = screen(output.getvalue())
    assert "20/20" in line, line


def test_fast_epochs_without_validation_are_drawn_only_as_they_open_and_close(monkeypatch):
    fake_clock(monkeypatch, 1e-6)
    output = io.StringIO()
    trainer = counting_trainer(output, 5, [])
    trainer.run(3)
    # tqdm starts each draw with a carriage return: two an epoch, its first and last states
    # (finishing the bar at the end of training used to draw it once more, before closing).
    assert output.getvalue().count("\r") == 2 * 3
    lines = screen(output.getvalue())
    assert [line[: len("Epoch 1/3: 100%")] for line in lines] == [f"Epoch {n}/3: 100%" for n in (1, 2, 3)]
    assert all("20/20" in line and line.endswith("train/loss=19]") for line in lines), lines


def test_slow_iterations_advance_the_bar_and_read_the_output_every_iteration(monkeypatch):
    fake_clock(monkeypatch, 1.0)  # 1 s an iteration
    reads = count_reads(monkeypatch)
    positions: list[int] = []
    trainer = counting_trainer(io.StringIO(), 5, positions)
    trainer.run(1)
    assert positions == list(range(21))
    assert len(reads) == 20  # the epoch's end does not read the last output a second time


def test_each_draw_reads_the_latest_output_once(monkeypatch):
    import torch

    fake_clock(monkeypatch, 1.0)  # every iteration is a draw
    reads = count_reads(monkeypatch)
    output = io.StringIO()
    trainer = Trainer(
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        lambda batch: {"loss": torch.tensor([batch])},  # kept as a tensor in the history
        plugins={"progress": {"file": output, "disable": False, "every_iterations": 5}},
    )
    trainer.run(2)
    # One scalars() call a draw (one host sync on a GPU), of the output just made, none other.
    assert [float(read["loss"]) for read in reads] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] * 2
    assert all(line.endswith("train/loss=5]") for line in screen(output.getvalue()))


class Unsized:
    """Re-iterable batches without a length, like a DataLoader over an IterableDataset."""

    def __iter__(self):
        return iter([1.0, 2.0, 3.0, 4.0, 5.0])


def test_data_without_a_length_gets_a_bar_without_a_total():
    output = io.StringIO()
    trainer = make_trainer(output, training_data=Unsized())
    trainer.run(1)
    (line,) = screen(output.getvalue())
    assert line.startswith("Epoch 1/1: 5it "), line
    assert "%" not in line


def test_not_a_terminal_and_disable_none_writes_nothing():
    output = io.StringIO()  # isatty() is False
    seen_bars = []
    trainer = make_trainer(output, disable=None)
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: seen_bars.append(plugin_of(t)._training)
    )
    trainer.run(2)
    assert output.getvalue() == ""
    assert seen_bars == [None] * 40  # no bar object is even kept: iterations return at once


def test_disable_true_writes_nothing_even_to_a_terminal_like_file():
    class TerminalLike(io.StringIO):
        def isatty(self):
            return True

    drawn, silenced = TerminalLike(), TerminalLike()
    make_trainer(drawn, disable=None).run(1)
    make_trainer(silenced, disable=True).run(1)
    assert "Epoch 1/1" in drawn.getvalue()
    assert silenced.getvalue() == ""


def test_leave_false_clears_the_epoch_bars():
    output = io.StringIO()
    make_trainer(output, leave=False).run(2)
    assert "Epoch 2/2" in output.getvalue()
    assert screen(output.getvalue()) == []


def test_bars_are_closed_when_training_raises():
    from tqdm import tqdm

    output = io.StringIO()
    trainer = make_trainer(output)

    def fail_in_validation(t):
        raise RuntimeError("validation broke")

    trainer.add_event_handler(TrainingEvents.VALIDATION_ITERATION_COMPLETED, fail_in_validation)
    open_bars = []
    trainer.add_event_handler(
        TrainingEvents.VALIDATION_ITERATION_STARTED, lambda t: open_bars.append(len(tqdm._instances))
    )
    with pytest.raises(RuntimeError, match="validation broke"):
        trainer.run(1)
    assert open_bars == [2]  # the epoch's bar and the validation bar were open
    assert len(tqdm._instances) == 0
    assert plugin_of(trainer)._training is None and plugin_of(trainer)._validation is None
    assert output.getvalue().endswith("\n")  # the traceback starts on a line of its own


def test_terminate_leaves_no_bar_open():
    from tqdm import tqdm

    output = io.StringIO()
    trainer = make_trainer(output)
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_COMPLETED, lambda t: t.terminate() if t.current_iteration == 7 else None
    )
    trainer.run(3)
    assert len(tqdm._instances) == 0
    (line,) = screen(output.getvalue())
    assert "7/20" in line and "val=" not in line  # validation was skipped


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"every_iterations": 0}, ValueError, "every_iterations must be a positive int"),
        ({"every_iterations": 2.5}, TypeError, "every_iterations must be a positive int"),
        ({"every_iterations": True}, TypeError, "every_iterations must be a positive int"),
        ({"disable": "yes"}, TypeError, "disable must be None, True or False"),
        ({"leave": 1}, TypeError, "leave must be True or False"),
        ({"file": "out.txt"}, TypeError, "file must be a text stream"),
    ],
)
def test_options_are_checked(options, error, message):
    with pytest.raises(error, match=message):
        ProgressBar(**options)


def test_a_bad_option_through_the_trainer_names_the_plugin():
    with pytest.raises(PluginError, match=r"'progress'.*every_iterations must be a positive int"):
        Trainer([1.0], lambda batch: batch, plugins={"progress": {"every_iterations": -1}})


def test_importing_and_constructing_needs_no_tqdm():
    # torch itself imports tqdm when it is there (torch.hub), so block it: the plugin must import
    # it only when a bar opens, as `ignite plugins` imports and constructs every plugin.
    code = (
        "import sys; sys.modules['tqdm'] = None\n"
        "import ignite_progress; ignite_progress.ProgressBar(disable=False); print('constructed')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "constructed", result.stderr


# -- a real pseudo-terminal --------------------------------------------------------------------

PTY_SCRIPT = textwrap.dedent(
    """
    import logging
    from ignite import Trainer

    logging.getLogger("ignite").addHandler(logging.StreamHandler())  # as our README shows
    logging.getLogger("ignite").setLevel(logging.INFO)
    trainer = Trainer(
        list(range(30)),
        lambda batch: batch * 0.5,
        validation_data=[1.0, 2.0, 3.0],
        validation_update_function=lambda batch: batch / 4 + trainer.current_epoch,
    )
    assert "progress" in trainer.plugins, "autoload should have activated the progress plugin"
    trainer.run(3)
    """
)


def run_in_pty(script: str, env: dict[str, str]) -> str:
    """Run ``script`` with stdin, stdout and stderr on a pseudo-terminal; what it printed."""
    import fcntl
    import pty
    import struct
    import termios

    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", script], stdin=secondary, stdout=secondary, stderr=secondary, env=env
        )
    finally:
        os.close(secondary)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
        returncode = process.wait(timeout=60)
    text = b"".join(chunks).decode()
    assert returncode == 0, text
    return text


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_on_a_real_terminal_with_default_options_one_line_per_epoch_and_log_lines_apart(tmp_path, ignite_autoload):
    ignite_autoload("progress")  # autoload, with default options
    env = dict(os.environ)
    text = run_in_pty(PTY_SCRIPT, env)
    assert "\x1b[A" in text and "Validation:" in text  # a validation bar was drawn under the epoch's
    lines = [line for line in screen(text) if not line.startswith("Active plugins:")]
    bars = [line for line in lines if re.match(r"Epoch \d/3: 100%", line)]
    logged = [line for line in lines if re.fullmatch(r"Epoch \d/3: 30 iterations, .*", line)]
    # Exactly one bar line and one log line per epoch; no validation line is left behind.
    assert len(bars) == 3 and len(logged) == 3 and len(lines) == 6, lines
    for epoch, bar in enumerate(bars, start=1):
        assert bar.startswith(f"Epoch {epoch}/3: 100%") and "30/30" in bar
        assert bar.endswith(f"train=14.5, val={0.5 + epoch:.4g}]"), bar
    assert not any("Validation" in line for line in lines)


def test_an_epoch_resumed_inside_starts_its_bar_at_the_batches_done():
    states = []
    first = make_trainer(io.StringIO())

    def checkpoint_and_stop(trainer):
        if trainer.current_iteration == 7:
            states.append(trainer.state_dict())
            trainer.terminate()

    first.add_event_handler(TrainingEvents.TRAINING_ITERATION_COMPLETED, checkpoint_and_stop)
    first.run(2)
    output = io.StringIO()
    resumed = make_trainer(output)
    resumed.load_state_dict(states[0])
    resumed.run(2)
    text = output.getvalue()
    assert text.startswith("\rEpoch 1/2:  35%|"), text[:80]
    assert " 7/20 " in text.split("\r")[1]
    lines = screen(text)
    assert len(lines) == 2 and all("20/20" in line for line in lines), lines


@pytest.fixture
def console_handlers():
    """A console handler on the root logger and one on ``ignite``, removed afterwards."""
    added = {logging.getLogger(): logging.StreamHandler(sys.stderr), logging.getLogger("ignite"): logging.StreamHandler(sys.stdout)}
    for logger, handler in added.items():
        logger.addHandler(handler)
    yield added
    for logger, handler in added.items():
        logger.removeHandler(handler)


@pytest.mark.parametrize("failing", [None, "first", "second"])
def test_trainers_in_threads_give_the_console_handlers_back_when_the_last_one_ends(console_handlers, failing):
    loggers = list(console_handlers)
    originals = [list(logger.handlers) for logger in loggers]
    first_open, second_open, first_done = threading.Event(), threading.Event(), threading.Event()
    while_second_alone = []

    def first_epoch_started(trainer):  # after the plugin's hook: its bar is open
        first_open.set()
        assert second_open.wait(60), "the second trainer never opened its bar"
        if failing == "first":
            raise RuntimeError("first failed")

    def second_epoch_started(trainer):
        assert first_open.wait(60), "the first trainer never opened its bar"
        second_open.set()
        assert first_done.wait(60), "the first trainer never finished"
        while_second_alone.append([list(logger.handlers) for logger in loggers])
        if failing == "second":
            raise RuntimeError("second failed")

    outcomes = {}

    def run(name, trainer, done=None):
        try:
            trainer.run(1)
            outcomes[name] = None
        except Exception as error:
            outcomes[name] = error
        finally:
            if done is not None:
                done.set()

    first, second = make_trainer(io.StringIO()), make_trainer(io.StringIO())
    first.add_event_handler(TrainingEvents.EPOCH_STARTED, first_epoch_started)
    second.add_event_handler(TrainingEvents.EPOCH_STARTED, second_epoch_started)
    threads = [
        threading.Thread(target=run, args=("first", first, first_done)),
        threading.Thread(target=run, args=("second", second)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert {name: str(error) if error else None for name, error in outcomes.items()} == {
        "first": "first failed" if failing == "first" else None,
        "second": "second failed" if failing == "second" else None,
    }
    # The first trainer ended while the second still drew: the console handlers stayed redirected.
    ((root_handlers, ignite_handlers),) = while_second_alone
    assert console_handlers[loggers[0]] not in root_handlers and console_handlers[loggers[1]] not in ignite_handlers
    assert [logger.handlers for logger in loggers] == originals


class BrokenStream(io.StringIO):
    """An output that starts failing like a closed pipe once ``broken`` is set."""

    broken = False

    def write(self, text):
        if self.broken:
            raise OSError(errno.EPIPE, "Broken pipe")
        return super().write(text)


def test_bars_and_handlers_are_given_back_when_closing_a_bar_fails(console_handlers, caplog):
    from tqdm import tqdm

    loggers = list(console_handlers)
    originals = [list(logger.handlers) for logger in loggers]
    output = BrokenStream()
    trainer = make_trainer(output)

    def break_output_then_fail(t):
        output.broken = True
        raise RuntimeError("validation broke")

    trainer.add_event_handler(TrainingEvents.VALIDATION_ITERATION_STARTED, break_output_then_fail)
    with caplog.at_level(logging.ERROR, logger="ignite.progress"), pytest.raises(RuntimeError, match="validation broke"):
        trainer.run(1)
    assert len(tqdm._instances) == 0  # both bars closed, though each close failed to write
    assert [logger.handlers for logger in loggers] == originals
    (record,) = [record for record in caplog.records if record.name == "ignite.progress"]
    assert record.getMessage() == "Could not close the progress bar" and "Broken pipe" in str(record.exc_info[1])


def test_the_former_option_name_is_refused_with_the_new_one():
    with pytest.raises(PluginError, match=r"'progress'.*no option 'refresh_every'. Did you mean 'every_iterations'\?"):
        Trainer([1.0], lambda batch: batch, plugins={"progress": {"refresh_every": 5}})


# -- a real notebook kernel --------------------------------------------------------------------

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

NOTEBOOK_SETUP = """
import logging, sys
from ignite import Trainer, TrainingEvents

logging.getLogger("ignite").addHandler(logging.StreamHandler())  # on the notebook's stderr
logging.getLogger("ignite").setLevel(logging.INFO)

def make_trainer():
    return Trainer(
        list(range(20)),
        lambda batch: batch * 0.5 + 0.25,
        validation_data=[1.0, 2.0, 3.0, 4.0],
        validation_update_function=lambda batch: batch / 10 + trainer.current_epoch,
    )
"""

# The default options, as a user gets them from autoload.
NOTEBOOK_RUN = """
trainer = make_trainer()
assert "progress" in trainer.plugins, "autoload should have activated the progress plugin"
trainer.run(2)
"""

# Every look at the clock 1 s later: every iteration redraws, the most a notebook can get.
NOTEBOOK_RUN_DRAWING_EVERY_ITERATION = """
import itertools, json
import ignite_progress
ticks = itertools.count(0.0, 1.0)
ignite_progress._clock = lambda: next(ticks)
trainer = make_trainer()
shown_while_validating = []
trainer.add_event_handler(
    TrainingEvents.VALIDATION_ITERATION_STARTED,
    lambda t: shown_while_validating.append(t.plugins["progress"]._training.bar.postfix),
)
trainer.run(2)
print(json.dumps(shown_while_validating))
"""


# In a notebook too: nothing with disable=True, nor to another stream that is not a terminal.
NOTEBOOK_RUN_SILENT = """
import io
log = io.StringIO()
for options in ({"disable": True}, {"file": log}):
    Trainer(list(range(5)), lambda batch: batch, plugins={"progress": options}).run(1)
print(repr(log.getvalue()))
"""


def execute_notebook(tmp_path, monkeypatch, *cells: str):
    """Run ``cells`` in a real ipykernel of this test's Python (a kernelspec made for
    ``sys.executable`` and found first through JUPYTER_PATH); the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    prefix = tmp_path / "jupyter"
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", "python3"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    kernels = prefix / "share" / "jupyter" / "kernels"
    assert json.loads((kernels / "python3" / "kernel.json").read_text())["argv"][0] == sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(kernels.parent))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user profile or startup files
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])
    client = NotebookClient(notebook, kernel_name="python3", timeout=300, startup_timeout=120)
    client.execute(cwd=str(tmp_path))
    return notebook


def streams(cell) -> dict[str, str]:
    """A cell's stdout and stderr, each joined."""
    joined: dict[str, str] = {}
    for output in cell.outputs:
        if output.output_type == "stream":
            joined[output.name] = joined.get(output.name, "") + output.text
    return joined


def widget_bars(notebook, cell) -> list[tuple[str, float, float, str, str]]:
    """The bars a cell displayed, from the widget state the notebook saved: (left text, value,
    maximum, bar style, right text) of each, in order."""
    state = notebook.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    bars = []
    for output in cell.outputs:
        if WIDGET_VIEW not in output.get("data", {}):
            continue
        box = state[output.data[WIDGET_VIEW]["model_id"]]
        assert box["model_name"] == "HBoxModel"
        left, progress, right = (state[child.removeprefix("IPY_MODEL_")]["state"] for child in box["state"]["children"])
        # tqdm's HTML: escaped, with figure spaces for spaces.
        text = [html.unescape(part["value"]).replace("\u2007", " ").strip() for part in (left, right)]
        bars.append((text[0], progress["value"], progress["max"], progress["bar_style"], text[1]))
    return bars


def check_epoch_bars(bars) -> None:
    assert len(bars) == 2, bars  # one widget an epoch: validation counts in the epoch's bar
    for epoch, (left, value, maximum, style, right) in enumerate(bars, start=1):
        assert left == f"Epoch {epoch}/2: 100%", left
        assert (value, maximum, style) == (20, 20, "success")
        assert right.startswith("20/20 [") and right.endswith(f"train=9.75, val={0.25 + epoch:.4g}]"), right


def check_log_lines(output: dict[str, str]) -> None:
    """No bar on the streams: only the trainer's own log lines (its epoch summaries)."""
    assert set(output) <= {"stderr"}, output
    lines = output.get("stderr", "").splitlines()
    summaries = [line for line in lines if re.fullmatch(r"Epoch [12]/2: 20 iterations, .*", line)]
    assert len(summaries) == 2, lines
    assert [line for line in lines if not line.startswith("Active plugins:")] == summaries, lines


def test_in_a_notebook_each_epoch_is_one_widget_and_log_lines_stay(tmp_path, monkeypatch, ignite_autoload):
    ignite_autoload("progress")
    notebook = execute_notebook(
        tmp_path, monkeypatch, NOTEBOOK_SETUP, NOTEBOOK_RUN, NOTEBOOK_RUN_DRAWING_EVERY_ITERATION, NOTEBOOK_RUN_SILENT
    )
    for cell in notebook.cells:  # nbclient raises on an error; a warning would be on stderr
        assert not any(output.output_type == "error" for output in cell.outputs)
    default, drawing, silent = notebook.cells[1:]
    check_epoch_bars(widget_bars(notebook, default))
    check_log_lines(streams(default))
    # Drawing every iteration adds no output either: the widgets are updated in place.
    check_epoch_bars(widget_bars(notebook, drawing))
    output = streams(drawing)
    shown = json.loads(output.pop("stdout"))
    check_log_lines(output)
    # While validating, the count goes into the epoch's bar, after the training value.
    epoch = ["train=9.75"] + [f"train=9.75, validating {n}/4" for n in (1, 2, 3)]
    assert shown == epoch * 2, shown
    assert widget_bars(notebook, silent) == []
    output = streams(silent)
    assert output.pop("stdout") == "''\n"  # nothing written to the StringIO
    assert "5/5" not in output.get("stderr", "") and "it/s" not in output.get("stderr", "")  # no text bar


def test_in_a_notebook_without_ipywidgets_text_bars_go_to_its_stderr(tmp_path, monkeypatch, ignite_autoload):
    ignite_autoload("progress")
    without_ipywidgets = 'import sys\nsys.modules["ipywidgets"] = None  # as if it were not installed'
    notebook = execute_notebook(tmp_path, monkeypatch, without_ipywidgets, NOTEBOOK_SETUP, NOTEBOOK_RUN, NOTEBOOK_RUN)
    said = "ipywidgets is not installed: progress bars are text on the notebook's stderr"
    for number, cell in enumerate(notebook.cells[2:]):
        assert not any(WIDGET_VIEW in output.get("data", {}) for output in cell.outputs)
        output = streams(cell)
        assert set(output) == {"stderr"}, output
        text = output["stderr"]
        assert "\x1b[A" not in text  # no nested validation bar: a notebook does not move its cursor
        assert "Warning" not in text and "IProgress" not in text  # tqdm's warning is not shown
        lines = [line for line in screen(text) if not line.startswith("Active plugins:")]
        if number == 0:  # said once, by the first bar
            assert lines.pop(0) == said
        bars = [line for line in lines if re.match(r"Epoch \d/2: 100%", line)]
        logged = [line for line in lines if re.fullmatch(r"Epoch \d/2: 20 iterations, .*", line)]
        assert len(bars) == 2 and len(logged) == 2 and len(lines) == 4, lines
        for epoch, bar in enumerate(bars, start=1):
            assert "20/20" in bar and bar.endswith(f"train=9.75, val={0.25 + epoch:.4g}]"), bar
