"""``jaxrec train`` interrupted anywhere (Ctrl-C in a step, in a later training phase, while saving the scorers or
``run.json``, while evaluating) stops with one line and exit code 130, leaves an unfinished run that ``evaluate``
names as such, and ``--resume`` finishes it to the run an uninterrupted command writes, bit for bit. ``--overwrite``
replaces only a jaxrec run's own files; every file is written under a temporary name and renamed; a corrupt
checkpoint is a clear error; an unexpected exception still shows its traceback."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import write_dataset_dir

from jaxrec import cli, data, runs
from jaxrec.runs import layout, training
from jaxrec.train import fitting

LEGACY = pathlib.Path(__file__).parent / "fixtures" / "legacy_runs"
#: Two recipes: cmf (one fit of 3 epochs, 2 steps each) and emcdr (three fits: two pretrainings and the mapping).
METHODS = {
    "cmf": ["--epochs", "3", "--set", "dim=8"],
    "emcdr": ["--epochs", "2", "--set", "dim=8", "map_epochs=3", "map_batch_size=64"],
}
INTERRUPTED = re.compile(r"jaxrec: interrupted( at epoch \d+)?; resume with: jaxrec train .* --out \S+ .*--resume\n")


pytestmark = pytest.mark.usefixtures("persistent_compilation_cache")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    ds, _ = data.synthetic(n_users=200, n_items=(40, 30), interactions_per_user=(8.0, 4.0), seed=1)
    ds = data.cold_start_split(ds, "source", "target", fraction=0.3, seed=0)
    return write_dataset_dir(ds, tmp_path_factory.mktemp("tiny"))


def _argv(dataset_dir, out, method, *extra):
    base = ["train", "--data", dataset_dir, "--source", "source", "--target", "target", "--method", method]
    more = ["--out", out, "--ks", "10", "--seeds", "0", "--no-progress", *METHODS[method], *extra]
    return [str(a) for a in base + more]


def _main(argv, capsys) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def reference(dataset_dir, tmp_path_factory):
    """The run directory of each uninterrupted command."""
    root = tmp_path_factory.mktemp("reference")
    for method in METHODS:
        assert cli.main(_argv(dataset_dir, root / method, method)) == 0
    return root


def _assert_same_run(got: pathlib.Path, want: pathlib.Path):
    assert sorted(p.name for p in got.iterdir()) == ["checkpoint", "history.jsonl", "metrics.json", "run.json"]
    users = np.arange(200)
    a, b = runs.load_scorers(got), runs.load_scorers(want)
    assert a.keys() == b.keys()
    for domain in a:
        np.testing.assert_array_equal(np.asarray(a[domain].users_fn(users)), np.asarray(b[domain].users_fn(users)))
        np.testing.assert_array_equal(np.asarray(a[domain].items), np.asarray(b[domain].items))
    assert (got / "history.jsonl").read_text() == (want / "history.jsonl").read_text()
    metrics = [json.loads((p / "metrics.json").read_text()) for p in (got, want)]
    assert metrics[0]["test"] == metrics[1]["test"] and metrics[0]["valid"] == metrics[1]["valid"]
    assert (
        json.loads((got / "run.json").read_text())["checksums"]
        == json.loads((want / "run.json").read_text())["checksums"]
    )


class _Interrupt:
    def __init__(self, at):
        self.at, self.calls = at, 0

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            return fn(*args, **kwargs)

        return wrapped


# (method, what is interrupted, at which call): training steps of the first, a middle and the last epoch (cmf:
# 6 steps; emcdr: 2 + 2 steps of pretraining, then the mapping), the save of the scorers' arrays, and the write of
# run.json (the scorers are saved, the run is not finished).
CASES = [("cmf", "step", k) for k in (1, 3, 6)] + [("emcdr", "step", k) for k in (3, 5, 8)]
CASES += [("cmf", "save_arrays", 1), ("emcdr", "run.json", 1)]


@pytest.mark.parametrize(("method", "where", "at"), CASES, ids=[f"{m}-{w}-{k}" for m, w, k in CASES])
def test_interrupted_train_resumes_to_the_same_run(
    dataset_dir, tmp_path, capsys, monkeypatch, reference, method, where, at
):
    out = tmp_path / "run"
    argv = _argv(dataset_dir, out, method)
    stop = _Interrupt(at)
    with monkeypatch.context() as patch:
        if where == "step":
            make = fitting.make_train_step
            patch.setattr(fitting, "make_train_step", lambda *a, **k: stop(make(*a, **k)))
        elif where == "save_arrays":
            patch.setattr(training, "save_arrays", stop(training.save_arrays))
        else:
            write = layout.write_text

            def write_text(path, text):
                return (stop(write) if path.name == "run.json" else write)(path, text)

            patch.setattr(layout, "write_text", write_text)
        code, err = _main(argv, capsys)
    assert code == 130 and INTERRUPTED.fullmatch(err), err
    assert (" at epoch " in err) == (where == "step")  # saving happens after training, outside any epoch
    assert runs.run_state(out) == "unfinished" and (out / runs.TRAINING_FILE).is_file()
    assert not any(p.name.startswith(".jaxrec-tmp") for p in out.iterdir())
    code, err = _main(["evaluate", "--run", out, "--ks", "10"], capsys)
    assert code == 2 and "this run did not finish; resume it with `jaxrec train" in err and "--resume`" in err
    code, err = _main(argv, capsys)  # the same command without --resume refuses
    assert code == 2 and "did not finish; continue it with --resume, or pass --overwrite" in err
    assert _main([*argv, "--resume"], capsys)[0] == 0
    _assert_same_run(out, reference / method)


def test_the_printed_resume_command_resumes(dataset_dir, tmp_path, capsys, monkeypatch, reference):
    stop, make = _Interrupt(4), fitting.make_train_step
    monkeypatch.setattr(fitting, "make_train_step", lambda *a, **k: stop(make(*a, **k)))
    monkeypatch.chdir(tmp_path)
    argv = _argv(dataset_dir, "run", "cmf")
    argv.remove("--out"), argv.remove("run")  # the default --out is spelled out in the printed command
    code, err = _main(argv, capsys)
    assert code == 130 and "interrupted at epoch 2; resume with: jaxrec train" in err
    command = err.split("resume with: ", 1)[1].split()
    assert command[0] == "jaxrec" and command[-1] == "--resume" and "--out" in command
    monkeypatch.setattr(fitting, "make_train_step", make)
    assert _main(command[1:], capsys)[0] == 0
    _assert_same_run(tmp_path / command[command.index("--out") + 1], reference / "cmf")


def test_resume_with_other_settings_is_refused(dataset_dir, tmp_path, capsys, monkeypatch):
    stop, make = _Interrupt(2), fitting.make_train_step
    monkeypatch.setattr(fitting, "make_train_step", lambda *a, **k: stop(make(*a, **k)))
    argv = _argv(dataset_dir, tmp_path / "run", "cmf")
    assert _main(argv, capsys)[0] == 130
    argv[argv.index("dim=8")] = "dim=16"
    code, err = _main([*argv, "--resume"], capsys)
    assert code == 2 and "was started with other settings (config.dim differ)" in err
    assert "resume it with the command that started it: `jaxrec train" in err


def test_an_interrupt_while_evaluating_leaves_a_finished_run(dataset_dir, tmp_path, capsys, monkeypatch, reference):
    out = tmp_path / "run"
    monkeypatch.setattr(runs, "evaluate_run", _Interrupt(1)(runs.evaluate_run))
    code, err = _main(_argv(dataset_dir, out, "cmf"), capsys)
    assert (code, err) == (130, "jaxrec: interrupted\n")
    assert runs.run_state(out) == "finished" and not (out / "metrics.json").exists()
    monkeypatch.undo()
    assert _main(["evaluate", "--run", out, "--ks", "10", "--seeds", "0"], capsys)[0] == 0
    _assert_same_run(out, reference / "cmf")


def test_overwrite_replaces_only_what_jaxrec_wrote(dataset_dir, tmp_path, capsys, reference):
    out = tmp_path / "run"
    shutil.copytree(reference / "cmf", out)
    (out / "notes.txt").write_text("mine")
    (out / "plots").mkdir()
    (out / "plots" / "training_curves.png").write_bytes(b"old figure")
    (out / "plots" / "my_figure.png").write_bytes(b"mine")
    argv = _argv(dataset_dir, out, "cmf")
    argv[argv.index("dim=8")] = "dim=4"
    code, err = _main(argv, capsys)
    assert code == 2 and "already holds a run; choose another --out, or pass --overwrite" in err
    assert _main([*argv, "--overwrite"], capsys)[0] == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "plots" / "my_figure.png").read_bytes() == b"mine"
    assert not (out / "plots" / "training_curves.png").exists()  # jaxrec's own figure of the replaced run
    assert json.loads((out / "run.json").read_text())["config"]["dim"] == 4


def test_every_file_is_written_under_a_temporary_name_and_renamed(dataset_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    renamed = []
    replace = os.replace

    def recorded(source, target):
        renamed.append(pathlib.Path(target).relative_to(out))
        replace(source, target)

    monkeypatch.setattr(layout.os, "replace", recorded)
    assert _main(_argv(dataset_dir, out, "cmf", "--plots"), capsys)[0] == 0
    names = {str(p) for p in renamed}
    assert names >= {"training.json", "checkpoint", "history.jsonl", "run.json", "metrics.json"}
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.parent in (out, out / "plots")}
    assert written - {"plots"} <= names, written - names
    # an interrupt in the middle of writing metrics.json leaves the old one whole, and no temporary file
    before = (out / "metrics.json").read_bytes()
    monkeypatch.setattr(layout.os, "fsync", _Interrupt(1)(os.fsync))
    code, err = _main(["evaluate", "--run", out, "--ks", "10", "20", "--seeds", "0"], capsys)
    assert (code, err) == (130, "jaxrec: interrupted\n")
    assert (out / "metrics.json").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".jaxrec-tmp")]


def _flip(files, where: float):
    """Flips 4 bytes at fraction ``where`` of each file."""
    for f in files:
        raw = bytearray(f.read_bytes())
        i = int(len(raw) * where)
        raw[i : i + 4] = bytes(b ^ 0x7F for b in raw[i : i + 4])
        f.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ("ocdbt.process_0/d/*", r"checkpoint is corrupt: array a0000\d \(the \w+ of scorer '\w+'\) does not match the"),
        ("d/*", r"cannot restore .*checkpoint: it is missing, incomplete or corrupt \(ValueError: "),
    ],
    ids=["array-bytes", "index-bytes"],
)
def test_a_checkpoint_with_flipped_bytes_is_a_clear_error(tmp_path, capsys, reference, files, message):
    """Flipped bytes in the arrays load as other numbers (caught by the checksums in run.json); in Orbax's index,
    Orbax fails to read it. Either way: one line naming the checkpoint, exit code 2."""
    run = shutil.copytree(reference / "cmf", tmp_path / "run")
    metrics = (run / "metrics.json").read_bytes()
    _flip(sorted((run / "checkpoint").glob(files)), 0.5)
    code, err = _main(["evaluate", "--run", run, "--ks", "10"], capsys)
    assert code == 2 and str(run / "checkpoint") in err and re.search(message, err), err
    assert len(err) < 800 and err.count("\n") == 1 and (run / "metrics.json").read_bytes() == metrics


def test_legacy_runs_without_checksums_still_evaluate(tmp_path, capsys, legacy_data_dir):
    run = shutil.copytree(LEGACY / "cmf", tmp_path / "cmf")
    assert "checksums" not in json.loads((run / "run.json").read_text())
    code, err = _main(["evaluate", "--run", run, "--data", legacy_data_dir, "--ks", "10", "--seeds", "0"], capsys)
    assert code == 0, err


def test_an_unexpected_error_keeps_its_traceback(dataset_dir, tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(runs, "train_run", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(_argv(dataset_dir, tmp_path / "run", "cmf"))


def test_ctrl_c_in_a_real_process(dataset_dir, tmp_path):
    """SIGINT to ``python -m jaxrec train`` once its first checkpoint is written: one line, exit code 130, an
    unfinished run."""
    out = tmp_path / "run"
    argv = _argv(dataset_dir, out, "cmf")
    argv[argv.index("--epochs") + 1] = "1000"
    argv.insert(argv.index("dim=8") + 1, "patience=1000")
    # `python -m jaxrec` with Python's own SIGINT handler (a shell that runs the tests in the background ignores SIGINT)
    start = "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    start += "sys.argv[0] = 'jaxrec'; runpy.run_module('jaxrec', run_name='__main__')"
    process = subprocess.Popen(
        [sys.executable, "-c", start, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("train_checkpoints/*/[0-9]*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert INTERRUPTED.fullmatch(err), err  # the only line on stderr
    assert runs.run_state(out) == "unfinished"
