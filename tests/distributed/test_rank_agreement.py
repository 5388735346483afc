"""The message of the check that every rank is set up alike (ignite._rank_agreement), from
made-up facts of several ranks; tests/distributed/test_distributed.py runs it on real ranks."""

from __future__ import annotations

from typing import Any

from ignite import Trainer
from ignite._rank_agreement import _digest, _ranks, facts, mismatch_message


def made_up(**changes: Any) -> dict[str, Any]:
    base = {
        "ignite": "0.1.0",
        "plugins": (("early_stopping", "ignite-early-stopping 0.1.0"),),
        "validation": True,
        "batches": 8,
        "max_epochs": 3,
        "start": (0, 0, False),
        "vote_every": 32,
    }
    return {**base, **changes}


def test_alike_ranks_give_no_message() -> None:
    assert mismatch_message([made_up(), made_up(), made_up()]) is None


def test_ranks_are_grouped_into_spans() -> None:
    assert _ranks([1]) == "rank 1"
    assert _ranks([0, 1, 2, 3, 5]) == "ranks 0-3, 5"


def test_a_plugin_missing_on_some_ranks_names_them_the_origin_and_the_fix() -> None:
    without = made_up(plugins=())
    message = mismatch_message([made_up(), without, without, made_up()])
    assert message is not None
    assert message.startswith("The 4 ranks are not set up alike, and would hang or crash in a collective later:\n")
    assert (
        "- ranks 1-2 have no active plugin 'early_stopping', ranks 0, 3 have it (ignite-early-stopping 0.1.0): "
        "install the same plugins on every rank" in message
    )
    assert message.count("\n- ") == 1


def test_a_plugin_of_another_version_is_named_with_both_versions() -> None:
    newer = made_up(plugins=(("early_stopping", "ignite-early-stopping 0.2.0"),))
    message = mismatch_message([made_up(), newer])
    assert message is not None
    assert (
        "- plugin 'early_stopping' comes from different distributions or versions: rank 0 ignite-early-stopping "
        "0.1.0; rank 1 ignite-early-stopping 0.2.0" in message
    )


def test_every_differing_fact_gets_its_own_line_with_its_fix() -> None:
    other = made_up(ignite="0.2.0", validation=False, batches=9, max_epochs=4, start=(1, 8, False), vote_every=1)
    message = mismatch_message([made_up(), other])
    assert message is not None
    for line in (
        "- rank 0 has ignite 0.1.0; rank 1 has ignite 0.2.0: install the same ignite version on every rank.",
        "- rank 0 has validation data; rank 1 has no validation data: give every rank validation_data",
        "- rank 0 has 8 training batches per epoch; rank 1 has 9 training batches per epoch: shard the data",
        "- rank 0 has max_epochs=3; rank 1 has max_epochs=4: call run(max_epochs=...) with the same value",
        "- rank 0 has epoch 0, iteration 0; rank 1 has epoch 1, iteration 8: load the same trainer state",
        "- rank 0 has a stop vote every 32 iterations; rank 1 has a stop vote every 1 iterations: set "
        "IGNITE_STOP_VOTE_EVERY",
    ):
        assert line in message, message
    assert message.count("\n- ") == 6


def test_data_without_len_is_not_compared_with_the_counts_of_other_ranks() -> None:
    # Its count is checked at the end of each epoch instead (the stop vote's marker).
    assert mismatch_message([made_up(), made_up(batches=None)]) is None
    message = mismatch_message([made_up(), made_up(batches=None), made_up(batches=9)])
    assert message is not None and "rank 1 has training data without len()" in message


def test_the_digest_is_that_of_the_facts() -> None:
    assert _digest(made_up()) == _digest(made_up())
    assert _digest(made_up()) != _digest(made_up(batches=9))
    assert 0 <= _digest(made_up()) < 2**62  # its negation fits the int64 all-reduce too


def test_facts_of_a_trainer() -> None:
    trainer = Trainer([1.0] * 5, lambda batch: batch, [1.0], lambda batch: batch)
    trainer.register_plugin(object(), name="mine")
    found = facts(trainer)
    assert found["plugins"] == (("mine", "registered in code"),)
    assert (found["validation"], found["batches"], found["vote_every"]) == (True, 5, None)

    class Unsized:
        def __iter__(self):
            return iter([1.0, 2.0])

    assert facts(Trainer(Unsized(), lambda batch: batch))["batches"] is None
