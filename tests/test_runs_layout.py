"""Run directory states and the rules for writing into them (jaxrec.runs.layout), and train_run's own interrupt and
resume, without the command line."""

import json

import numpy as np
import pytest

from jaxrec import data, methods, runs

MARKER = json.dumps({"format": "jaxrec-run/2"})


def _make(tmp_path, state):
    path = tmp_path / "out"
    if state == "file":
        path.write_text("x")
    elif state != "absent":
        path.mkdir()
    if state == "foreign":
        (path / "run.json").write_text('{"mine": true}')  # a user's own run.json is not a jaxrec run
    elif state in ("finished", "unfinished"):
        (path / (runs.RUN_FILE if state == "finished" else runs.TRAINING_FILE)).write_text(MARKER)
    return path


@pytest.mark.parametrize("state", ["absent", "empty", "file", "foreign", "finished", "unfinished"])
def test_run_state(tmp_path, state):
    assert runs.run_state(_make(tmp_path, state)) == state


def test_run_json_wins_over_training_json(tmp_path):
    """An interrupt between writing run.json and removing training.json leaves a finished run."""
    path = _make(tmp_path, "finished")
    (path / runs.TRAINING_FILE).write_text(MARKER)
    assert runs.run_state(path) == "finished"


#: (state, resume, overwrite) -> None (allowed) or the message's start.
RULES = [
    ("absent", False, False, None),
    ("empty", False, True, None),
    ("absent", True, False, "--resume: "),
    ("file", False, True, "--out "),
    ("foreign", False, True, "--out "),
    ("finished", False, False, "already holds a run"),
    ("finished", True, False, "holds a finished run: nothing to resume"),
    ("finished", False, True, None),
    ("unfinished", False, False, "holds a run that did not finish"),
    ("unfinished", True, False, None),
    ("unfinished", False, True, None),
]


@pytest.mark.parametrize(("state", "resume", "overwrite", "message"), RULES)
def test_check_out(tmp_path, state, resume, overwrite, message):
    path = _make(tmp_path, state)
    if message is None:
        assert runs.check_out(path, resume=resume, overwrite=overwrite) == state
    else:
        with pytest.raises(runs.RunError, match="out" if message == "--out " else message):
            runs.check_out(path, resume=resume, overwrite=overwrite)


def test_replacing_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), runs.replacing(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    runs.write_text(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_clear_run_deletes_only_what_jaxrec_writes(tmp_path):
    run = _make(tmp_path, "finished")
    for name in ("history.jsonl", "metrics.json", "notes.txt", ".jaxrec-tmp-1-run.json"):
        (run / name).write_text("x")
    for folder in ("checkpoint", "train_checkpoints", "plots", "my_data"):
        (run / folder).mkdir()
        (run / folder / "file").write_text("x")
    (run / "plots" / "training_curves.png").write_text("x")
    (run / runs.TRAINING_FILE).write_text(MARKER)
    runs.clear_run(run)
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert left == ["my_data", "my_data/file", "notes.txt", "plots", "plots/file", "training.json"]
    assert runs.run_state(run) == "unfinished"


@pytest.fixture(scope="module")
def tiny():
    ds, _ = data.synthetic(n_users=120, n_items=(30, 20), interactions_per_user=(6.0, 4.0), seed=1)
    return data.cold_start_split(ds, "source", "target", fraction=0.3, seed=0)


def test_train_run_interrupted_then_resumed(tiny, tmp_path, monkeypatch):
    original = methods.METHODS["popularity"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(methods.METHODS, "popularity", original._replace(train=interrupted))
    kw = dict(method="popularity", source="source", target="target", out=tmp_path / "run", command="jaxrec train X")
    with pytest.raises(runs.TrainingInterrupted) as raised:
        runs.train_run(tiny, **kw)
    assert isinstance(raised.value, KeyboardInterrupt) and raised.value.epoch is None
    assert raised.value.run_dir == tmp_path / "run" and runs.run_state(tmp_path / "run") == "unfinished"
    with pytest.raises(runs.RunError, match=r"did not finish; resume it with `jaxrec train X --resume`"):
        runs.read_run(tmp_path / "run")
    monkeypatch.setitem(methods.METHODS, "popularity", original)
    with pytest.raises(runs.RunError, match=r"other settings \(config.seed differ\)"):
        runs.train_run(tiny, **kw, seed=1, resume=True)
    trained, run_dir = runs.train_run(tiny, **kw, resume=True)
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint", "history.jsonl", "run.json"]
    restored = runs.load_scorers(run_dir)["target"]
    users = np.arange(5)
    np.testing.assert_array_equal(restored.users_fn(users), trained.scorers["target"].users_fn(users))


def test_train_run_checks_before_training(tiny, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setitem(methods.METHODS, "cmf", methods.METHODS["cmf"]._replace(train=never))
    with pytest.raises(ValueError, match=r"EmbeddingConfig.user_tower must be a tuple of ints .* got 64"):
        runs.train_run(tiny, method="cmf", source="source", target="target", out=tmp_path / "a", user_tower=64)
    with pytest.raises(data.DataError, match=r"unknown domain 'books'"):
        runs.train_run(tiny, method="cmf", source="source", target="target", out=tmp_path / "a", auxiliary=("books",))
    assert not (tmp_path / "a").exists()
