"""How often gloo aborts a rank at teardown ("terminate called without an active exception",
SIGABRT after the work is done), by way of shutting down. No ignite code runs in the ranks.

Run by hand from the repository root::

    .venv/bin/python benchmarks/gloo_teardown.py [--launches 30] [--variants destroy,tcp,...]

Each launch starts 2 plain processes (or ``torchrun --nproc_per_node=2`` for the ``torchrun``
variant) that join a gloo group on 127.0.0.1, train a small DDP model for 20 iterations (the
gradient all-reduces), run one asynchronous all-reduce as the trainer's stop vote does, and then
shut down as the variant says:

* ``destroy``: ``destroy_process_group()``, then a normal interpreter exit (``file://`` store);
* ``tcp``: the same with a TCPStore (``env://``, MASTER_ADDR/MASTER_PORT) instead of a file;
* ``no_destroy``: exit without ``destroy_process_group()``;
* ``pending``: the last asynchronous all-reduce is never waited for, then ``destroy``;
* ``barrier``: ``barrier()`` then ``destroy``;
* ``del_ddp``: the DDP model (its reducer holds the group and gloo work) is deleted and garbage
  collected before ``destroy``;
* ``os_exit``: ``destroy``, then ``os._exit(0)``: no interpreter finalisation;
* ``torchrun``: ``destroy`` under torchrun (TCPStore, the elastic agent).

Prints, per variant, the launches in which some rank ended with the abort, and the other failures.

Measured on the 2-core development machine (27 November, torch 2.13, load average 4-8 from other
work), 30 launches each: destroy 1/30, tcp 1/30, no_destroy 0/30, pending 0/30, and destroy again
(``--show-aborts``, to read faulthandler's report of the abort) 0/30: 2 aborts in 150 launches
(1.3%; 95% interval 0.2-4.7%), ~16 minutes. At that rate 30 launches cannot tell the variants
apart; barrier, del_ddp, os_exit and torchrun were not run within the time allowed.

A likely mechanism, not shown here: a gloo/c10d thread that still holds work or tensors takes
the GIL while the interpreter finalises and is ended inside C++ (torch's
``destroy_process_group`` comments on the same hazard for Python completion hooks); the trainer
itself leaves no collective pending when ``run()`` returns.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

from _torchrun import free_port  # benchmarks/ is the script's folder

RANK_SCRIPT = textwrap.dedent(
    """
    import gc, os, sys
    import torch
    import torch.distributed as dist

    variant, folder = sys.argv[1], sys.argv[2]
    if variant in ("torchrun", "tcp"):
        dist.init_process_group("gloo")
    else:
        rank, world = int(sys.argv[3]), int(sys.argv[4])
        dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(16, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20):
        optimizer.zero_grad()
        model(torch.randn(8, 16)).pow(2).mean().backward()
        optimizer.step()
    flag = torch.zeros(3, dtype=torch.int32)
    work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, async_op=True)
    if variant != "pending":
        work.wait()
    if variant == "del_ddp":
        del model, optimizer, work
        gc.collect()
    if variant == "barrier":
        dist.barrier()
    if variant != "no_destroy":
        dist.destroy_process_group()
    print("done", flush=True)
    if variant == "os_exit":
        os._exit(0)
    """
)

VARIANTS = ("destroy", "tcp", "no_destroy", "pending", "barrier", "del_ddp", "os_exit", "torchrun")
ABORT = "terminate called without an active exception"


def launch(script: str, variant: str, timeout: float) -> tuple[list[int | None], str]:
    """One two-rank launch: the ranks' exit codes (torchrun: the agent's) and their output."""
    # faulthandler prints, at the abort, which thread aborted and whether Python was finalising.
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        env.pop(name, None)
    with tempfile.TemporaryDirectory() as folder:
        if variant == "torchrun":
            command = [
                sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={free_port()}", "--max_restarts=0", f"--log-dir={folder}/logs",
                script, variant, folder,
            ]
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
            return [result.returncode], result.stdout + result.stderr
        if variant == "tcp":
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2")
        processes = [
            subprocess.Popen(
                [sys.executable, script, variant, folder, str(rank), "2"],
                env={**env, "RANK": str(rank)} if variant == "tcp" else env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for rank in range(2)
        ]
        outputs = []
        for process in processes:
            try:
                outputs.append(process.communicate(timeout=timeout)[0])
            except subprocess.TimeoutExpired:
                process.kill()
                outputs.append(process.communicate()[0] + "\n[killed: timeout]")
        return [process.returncode for process in processes], "\n".join(outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launches", type=int, default=30)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--show-aborts", action="store_true", help="print each abort's output (faulthandler's report)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    with tempfile.TemporaryDirectory() as scratch:
        script = os.path.join(scratch, "rank.py")
        with open(script, "w") as file:
            file.write(RANK_SCRIPT)
        for variant in variants:
            aborted = other = 0
            started = time.perf_counter()
            example = ""
            for _ in range(args.launches):
                codes, output = launch(script, variant, args.timeout)
                if ABORT in output:
                    aborted += 1
                    if args.show_aborts:
                        print(textwrap.indent(output[output.index(ABORT) :][:3000], "    ! "), flush=True)
                elif any(codes) or output.count("done") < 2:
                    other += 1
                    example = example or output[-800:]
            seconds = time.perf_counter() - started
            print(
                f"{variant:10s} teardown aborts {aborted}/{args.launches}, other failures {other}, "
                f"{seconds / args.launches:.1f} s a launch",
                flush=True,
            )
            if example:
                print(textwrap.indent(example, "    | "), flush=True)


if __name__ == "__main__":
    main()
