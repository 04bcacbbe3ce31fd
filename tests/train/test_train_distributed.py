"""Multi-process training under torchrun on gloo: parity with one process, two nodes, resume.

These start real process groups (2 CPU ranks), so they are marked slow.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_kit import (
    assert_same_trace,
    finish,
    kill_tree,
    launch,
    losses_of,
    prepared,
    run_config,
    with_empty_rejected,
)

from tokenpo.train.metrics import read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("data"), pairs=64)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "final" / "model.safetensors")


# tbpo_q: its value head is sharded apart from the model and called inside the model's forward.
@pytest.mark.parametrize("loss", ["tabpo", "tbpo_q"])
def test_two_ranks_match_one_rank_on_the_same_global_batch(
    tmp_path: Path, shards: Path, loss: str
) -> None:
    config = run_config(tmp_path, shards, loss={"name": loss}, data={"micro_batch_size": 2})
    assert_one_rank_trains_like_two(tmp_path, config)


def test_pairs_without_a_rejected_side_weigh_alike_on_one_and_two_ranks(
    tmp_path: Path, shards: Path
) -> None:
    # The ranks' halves of a batch hold different numbers of them: FSDP's average of each
    # rank's own mean over its valid pairs weighed the pairs of the two halves differently.
    data = with_empty_rejected(shards, tmp_path / "data", rows=[0, 1, 2, 3, 5, 8, 13])
    assert_one_rank_trains_like_two(tmp_path, run_config(tmp_path, data))


def assert_one_rank_trains_like_two(tmp_path: Path, config: Path) -> None:
    one = tmp_path / "one"
    two = tmp_path / "two"
    for out_dir, ranks in ((one, 1), (two, 2)):
        overrides = (f"run.out_dir={out_dir}",)
        finish(
            launch("--standalone", f"--nproc-per-node={ranks}", config=config, overrides=overrides)
        )
    assert [step for step, _ in losses_of(one)] == [1, 2, 3, 4]
    assert_same_trace(losses_of(two), losses_of(one))
    norms = [[r["grad_norm"] for r in read_metrics(d / "metrics.jsonl")] for d in (one, two)]
    assert norms[1] == pytest.approx(norms[0], rel=1e-5)
    # Equal weights after 4 AdamW steps: the averaged gradients were equal every step
    # (a summed gradient, pytorch#162338, would differ by the world size).
    weights_one, weights_two = final_weights(one), final_weights(two)
    for name, value in weights_one.items():
        torch.testing.assert_close(weights_two[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_two_nodes_on_one_machine_train_like_one_node(tmp_path: Path, shards: Path) -> None:
    config = run_config(tmp_path, shards)
    single = tmp_path / "single"
    nodes = tmp_path / "nodes"
    finish(
        launch(
            "--standalone",
            "--nproc-per-node=2",
            config=config,
            overrides=(f"run.out_dir={single}",),
        )
    )
    endpoint = f"127.0.0.1:{free_port()}"
    agents = [
        launch(
            "--nnodes=2",
            f"--node-rank={rank}",
            "--nproc-per-node=1",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}",
            "--rdzv-id=tokenpo-test",
            config=config,
            overrides=(f"run.out_dir={nodes}",),
        )
        for rank in range(2)
    ]
    for agent in agents:
        finish(agent)
    assert_same_trace(losses_of(nodes), losses_of(single))


def test_a_killed_run_resumes_to_the_same_loss_trace(tmp_path: Path, shards: Path) -> None:
    config = run_config(
        tmp_path,
        shards,
        loss={"name": "tabpo"},
        schedule={"max_steps": 12, "kind": "cosine", "warmup_steps": 2},
        curriculum={"pacing": "linear", "bands": 4},
        checkpoint={"every": 3},
    )
    straight = tmp_path / "straight"
    killed = tmp_path / "killed"
    finish(
        launch(
            "--standalone",
            "--nproc-per-node=2",
            config=config,
            overrides=(f"run.out_dir={straight}",),
        )
    )

    first = launch(
        "--standalone", "--nproc-per-node=2", config=config, overrides=(f"run.out_dir={killed}",)
    )
    latest = killed / "checkpoints" / "latest"
    deadline = time.monotonic() + 300
    while not (latest.is_file() and latest.read_text() >= "step-000006"):
        assert first.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    kill_tree(first.pid)
    first.communicate()
    killed_at = latest.read_text()
    assert killed_at < "step-000012", "the run finished before the kill"

    finish(
        launch(
            "--standalone",
            "--nproc-per-node=2",
            config=config,
            overrides=(f"run.out_dir={killed}", "checkpoint.resume=true"),
        )
    )
    assert [step for step, _ in losses_of(straight)] == list(range(1, 13))
    assert_same_trace(losses_of(killed), losses_of(straight))
