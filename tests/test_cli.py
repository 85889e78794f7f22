"""The first run as a user meets it: a few clean lines, the local runner pinned, full logs in the run,
errors that say what to do (exit 2, one line, nothing left behind), Ctrl-C with the resume command,
read-only commands that load neither TensorFlow nor Beam (issue #13)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines.cli.parser import build_parser
from pipelines.core.beam_runner import make_pipeline, pipeline_options, runs_in_process
from tests.conftest import ROOT, TAXI_SAMPLE, run_cli, write_config

NOISE = ("absl", "oneDNN", "cuInit", "cpu_feature_guard", "WriteImpl", "Renamed", "struct2tensor",
         "get_config", "Traceback", "prism", "Prism", "WARNING:", "tensorflow:")


def cli_process(*args, **kwargs) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}   # as a user's shell
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *map(str, args)], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """`embedpipe run` of the taxi sample in a subprocess, as a user's terminal sees it."""
    directory = tmp_path_factory.mktemp("user")
    config = write_config(directory, "chicago_taxi", input={"path": str(TAXI_SAMPLE)})
    process = cli_process("run", config, "--output", directory / "runs", "--run-id", "u1")
    out, err = process.communicate(timeout=900)
    assert process.returncode == 0, err
    return directory / "runs" / "u1", out, err


def test_the_terminal_shows_a_short_clean_account(user_run):
    run, out, err = user_run
    lines = err.splitlines()
    assert len(lines) <= 32, err
    assert not [line for line in lines if any(noise in line for noise in NOISE)], err
    assert lines[0].startswith("run ") and any(line.startswith("preprocess done in") for line in lines)
    assert any(line.startswith("train      epoch  1/15") for line in lines)
    assert any(line.startswith("embed      done in") for line in lines)
    summary = err[err.index("run        complete"):]
    assert "embeddings/{day_hour}/*.parquet" in summary
    assert "embedpipe neighbors" in summary and "--entity day_hour" in summary
    assert any("eval RMSE of log(1 + label)" in line and "training mean" in line and "linear" in line for line in lines)
    assert any(line.startswith("preprocess filters: ") for line in lines)
    assert out == ""


def test_every_stage_logs_in_full_into_the_run(user_run):
    run, _, _ = user_run
    logs = {path.stem: path.read_text() for path in (run / "logs").glob("*.log")}
    assert sorted(logs) == ["embed", "preprocess", "train"]
    assert "WriteImpl" in logs["preprocess"] and "epoch  1/15" in logs["train"]
    assert "absl::InitializeLog" in logs["preprocess"] + logs["train"]      # native chatter lands here


def test_the_local_runner_is_pinned_and_recorded(user_run):
    run, _, _ = user_run
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["preprocess"]["runner"] == stages["embed"]["runner"] == "FnApiRunner (in_memory, 1 worker)"
    pinned = make_pipeline(pipeline_options([]))
    assert type(pinned.runner).__name__ == "FnApiRunner"           # never DirectRunner's Prism attempt
    two = pipeline_options(["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    assert type(make_pipeline(two).runner).__name__ == "FnApiRunner"
    assert type(make_pipeline(pipeline_options(["--runner", "DirectRunner"])).runner).__name__ != "FnApiRunner"
    in_process = {args[-1] if args else "pinned": runs_in_process(pipeline_options(args))
                  for args in ([], ["--runner", "DirectRunner"], ["--runner", "direct"], ["--runner", "FlinkRunner"],
                               ["--runner", "DataflowRunner"])}
    assert in_process == {"pinned": True, "DirectRunner": True, "direct": True, "FlinkRunner": False,
                          "DataflowRunner": False}


@pytest.mark.parametrize("args, message", [
    (["train", "/nonexistent/run"], "/nonexistent/run: no such run directory"),
    (["train", "{tmp}"], "is not an embedpipe run directory (no manifest.json)"),
    (["embed", "{pre}"], "train has not run; run `embedpipe train"),
    (["neighbors", "{run}", "--entity", "nothing", "--key", "x"], "no entity 'nothing' (entities: day_hour)"),
    (["neighbors", "{run}", "--entity", "day_hour", "--key", "mon|08"],
     "keys are case-sensitive: did you mean 'Mon|08'?"),
    (["run", "{config}", "--direct_num_worker", "2"], "unrecognized option --direct_num_worker (did you mean "
                                                      "--direct_num_workers?)"),
    (["run", "{config}", "--direct_num_workers", "abc"], "argument --direct_num_workers: invalid int value"),
    (["run", "{typo}"], "modle: unknown key (did you mean 'model'?"),
    (["runs", "{run}", "--keep", "0"], "--keep must be at least 1"),
    (["plot", "{run}", "--entity", "day_hour"], "the following arguments are required: --out"),
    (["nonsense"], "invalid choice: 'nonsense'"),
    (["train", "{out}"], "no complete run yet (no LATEST); its newest runs: "),
    (["run", "{config}", "--freeze", "day_hour"], "--freeze keeps warm-started rows fixed: say where they come from"),
    (["run", "{config}", "--warm-start", "{run}", "--freeze", "dayhour"], "did you mean 'day_hour'?"),
    (["neighbours", "{run}"], "did you mean neighbors?"),
    (["run", "{config}", "--runner", "DirectRuner"], "--runner DirectRuner: not a Beam runner (did you mean "
                                                     "DirectRunner?"),
    (["neighbors", "{run}", "--entity", "day_hour", "--keys-file", "{tmp}/none.txt", "--output-prefix", "{tmp}/x"],
     "none.txt: no such file"),
    (["plot", "{run}", "--entity", "day_hour", "--out", "{tmp}/day_hour.jpg"], "write a .png, .svg or .pdf file"),
    (["plot", "{run}", "--entity", "day_hour", "--out", "{tmp}/pictures/"], "name a file, not a directory"),
])
def test_usage_errors_are_one_line_and_leave_nothing(user_run, tmp_path, capsys, args, message):
    run, _, _ = user_run
    config = write_config(tmp_path, "chicago_taxi", input={"path": str(TAXI_SAMPLE)})
    typo = tmp_path / "typo.yaml"
    typo.write_text(config.read_text().replace("model:", "modle:"))
    preprocessed = tmp_path / "pre"
    if "{pre}" in args:
        (preprocessed).mkdir()
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["stages"] = {"preprocess": manifest["stages"]["preprocess"]}
        (preprocessed / "manifest.json").write_text(json.dumps(manifest))
    if "{out}" in args:   # an output root whose one run has only preprocessed: no LATEST yet
        (tmp_path / "out" / "r1").mkdir(parents=True)
        (tmp_path / "out" / "r1" / "manifest.json").write_text((run / "manifest.json").read_text())
    names = {"{tmp}": tmp_path, "{pre}": preprocessed, "{run}": run, "{config}": config, "{typo}": typo,
             "{out}": tmp_path / "out"}
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_cli(*[a.replace("{tmp}", str(tmp_path)) if "{tmp}/" in a else names.get(a, a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("embedpipe: error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_failed_job_is_one_line_naming_the_stage_and_its_log(tmp_path, capsys):
    lines = TAXI_SAMPLE.read_text().splitlines()
    bad = [line.replace(line.split(",")[1], "", 1) if i % 3 == 0 else line for i, line in enumerate(lines[1:200])]
    (tmp_path / "bad.csv").write_text(lines[0] + "\n" + "\n".join(bad) + "\n")
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(tmp_path / "bad.csv")})
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "f") == 1
    err = capsys.readouterr().err.splitlines()
    failure = err[-1]
    assert failure.startswith("embedpipe: preprocess failed: InvalidInputError: ") and "max_invalid_fraction" in failure
    assert "x label 'fare' is missing" in failure and failure.endswith(f"(log: {tmp_path / 'runs' / 'f' / 'logs' / 'preprocess.log'})")
    log = (tmp_path / "runs" / "f" / "logs" / "preprocess.log").read_text()
    assert "Traceback" in log and "InvalidInputError" in log


def test_ctrl_c_says_how_to_resume_and_a_killed_run_shows_interrupted(tmp_path):
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(TAXI_SAMPLE)},
                          model={"epochs": 200, "early_stopping_patience": 0})
    process = cli_process("run", config, "--output", tmp_path / "runs", "--run-id", "c")
    history = tmp_path / "runs" / "c" / ".staging" / "train" / "history.jsonl"
    deadline = time.time() + 300
    while not history.exists() and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err.splitlines()[-1] == (f"embedpipe: interrupted during train; resume with: embedpipe run {config} "
                                    f"--output {tmp_path / 'runs'} --run-id c")
    stages = json.loads((tmp_path / "runs" / "c" / "manifest.json").read_text())["stages"]
    assert stages["train"]["status"] == "interrupted" and not (tmp_path / "runs" / "c" / ".lock").exists()
    killed = cli_process("run", config, "--output", tmp_path / "runs", "--run-id", "c")
    while "epoch" not in (tmp_path / "runs" / "c" / "logs" / "train.log").read_text().split("interrupted")[-1]:
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    listing = subprocess.run([sys.executable, "-m", "pipelines.cli", "runs", tmp_path / "runs"], cwd=ROOT,
                             capture_output=True, text=True)
    assert listing.stdout.split()[:3] == ["c", "train:", "interrupted"]


def test_read_only_commands_load_neither_tensorflow_nor_beam(user_run, tmp_path):
    run, _, _ = user_run
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\nmodle: {}\n")
    program = ("import sys; from pipelines import cli; code = cli.main(sys.argv[1:]); "
               "print(code, 'tensorflow' in sys.modules, 'apache_beam' in sys.modules)")
    for args in (["neighbors", run, "--entity", "day_hour", "--key", "Mon|08"], ["runs", run.parent],
                 ["compare", run, run, "--entity", "day_hour"], ["run", typo], ["runs", "--help"]):
        result = subprocess.run([sys.executable, "-c", program, *map(str, args)], cwd=ROOT, capture_output=True,
                                text=True)
        assert result.stdout.splitlines()[-1].split()[-2:] == ["False", "False"], (args, result.stdout)


def test_every_option_has_help():
    parser = build_parser()
    missing = []
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("embedpipe", parser)] + list(subparsers.choices.items()):
        for action in sub._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help:
                missing.append(f"{name} {action.dest}")
    assert not missing, missing
    assert parser.description.endswith(".") and "Exit status" in parser.epilog


def test_a_model_no_better_than_its_baseline_is_a_warning():
    from pipelines.cli.summary import train_lines
    lines = train_lines({"rmse": 29.8, "baseline_mean_rmse": 28.59, "baseline_linear_rmse": 30.1, "epochs_run": 3})
    assert lines[1] == ("warning: eval RMSE 29.8 is no better than predicting the training mean (28.59): the features "
                        "may not carry the signal, or the model needs more epochs or data")
    assert len(train_lines({"rmse": 0.47, "baseline_mean_rmse": 0.6, "epochs_run": 3})) == 1
    assert "majority class (0.5)" in train_lines({"accuracy": 0.5, "baseline_majority_accuracy": 0.5})[1]
    assert len(train_lines({"hr@10": 0.09, "ndcg@10": 0.04, "baseline_popularity_hr@10": 0.043,
                            "baseline_popularity_ndcg@10": 0.02})) == 1
