"""`tokenpo plot` and `tokenpo export` on a tiny finished run: curves to an image, and the
policy of any checkpoint in the Hugging Face format."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_kit import prepared, run_config
from transformers import AutoModelForCausalLM

from cli_runner import run_tokenpo
from tokenpo.exceptions import ConfigError, InputError
from tokenpo.train.config import load_config
from tokenpo.train.export import export_checkpoint
from tokenpo.train.loop import train
from tokenpo.train.plot import plotted_metrics, read_curves, read_runs, smooth
from tokenpo_cli.plot import curves_figure, plot_command

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 steps of tbpo_q (its value head is checkpointed beside the policy), checkpoints at
    steps 2 and 4, validation at steps 2 and 4, activation checkpointing on (its wrapper
    must not leak into the checkpoint's names)."""
    directory = tmp_path_factory.mktemp("run")
    shards = prepared(directory / "data")
    config = run_config(
        directory,
        shards,
        model={"activation_checkpointing": True},
        data={"val_shards": str(shards)},
        loss={"name": "tbpo_q"},
        logging={"val_every": 2},
        checkpoint={"every": 2},
    )
    return train(load_config(config)).run_dir


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


# export


def test_export_of_the_latest_checkpoint_equals_final(run_dir: Path, tmp_path: Path) -> None:
    written = export_checkpoint(run_dir, out_dir=tmp_path / "latest")
    assert written == tmp_path / "latest"
    # The last checkpoint is written after the last step, from which final/ is exported.
    exported, final = _weights(written), _weights(run_dir / "final")
    assert exported.keys() == final.keys()
    for name, tensor in final.items():
        assert torch.equal(exported[name], tensor), name
    config = json.loads((written / "config.json").read_text())
    assert config == json.loads((run_dir / "final" / "config.json").read_text())
    assert sorted(path.name for path in written.iterdir()) == sorted(
        path.name for path in (run_dir / "final").iterdir()
    )


def test_cli_export_of_an_earlier_checkpoint_differs_from_final_and_loads(
    run_dir: Path, tmp_path: Path
) -> None:
    written = export_checkpoint(run_dir, out_dir=tmp_path / "out")
    result = run_tokenpo(
        "export", run_dir, "--checkpoint", "step-000002", "--out", written, "--overwrite"
    )
    assert result.returncode == 0, result.stderr
    assert str(written) in result.stdout
    exported, final = _weights(written), _weights(run_dir / "final")
    assert exported.keys() == final.keys()
    assert any(not torch.equal(exported[name], tensor) for name, tensor in final.items())
    model = AutoModelForCausalLM.from_pretrained(written)
    loaded = model.state_dict()
    for name, tensor in exported.items():
        assert torch.equal(loaded[name], tensor), name


def test_a_checkpoint_can_be_named_by_its_step(run_dir: Path) -> None:
    by_step = export_checkpoint(run_dir, checkpoint="4")
    assert by_step == run_dir / "export-step-000004"
    assert _weights(by_step).keys() == _weights(run_dir / "final").keys()
    for name, tensor in _weights(run_dir / "final").items():
        assert torch.equal(_weights(by_step)[name], tensor), name


def test_export_refuses_to_overwrite_without_the_flag(run_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "out"
    export_checkpoint(run_dir, checkpoint="step-000002", out_dir=target)
    with pytest.raises(ConfigError, match=r"already exists and is not empty; pass --overwrite"):
        export_checkpoint(run_dir, out_dir=target)
    assert not torch.equal(
        _weights(target)["lm_head.weight"], _weights(run_dir / "final")["lm_head.weight"]
    )

    refused = run_tokenpo("export", run_dir, "--out", target)
    assert refused.returncode == 2
    assert "already exists and is not empty; pass --overwrite" in refused.stderr

    export_checkpoint(run_dir, out_dir=target, overwrite=True)
    assert torch.equal(
        _weights(target)["lm_head.weight"], _weights(run_dir / "final")["lm_head.weight"]
    )


def test_export_of_a_missing_checkpoint_lists_the_available_ones(run_dir: Path) -> None:
    with pytest.raises(
        InputError,
        match=r"no checkpoint 'step-000003'; available: latest, step-000002, step-000004",
    ):
        export_checkpoint(run_dir, checkpoint="step-000003")


def test_export_refuses_to_write_over_the_run(run_dir: Path) -> None:
    for target in (run_dir, run_dir.parent, run_dir / "checkpoints" / "step-000002"):
        with pytest.raises(ConfigError, match=r"would replace the run or its checkpoints"):
            export_checkpoint(run_dir, out_dir=target, overwrite=True)
    assert (run_dir / "checkpoints" / "step-000002").is_dir()


def test_export_of_a_directory_without_a_run_names_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"{tmp_path}: not a run directory \(no config.toml\)"):
        export_checkpoint(tmp_path)


def test_export_of_a_run_without_checkpoints_says_so(run_dir: Path, tmp_path: Path) -> None:
    shutil.copy(run_dir / "config.toml", tmp_path / "config.toml")
    with pytest.raises(InputError, match=r"checkpoints: no checkpoint yet"):
        export_checkpoint(tmp_path)


def test_export_of_a_checkpoint_that_does_not_fit_the_config_names_the_tensor(
    run_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir / "checkpoints", copy / "checkpoints")
    config = (run_dir / "config.toml").read_text()
    assert "num_hidden_layers = 2" in config
    (copy / "config.toml").write_text(
        config.replace("num_hidden_layers = 2", "num_hidden_layers = 3")
    )
    with pytest.raises(InputError, match=r"does not fit .* Missing key .*layers\.2\."):
        export_checkpoint(copy, out_dir=tmp_path / "out")


# plot


def test_cli_plot_of_one_run_writes_a_png(run_dir: Path, tmp_path: Path) -> None:
    image = tmp_path / "curves.png"
    result = run_tokenpo("plot", run_dir, "--out", image)
    assert result.returncode == 0, result.stderr
    assert "val/loss" in result.stdout
    data = image.read_bytes()
    assert data.startswith(_PNG_SIGNATURE)
    assert len(data) > 20_000


def test_plot_of_two_runs_writes_a_png(run_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    with (other / "metrics.jsonl").open("w") as file:
        for record in records:
            shifted = {
                key: value * 0.5 if key != "step" else value for key, value in record.items()
            }
            file.write(json.dumps(shifted) + "\n")
    image = tmp_path / "two.png"
    plot_command(
        [run_dir, other],
        image,
        metrics=["loss", "val/rewards/margins"],
        labels=["tbpo_q", "halved"],
        smooth_window=2,
    )
    data = image.read_bytes()
    assert data.startswith(_PNG_SIGNATURE)
    assert len(data) > 10_000


def test_runs_sharing_a_label_share_a_colour_and_a_legend_entry(run_dir: Path) -> None:
    runs = read_runs([run_dir, run_dir, run_dir], ["dpo", "tabpo", "dpo"])
    figure = curves_figure(runs, ["loss"], smooth_window=1)
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["dpo", "tabpo"]
    colors = [line.get_color() for line in figure.axes[0].get_lines()]
    assert colors[0] == colors[2] != colors[1]


def test_a_constant_metric_with_rounding_noise_gets_a_readable_axis(tmp_path: Path) -> None:
    directories = []
    for name, lr in (("exact", 5e-5), ("rounded", 5e-5 * (1 + 1e-12))):
        directory = tmp_path / name
        directory.mkdir()
        lines = [json.dumps({"step": step, "lr": lr}) for step in (1, 2, 3)]
        (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        directories.append(directory)
    figure = curves_figure(read_runs(directories), ["lr"], smooth_window=1)
    low, high = figure.axes[0].get_ylim()
    # ±10 %, not a window onto the rounding.
    assert low < 4.6e-5
    assert high > 5.4e-5


def test_cli_plot_of_an_unknown_metric_lists_the_available_ones(
    run_dir: Path, tmp_path: Path
) -> None:
    image = tmp_path / "curves.png"
    result = run_tokenpo("plot", run_dir, "--out", image, "--metric", "loss", "--metric", "nope")
    assert result.returncode == 2
    assert "no run logged 'nope'; available metrics:" in result.stderr
    assert "rewards/margins" in result.stderr
    assert "val/logps/chosen_drift" in result.stderr
    assert not image.exists()


def test_plot_of_a_directory_without_metrics_names_it(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"{tmp_path}: no metrics.jsonl"):
        plot_command([run_dir, tmp_path], tmp_path / "curves.png")


def test_plot_refuses_an_unknown_image_format(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown image format \.txt; use one of .*\.png"):
        plot_command([run_dir], tmp_path / "curves.txt")


def test_default_metrics_are_those_logged_validation_included(run_dir: Path) -> None:
    (run,) = read_runs([run_dir])
    assert run.label == run_dir.name
    assert plotted_metrics([run]) == [
        "loss",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "lr",
        "val/loss",
        "val/rewards/accuracies",
        "val/logps/chosen_drift",
    ]
    assert run.series["loss"].steps.tolist() == [1, 2, 3, 4]
    assert run.series["val/loss"].steps.tolist() == [2, 4]


def test_read_curves_keeps_the_numeric_values_of_each_step(tmp_path: Path) -> None:
    lines = [
        {"step": 1, "loss": 0.5, "flag": True, "note": "x", "lr": 1},
        {"step": 2, "loss": float("nan")},
        {"step": 2, "val/loss": 0.4},
        {"loss": 9.0},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"step": 3, "lo'
    (tmp_path / "metrics.jsonl").write_text(text)
    run = read_curves(tmp_path, label="mine")
    assert run.label == "mine"
    assert sorted(run.series) == ["loss", "lr", "val/loss"]
    assert run.series["loss"].steps.tolist() == [1, 2]
    assert run.series["loss"].values[0] == 0.5
    assert math.isnan(run.series["loss"].values[1])
    assert run.series["lr"].values.dtype == np.float64


def test_runs_sharing_a_name_are_labelled_by_path(tmp_path: Path) -> None:
    for parent in ("a", "b"):
        (tmp_path / parent / "run").mkdir(parents=True)
        (tmp_path / parent / "run" / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    runs = read_runs([tmp_path / "a" / "run", tmp_path / "b" / "run"])
    assert [run.label for run in runs] == [str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run")]
    with pytest.raises(ConfigError, match=r"1 label\(s\) for 2 run\(s\)"):
        read_runs([tmp_path / "a" / "run", tmp_path / "b" / "run"], ["one"])


def test_smooth_is_a_trailing_moving_average_over_finite_values() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=40)
    values[[5, 6, 7, 20]] = [np.nan, np.nan, np.inf, np.nan]
    for window in (1, 2, 3, 7, 100):
        expected = []
        for end in range(1, len(values) + 1):
            kept = [v for v in values[max(0, end - window) : end] if math.isfinite(v)]
            expected.append(sum(kept) / len(kept) if kept else math.nan)
        if window == 1:
            np.testing.assert_array_equal(smooth(values, window), values)
        else:
            np.testing.assert_allclose(smooth(values, window), expected, rtol=1e-12)
    with pytest.raises(ConfigError, match=r"smoothing window must be at least 1, got 0"):
        smooth(values, 0)
