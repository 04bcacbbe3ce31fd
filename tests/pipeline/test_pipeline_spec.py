"""load_pipeline: vars and paths resolved, and bad files refused with a message that says where."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pipeline_kit import write_pipeline

from tokenpo.exceptions import ConfigError
from tokenpo.pipeline import load_pipeline


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


def test_vars_paths_and_the_workdir_resolve(tmp_path: Path):
    path = write(
        tmp_path,
        """
        [pipeline]
        name = "demo"
        workdir = "runs/{tag}"
        [vars]
        tag = "seed{seed}"
        seed = 3
        shards = "{workdir}/shards"
        [[stage]]
        name = "prep"
        run = ["tokenpo", "prep", "--out", "{shards}", "--set", "x={seed}"]
        inputs = ["{pipeline_dir}/pairs.jsonl", "tok/../tok"]
        outputs = ["{shards}/manifest.json"]
        """,
    )
    pipeline = load_pipeline(path)
    workdir = tmp_path / "runs" / "seed3"
    assert pipeline.name == "demo"
    assert pipeline.workdir == workdir
    assert pipeline.state_file == workdir / ".tokenpo-pipeline.json"
    assert dict(pipeline.vars) == {
        "tag": "seed3",
        "seed": "3",
        "shards": f"{workdir}/shards",
        "workdir": str(workdir),
        "pipeline_dir": str(tmp_path),
    }
    (prep,) = pipeline.stages
    assert prep.run == ("tokenpo", "prep", "--out", f"{workdir}/shards", "--set", "x=3")
    assert prep.inputs == (tmp_path / "pairs.jsonl", workdir / "tok")
    assert prep.outputs == (workdir / "shards" / "manifest.json",)
    assert prep.resume == ()


def test_overrides_replace_vars_and_change_the_definition(tmp_path: Path):
    path = write_pipeline(
        tmp_path, [{"name": "a", "run": ["echo", "{seed}"]}], variables={"seed": "0"}
    )
    default, overridden = load_pipeline(path), load_pipeline(path, {"seed": "1"})
    assert overridden.stages[0].run == ("echo", "1")
    assert default.stages[0].definition != overridden.stages[0].definition


def test_resume_arguments_are_not_part_of_the_definition(tmp_path: Path):
    def definition(resume: list[str]) -> str:
        stage = {"name": "a", "run": ["echo"], "resume": resume}
        return load_pipeline(write_pipeline(tmp_path, [stage])).stages[0].definition

    assert definition([]) == definition(["--resume"])


def test_only_braces_around_a_name_substitute(tmp_path: Path):
    code = "print({'a': {}}, '{{seed}}', '{seed}', '{ seed }', '{0}')"
    path = write_pipeline(
        tmp_path, [{"name": "a", "run": ["python", "-c", code]}], variables={"seed": 5}
    )
    assert load_pipeline(path).stages[0].run[2] == (
        "print({'a': {}}, '{seed}', '5', '{ seed }', '{0}')"
    )


def test_defaults_name_the_pipeline_after_its_file_and_work_beside_it(tmp_path: Path):
    path = write(tmp_path, '[[stage]]\nname = "a"\nrun = ["echo"]\n')
    pipeline = load_pipeline(path)
    assert (pipeline.name, pipeline.workdir) == ("pipeline", tmp_path)


BAD_FILES = {
    "unknown stage key": (
        [{"name": "train", "run": ["echo"], "ouputs": ["x"]}],
        {},
        "stage 'train': unknown key 'ouputs' (did you mean 'outputs'?); "
        "allowed: name, run, resume, inputs, outputs",
    ),
    "missing run": (
        [{"name": "train", "outputs": ["x"]}],
        {},
        "stage 'train': run is required",
    ),
    "empty run": ([{"name": "train", "run": []}], {}, "stage 'train': run must name a command"),
    "run not a list": (
        [{"name": "train", "run": "tokenpo train"}],
        {},
        "stage 'train': run must be a list of strings, got 'tokenpo train'",
    ),
    "duplicate names": (
        [{"name": "a", "run": ["echo"]}, {"name": "b", "run": ["echo"]}, {"name": "a", "run": []}],
        {},
        "[[stage]] #3: name: 'a' is already the name of [[stage]] #1",
    ),
    "nameless stage": ([{"run": ["echo"]}], {}, "[[stage]] #1: name is required"),
    "unknown var in run": (
        [{"name": "train", "run": ["echo", "--seed={sed}"]}],
        {"seed": "0"},
        "stage 'train': run[1]: unknown var {sed} (did you mean {seed}?); "
        "vars: pipeline_dir, seed, workdir (write {{sed}} for a literal {sed})",
    ),
    "unknown var in outputs": (
        [{"name": "train", "run": ["echo"], "outputs": ["{out}/x"]}],
        {},
        "stage 'train': outputs[0]: unknown var {out}",
    ),
    "unknown var in vars": (
        [{"name": "a", "run": ["echo"]}],
        {"a": "{b}"},
        "[vars] a: unknown var {b}",
    ),
    "vars in a cycle": (
        [{"name": "a", "run": ["echo"]}],
        {"a": "{b}", "b": "{a}"},
        "[vars]: the vars refer to each other: a -> b -> a",
    ),
    "built-in var set": (
        [{"name": "a", "run": ["echo"]}],
        {"workdir": "x"},
        "[vars] workdir: workdir is built in and cannot be set in [vars]",
    ),
    "var of a bad type": (
        [{"name": "a", "run": ["echo"]}],
        {"flag": True},
        "[vars] flag must be a string or a number, got True",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_a_bad_file_is_refused_with_the_file_stage_and_key(tmp_path: Path, case: str):
    stages, variables, message = BAD_FILES[case]
    path = write_pipeline(tmp_path, stages, variables=variables)
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    assert str(caught.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[pipelin]\nname = 'x'\n",
            "the top level: unknown key 'pipelin' (did you mean 'pipeline'?)",
        ),
        (
            "[pipeline]\nworkdri = 'x'\n",
            "[pipeline]: unknown key 'workdri' (did you mean 'workdir'?)",
        ),
        ("[pipeline]\nname = 'x'\n", "no stages: add at least one [[stage]]"),
        ("stage = 3\n", "stage must be an array of tables ([[stage]])"),
        ("[[stage]\n", "not valid TOML: "),
    ],
)
def test_a_bad_layout_is_refused(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: {message}")):
        load_pipeline(path)


def test_an_override_of_a_var_the_file_lacks_is_refused(tmp_path: Path):
    path = write_pipeline(tmp_path, [{"name": "a", "run": ["echo"]}], variables={"seed": 0})
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path, {"sed": "1"})
    assert str(caught.value) == (
        f"--var sed: no var 'sed' in [vars] of {path} (did you mean 'seed'?); vars: seed"
    )


def test_a_missing_file_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read the pipeline file: No such file"):
        load_pipeline(tmp_path / "absent.toml")
