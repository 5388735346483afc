"""Tests of the ignite-mlflow plugin against a real ``mlflow server`` (the ``mlflow_server``
fixture), everything read back with ``MlflowClient``."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ignite_mlflow
import pytest
from ignite_checkpoint import list_checkpoints
from ignite_mlflow import DEFAULT_EVERY_ITERATIONS, MLflowLogger
from mlflow import MlflowClient

import ignite
from ignite import PluginError, Trainer, TrainingEvents

pytestmark = pytest.mark.usefixtures("ignite_isolated")  # only the plugins a test names

HERE = Path(__file__).resolve().parent


def metric_history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every point of ``key`` the run holds (duplicates included), by step."""
    return sorted((metric.step, metric.value) for metric in client.get_metric_history(run_id, key))


class Optimizer:
    """What the plugin reads of an optimizer: its parameter groups."""

    def __init__(self, lr: float) -> None:
        self.param_groups = [{"lr": lr}]


def the_run(client: MlflowClient, experiment: str) -> Any:
    """The one run of ``experiment``."""
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1, [run.info.run_id for run in runs]
    return runs[0]


def mlflow_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ignite.mlflow" and r.levelno >= logging.WARNING]


# -- what is logged -----------------------------------------------------------------------


def test_params_tags_and_every_series_read_back_with_steps_and_values(mlflow_server, mlflow_client, experiment):
    optimizer = Optimizer(0.5)
    data = [float(i) for i in range(10)]
    trainer = Trainer(
        data,
        lambda batch: {"loss": batch * 0.5 + 0.25 * trainer.current_epoch, "scale": 2.0, "note": "x"},
        validation_data=[1.0, 2.0, 4.0],
        validation_update_function=lambda batch: batch / (trainer.current_epoch + 1),
        plugins={
            "mlflow": {
                "tracking_uri": mlflow_server,
                "experiment": experiment,
                "run_name": "baseline",
                "params": {"lr": 0.5, "model": {"width": 16, "act": "relu"}},
                "every_iterations": 3,
                "optimizer": optimizer,
            }
        },
    )

    def halve_lr(trainer: Trainer) -> None:
        if trainer.current_epoch == 2:
            optimizer.param_groups[0]["lr"] = 0.25

    def set_metrics(trainer: Trainer) -> None:  # as a metric plugin would
        trainer.metrics["accuracy"] = 0.5 + trainer.current_epoch / 10

    trainer.add_event_handler(TrainingEvents.EPOCH_STARTED, halve_lr)
    trainer.add_event_handler(TrainingEvents.EPOCH_COMPLETED, set_metrics)
    trainer.run(2)

    plugin = trainer.plugins["mlflow"]
    run = the_run(mlflow_client, experiment)
    assert run.info.run_id == plugin.run_id and run.info.run_name == "baseline"
    assert run.info.status == "FINISHED"
    assert run.data.params == {
        "lr": "0.5",
        "model.width": "16",
        "model.act": "relu",
        "ignite.mlflow.every_iterations": "3",
        "ignite.mlflow.flush_timeout_secs": "30.0",
        "ignite.mlflow.experiment": experiment,
        "ignite.mlflow.run_name": "baseline",
        "ignite.mlflow.optimizer": "Optimizer",
    }
    assert run.data.tags["ignite.version"] == ignite.__version__
    assert run.data.tags["ignite.mlflow.version"] == "0.1.0"

    history = trainer.training_history
    logged = range(3, 21, 3)  # global iterations 3, 6, ..., 18
    for key in ("loss", "scale"):
        expected = [(step, history[step - 1][key]) for step in logged]
        assert metric_history(mlflow_client, plugin.run_id, f"training/iteration/{key}") == expected
    assert "training/iteration/note" not in run.data.metrics  # not a number
    for key in ("loss", "scale"):
        expected = [(10 * (e + 1), history.run_means(e)[key]) for e in range(2)]
        assert metric_history(mlflow_client, plugin.run_id, f"training/epoch_mean/{key}") == expected
    validation = trainer.validation_history
    expected = [(10 * (e + 1), validation.run_means(e)[""]) for e in range(2)]
    assert metric_history(mlflow_client, plugin.run_id, "validation/mean") == expected
    assert metric_history(mlflow_client, plugin.run_id, "metrics/accuracy") == [(10, 0.6), (20, 0.7)]
    assert metric_history(mlflow_client, plugin.run_id, "lr") == [(10, 0.5), (20, 0.25)]
    assert set(run.data.metrics) == {
        "training/iteration/loss", "training/iteration/scale", "training/epoch_mean/loss",
        "training/epoch_mean/scale", "validation/mean", "metrics/accuracy", "lr",
    }  # fmt: skip


def test_mlflow_is_called_from_the_background_thread_only(mlflow_server, mlflow_client, experiment, monkeypatch):
    callers: list[str] = []
    for method in ("log_batch", "create_run", "get_experiment_by_name", "create_experiment", "set_terminated"):
        real = getattr(MlflowClient, method)

        def spy(self, *args, _real=real, **kwargs):
            callers.append(threading.current_thread().name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, method, spy)
    trainer = Trainer(
        [1.0] * 50,
        float,
        plugins={"mlflow": {"tracking_uri": mlflow_server, "experiment": experiment, "every_iterations": 1}},
    )
    trainer.run(2)
    assert callers and set(callers) == {ignite_mlflow.THREAD_NAME}
    run = the_run(mlflow_client, experiment)
    assert [step for step, _ in metric_history(mlflow_client, run.info.run_id, "training/iteration")] == list(
        range(1, 101)
    )


def test_a_trainer_that_runs_again_continues_its_mlflow_run(mlflow_server, mlflow_client, experiment):
    trainer = Trainer(
        [float(i) for i in range(4)],
        lambda batch: batch + trainer.current_epoch,
        plugins={"mlflow": {"tracking_uri": mlflow_server, "experiment": experiment, "every_iterations": 2}},
    )
    trainer.run(1)
    first = trainer.plugins["mlflow"].run_id
    assert mlflow_client.get_run(first).info.status == "FINISHED"
    trainer.run(3)
    run = the_run(mlflow_client, experiment)
    assert run.info.run_id == first and run.info.status == "FINISHED"
    history = trainer.training_history
    assert metric_history(mlflow_client, first, "training/iteration") == [(s, history[s - 1]) for s in range(2, 13, 2)]
    assert metric_history(mlflow_client, first, "training/epoch_mean") == [
        (4 * (e + 1), history.run_means(e)[""]) for e in range(3)
    ]


@pytest.mark.parametrize(("exception", "status"), [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_an_exception_ends_the_run_failed_or_killed_after_sending_what_came_before(
    mlflow_server, mlflow_client, experiment, exception, status
):
    def update(batch: float) -> float:
        if batch == 5.0:
            raise exception
        return batch

    trainer = Trainer(
        [float(i) for i in range(8)],
        update,
        plugins={"mlflow": {"tracking_uri": mlflow_server, "experiment": experiment, "every_iterations": 1}},
    )
    with pytest.raises(type(exception)) as raised:
        trainer.run(1)
    assert raised.value is exception
    run = the_run(mlflow_client, experiment)
    assert run.info.status == status
    assert metric_history(mlflow_client, run.info.run_id, "training/iteration") == [(i + 1, float(i)) for i in range(5)]


def test_a_continued_run_keeps_its_params_and_warns_about_changed_ones(
    mlflow_server, mlflow_client, experiment, caplog
):
    options = {"tracking_uri": mlflow_server, "experiment": experiment, "every_iterations": 1}
    first = Trainer([1.0, 2.0], float, plugins={"mlflow": {**options, "params": {"lr": 0.1}}})
    first.run(1)
    second = Trainer([1.0, 2.0], float, plugins={"mlflow": {**options, "params": {"lr": 0.2, "seed": 3}}})
    second.load_state_dict(first.state_dict())
    second.run(2)
    run = the_run(mlflow_client, experiment)
    assert run.info.run_id == first.plugins["mlflow"].run_id == second.plugins["mlflow"].run_id
    assert run.data.params["lr"] == "0.1" and run.data.params["seed"] == "3"
    assert mlflow_warnings(caplog) == [
        (
            f"MLflow run {run.info.run_id} already holds other values for the params lr (MLflow params cannot "
            "change): kept as they were"
        )
    ]
    assert metric_history(mlflow_client, run.info.run_id, "training/iteration") == [
        (1, 1.0),
        (2, 2.0),
        (3, 1.0),
        (4, 2.0),
    ]


def test_a_saved_run_id_the_store_does_not_hold_starts_a_new_run_with_a_warning(
    mlflow_server, mlflow_client, experiment, caplog
):
    trainer = Trainer([1.0], float, plugins={"mlflow": {"tracking_uri": mlflow_server, "experiment": experiment}})
    trainer.plugins["mlflow"].load_state_dict({"run_id": "0" * 32})
    trainer.run(1)
    run = the_run(mlflow_client, experiment)
    assert run.info.run_id == trainer.plugins["mlflow"].run_id != "0" * 32
    assert run.info.status == "FINISHED"
    assert mlflow_warnings(caplog) == [
        (
            f"MLflow run {'0' * 32} is not in {mlflow_server} (another store, or deleted): this run is logged to a "
            "new MLflow run"
        )
    ]


# -- failures -------------------------------------------------------------------------------


def test_an_output_key_mlflow_refuses_is_left_out_with_one_warning_and_the_rest_is_logged(
    mlflow_server, mlflow_client, experiment, caplog
):
    trainer = Trainer(
        [float(i) for i in range(6)],
        lambda batch: {"acc@1": batch, "loss": batch / 2},
        plugins={"mlflow": {"tracking_uri": mlflow_server, "experiment": experiment, "every_iterations": 1}},
    )
    trainer.run(2)
    run = the_run(mlflow_client, experiment)
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) == {"training/iteration/loss", "training/epoch_mean/loss"}
    assert metric_history(mlflow_client, run.info.run_id, "training/iteration/loss") == [
        (i + 1, (i % 6) / 2) for i in range(12)
    ]
    warnings = mlflow_warnings(caplog)
    assert sorted(warnings) == sorted(
        f"MLflow refuses the metric name {name!r} (at most 250 letters, digits, '_', '-', '.', ' ', ':' or '/'): it "
        "is not logged; rename that output key or metric"
        for name in ("training/iteration/acc@1", "training/epoch_mean/acc@1")
    )


def test_an_unreachable_server_gives_one_warning_and_training_completes(experiment, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # mlflow's own setting: fail at once
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{probe.getsockname()[1]}"
    caplog.set_level(logging.INFO, logger="ignite")
    trainer = Trainer(
        [1.0] * 30,
        lambda batch: batch,
        validation_data=[1.0],
        validation_update_function=lambda batch: batch,
        plugins={"mlflow": {"tracking_uri": uri, "experiment": experiment, "every_iterations": 1}},
    )
    trainer.run(3)
    assert len(trainer.training_history) == 90 and trainer.current_epoch == 3
    warnings = mlflow_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"Cannot log to MLflow at {uri} (") and "training continues" in warnings[0]
    assert trainer.plugins["mlflow"].run_id is None


def test_a_server_that_never_answers_costs_the_end_of_training_flush_timeout_secs_at_most(
    experiment, caplog, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    silent = socket.socket()  # listens, never accepts: requests get no answer
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
    trainer = Trainer(
        [1.0] * 10,
        float,
        plugins={"mlflow": {"tracking_uri": uri, "experiment": experiment, "flush_timeout_secs": 0.5}},
    )
    try:
        trainer.run(1)
        assert trainer.current_epoch == 1
        warnings = mlflow_warnings(caplog)
        assert len(warnings) == 1, warnings
        assert "did not take the last points within flush_timeout_secs=0.5" in warnings[0]
        assert "no MLflow run was created. Training is not affected" in warnings[0]
        sender = [t for t in threading.enumerate() if t.name == ignite_mlflow.THREAD_NAME]
        assert sender, "the sender stopped although the server never answered"
    finally:
        silent.close()  # resets the waiting connection: the sender fails and ends
    for thread in sender:
        thread.join(60)
        assert not thread.is_alive()
    assert len(mlflow_warnings(caplog)) == 1  # its failure after the timeout adds none


def test_checkpoints_wait_for_a_run_that_a_silent_server_never_creates_once_per_run(
    tmp_path, experiment, caplog, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
    states: list[dict[str, Any]] = []
    trainer = Trainer(
        [1.0] * 10,
        float,
        plugins={"mlflow": {"tracking_uri": uri, "experiment": experiment, "flush_timeout_secs": 0.5}},
    )
    # As the checkpoint plugin does every 2 iterations (its phase comes after the loggers').
    trainer.add_event_handler(
        TrainingEvents.TRAINING_ITERATION_COMPLETED,
        lambda t: states.append(t.state_dict()["plugins"]["mlflow"]) if t.current_iteration % 2 == 0 else None,
    )
    try:
        trainer.run(1)
        warnings = mlflow_warnings(caplog)
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith(
            f"MLflow at {uri} has not created the run within flush_timeout_secs=0.5: this checkpoint, and those "
            "until it is created, hold no MLflow run id"
        )
        assert len(states) == 5 and all(state == {"run_id": None} for state in states)
        sender = [t for t in threading.enumerate() if t.name == ignite_mlflow.THREAD_NAME]
    finally:
        silent.close()
    for thread in sender:
        thread.join(60)
        assert not thread.is_alive()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"every_iterations": 0}, "every_iterations must be a positive int"),
        ({"every_iterations": True}, "every_iterations must be a positive int"),
        ({"flush_timeout_secs": -1}, "flush_timeout_secs must be a number of seconds >= 0"),
        ({"tracking_uri": 5000}, "tracking_uri must be a non-empty string or None"),
        ({"experiment": ""}, "experiment must be a non-empty string or None"),
        ({"params": [("lr", 0.1)]}, "params must be a dict of name to value; got list"),
        ({"params": {"lr!": 0.1}}, "MLflow refuses the param name 'lr!'"),
        ({"params": {"run//lr": 1}}, "MLflow refuses the param name 'run//lr': a name must be a normalized relative"),
        ({"params": {"big": "x" * 6001}}, "the value of 'big' is 6001 characters"),
        ({"params": {"ignite.mlflow.every_iterations": 1}}, "names starting 'ignite.mlflow.' are the plugin's own"),
        ({"optimizer": "sgd"}, "optimizer must be a torch optimizer"),
        ({"log_every": 10}, "has no option 'log_every'. Did you mean 'every_iterations'"),
        ({"flush_timeout": 10}, "Did you mean 'flush_timeout_secs'"),
    ],
)
def test_bad_options_are_plugin_errors_naming_the_option(options, message):
    with pytest.raises(PluginError, match="'mlflow'") as raised:
        Trainer([1.0], float, plugins={"mlflow": options})
    assert message in str(raised.value)


def test_a_bad_saved_state_is_refused_before_anything_changes():
    plugin = MLflowLogger()
    plugin.load_state_dict({"run_id": "abc"})
    with pytest.raises(ValueError, match="mlflow plugin state: run_id must be a non-empty string or None; got 3"):
        plugin.load_state_dict({"run_id": 3})
    with pytest.raises(TypeError, match=r"mlflow plugin state must be a dict \{'run_id': ...\}; got str"):
        plugin.load_state_dict("abc")
    assert plugin.state_dict() == {"run_id": "abc"}


# -- resume and ranks ---------------------------------------------------------------------


def start_script(config: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    """The training script in a subprocess, its output into ``log`` (no pipe to fill up)."""
    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, str(HERE / "mlflow_training_script.py"), json.dumps(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def wait_until(condition, what: str, process: subprocess.Popen[bytes], log: Path, deadline_secs: float = 180) -> None:
    """Poll ``condition()`` until true, pausing on the process (which must not exit meanwhile)."""
    deadline = time.monotonic() + deadline_secs
    while not condition():
        try:
            process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise AssertionError(
                    f"{what}: not within {deadline_secs}s; output:\n{log.read_text()[-3000:]}"
                ) from None
        else:
            raise AssertionError(
                f"the training process exited ({process.returncode}) before {what}:\n{log.read_text()[-3000:]}"
            )


def test_a_run_killed_after_a_checkpoint_resumes_into_the_same_mlflow_run_without_duplicate_steps(
    tmp_path, mlflow_server, mlflow_client, experiment
):
    config = {
        "tracking_uri": mlflow_server,
        "experiment": experiment,
        "dir": str(tmp_path / "checkpoints"),
        "marker": str(tmp_path / "blocked"),
        "out": str(tmp_path / "out.json"),
        "resume": False,
        "block_at": 21,  # blocks before the plugin queues iteration 21
    }
    log = tmp_path / "first.log"
    first = start_script(config, log)
    marker = Path(config["marker"])
    wait_until(marker.exists, "it reached iteration 21", first, log)
    assert [os.path.basename(path) for path in list_checkpoints(config["dir"])] == ["checkpoint_e0002_i00000012.pt"]
    run_id = marker.read_text()

    def logged_through_20() -> bool:  # iterations 13 to 20, after the checkpoint, are in MLflow
        steps = [step for step, _ in metric_history(mlflow_client, run_id, "training/iteration")]
        return bool(steps) and max(steps) == 20

    wait_until(logged_through_20, "MLflow holding iteration 20", first, log)
    first.send_signal(signal.SIGKILL)
    assert first.wait(60) == -signal.SIGKILL
    before = {key: metric_history(mlflow_client, run_id, key) for key in mlflow_client.get_run(run_id).data.metrics}
    assert before["training/epoch_mean"][-1][0] == 16  # epoch 2's means: after the checkpoint, replayed on resume
    assert mlflow_client.get_run(run_id).info.status == "RUNNING"

    resumed = subprocess.run(
        [
            sys.executable,
            str(HERE / "mlflow_training_script.py"),
            json.dumps({**config, "resume": True, "block_at": None}),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stderr and "checkpoint_e0002_i00000012.pt" in resumed.stderr
    result = json.loads(Path(config["out"]).read_text())
    assert result["run_id"] == run_id
    run = the_run(mlflow_client, experiment)  # one run: the resumed one continued it
    assert run.info.run_id == run_id and run.info.status == "FINISHED"

    # Every step once, each value the trainer's: the points replayed after the checkpoint were skipped.
    assert metric_history(mlflow_client, run_id, "training/iteration") == list(enumerate(result["training"], 1))
    ends = [8, 16, 24]
    assert metric_history(mlflow_client, run_id, "training/epoch_mean") == list(zip(ends, result["epoch_means"]))
    assert metric_history(mlflow_client, run_id, "validation/mean/mse") == list(zip(ends, result["validation_means"]))
    assert metric_history(mlflow_client, run_id, "metrics/mse_x10") == [
        (step, 10 * mean) for step, mean in zip(ends, result["validation_means"])
    ]
    assert metric_history(mlflow_client, run_id, "lr") == [(step, 0.05) for step in ends]
    # What the killed run had logged is still there, as it was.
    for key, points in before.items():
        assert metric_history(mlflow_client, run_id, key)[: len(points)] == points
    assert run.data.params["model.hidden"] == "16" and run.data.params["ignite.mlflow.every_iterations"] == "1"


def test_only_rank_0_logs_and_epoch_means_cover_both_ranks(
    ignite_ranks, tmp_path, mlflow_server, mlflow_client, experiment
):
    ignite_ranks(
        HERE / "mlflow_ranks_worker.py",
        env={"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_EXPERIMENT_NAME": experiment},
    )
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert ranks[1]["run_id"] is None
    run = the_run(mlflow_client, experiment)
    assert run.info.run_id == ranks[0]["run_id"] and run.info.status == "FINISHED"
    rank0 = ranks[0]["training"]
    assert metric_history(mlflow_client, run.info.run_id, "training/iteration") == [
        (s, rank0[s - 1]) for s in range(2, 13, 2)
    ]
    epoch_means = [
        (6 * (e + 1), sum(r["epoch_sums"][e] for r in ranks) / sum(r["epoch_counts"][e] for r in ranks))
        for e in range(2)
    ]
    validation_means = [
        (6 * (e + 1), sum(r["validation_sums"][e] for r in ranks) / sum(r["validation_counts"][e] for r in ranks))
        for e in range(2)
    ]
    for key, expected in (("training/epoch_mean", epoch_means), ("validation/mean", validation_means)):
        points = metric_history(mlflow_client, run.info.run_id, key)
        assert [step for step, _ in points] == [step for step, _ in expected]
        assert [value for _, value in points] == pytest.approx([value for _, value in expected], rel=1e-12)


# -- installed --------------------------------------------------------------------------------


def test_autoloaded_with_defaults_it_logs_to_mlflow_db_in_the_working_directory(tmp_path, monkeypatch, ignite_autoload):
    ignite_autoload("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    trainer = Trainer([float(i) for i in range(DEFAULT_EVERY_ITERATIONS)], float)
    assert "mlflow" in trainer.plugins
    trainer.run(2)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = the_run(client, "Default")
    assert run.info.status == "FINISHED"
    assert metric_history(client, run.info.run_id, "training/iteration") == [(100, 99.0), (200, 99.0)]
