"""Interrupted training resumes bit for bit: ``fit`` stopped by a KeyboardInterrupt at many points (before a step,
inside an evaluation, before, inside and after a checkpoint save) and run again with ``resume=True`` reaches the
parameters, best parameters, history and log file of an uninterrupted run; a run stopped before its first checkpoint
starts cleanly from scratch. The ``checkpointing`` session resumes every ``fit`` of a multi-phase program."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TinyCDR, assert_trees_close, bpr_tasks, make_batches
from orbax.checkpoint._src.path import atomicity

from jaxrec import train as T
from jaxrec.train import checkpoint, fitting

OBJECTIVE = T.Objective(bpr_tasks, discrepancy="mmd", lam=0.1)  # one object: the memoised step compiles once
#: Every fit of this file reuses one compiled step (the step is the same function each time).
COMPILED_ONCE = functools.cache(T.make_train_step)


@pytest.fixture(autouse=True)
def compile_once(monkeypatch):
    monkeypatch.setattr(fitting, "make_train_step", COMPILED_ONCE)


pytestmark = pytest.mark.usefixtures("persistent_compilation_cache")


def _evaluate(params):
    """Deterministic in the parameters: the squared norm of the user table, and its negative (which falls while
    the embeddings grow, so early stopping on it halts the run)."""
    norm = float(jnp.sum(params["users"]["embedding"] ** 2))
    return {"norm": norm, "shrink": -norm}


#: Two schedules: evaluation and checkpoints at the end of every epoch; and evaluation every 4 steps with early
#: stopping (the run halts in its second epoch), checkpoints every 3 steps.
SCHEDULES = {
    "epochs": dict(epochs=3),
    "steps": dict(epochs=4, eval_every=4, early_stopping_metric="shrink", patience=2, checkpoint_every=3),
}


def _fit(ds, tmp_path, schedule, *, resume=False, evaluate=_evaluate):
    config = T.TrainConfig(
        progress=False,
        log_every=3,
        optimizer=T.OptimizerConfig(learning_rate=0.02),
        checkpoint_dir=str(tmp_path / "ckpt"),
        jsonl=str(tmp_path / "log.jsonl"),
        resume=resume,
        **SCHEDULES[schedule],
    )
    task = T.Task(TinyCDR(dropout=0.1), OBJECTIVE, make_batches(ds), evaluate=evaluate)
    return T.fit(config, task)


@pytest.fixture(scope="module")
def reference(ds, tmp_path_factory):
    """The uninterrupted run of each schedule, and its log file."""
    out = {}
    for schedule in SCHEDULES:
        path = tmp_path_factory.mktemp(schedule)
        result = _fit(ds, path, schedule)
        out[schedule] = (result, (path / "log.jsonl").read_text())
    return out


def _assert_same(result, log, want):
    ref, ref_log = want
    assert_trees_close(result.params, ref.params, rtol=0, atol=0)
    assert_trees_close(result.best_params, ref.best_params, rtol=0, atol=0)
    assert result.history == ref.history and result.best == ref.best
    assert log == ref_log


def test_the_step_schedule_halts_early(reference):
    result, _ = reference["steps"]
    assert int(result.state.step) == 12 < 4 * 7 and result.best["step"] == 4  # stopped by patience


class _Interrupt:
    """Raises KeyboardInterrupt on the ``at``-th call of a wrapped function (counting from 1)."""

    def __init__(self, at):
        self.at, self.calls = at, 0

    def wrap(self, fn, *, after=False):
        def wrapped(*args, **kwargs):
            self.calls += 1
            if self.calls == self.at and not after:
                raise KeyboardInterrupt
            out = fn(*args, **kwargs)
            if self.calls == self.at:
                raise KeyboardInterrupt
            return out

        return wrapped


def _interrupt_step(monkeypatch, at):
    stop = _Interrupt(at)
    monkeypatch.setattr(fitting, "make_train_step", lambda *a, **k: stop.wrap(COMPILED_ONCE(*a, **k)))


# (schedule, what is interrupted, at which call): steps before, between and after checkpoints, an evaluation,
# and checkpoint saves interrupted before writing, inside Orbax (a temporary directory left behind) and after.
CASES = (
    [("epochs", "step", k) for k in (1, 4, 7, 8, 12, 15, 21)]
    + [("steps", "step", k) for k in (2, 3, 4, 7, 11, 12)]
    + [("epochs", "evaluate", 2), ("steps", "evaluate", 3)]
    + [("epochs", "save", 2), ("steps", "save", 3), ("epochs", "orbax", 2), ("steps", "orbax", 1)]
    + [("epochs", "saved", 1), ("steps", "saved", 4)]
)


@pytest.mark.parametrize(("schedule", "where", "at"), CASES, ids=[f"{s}-{w}-{k}" for s, w, k in CASES])
def test_interrupted_fit_resumes_bit_identically(ds, tmp_path, monkeypatch, reference, schedule, where, at):
    stop = _Interrupt(at)
    evaluate = _evaluate
    with monkeypatch.context() as patch:
        if where == "step":
            _interrupt_step(patch, at)
        elif where == "evaluate":
            evaluate = stop.wrap(_evaluate)
        elif where in ("save", "saved"):
            patch.setattr(fitting, "save_checkpoint", stop.wrap(fitting.save_checkpoint, after=where == "saved"))
        else:  # Orbax has written the step into its temporary directory and is about to rename it

            async def finalize(self, *args, **kwargs):
                stop.calls += 1
                if stop.calls == stop.at:
                    raise KeyboardInterrupt
                return await original(self, *args, **kwargs)

            original = atomicity.AtomicRenameTemporaryPath.finalize
            patch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)
        with pytest.raises(KeyboardInterrupt):
            _fit(ds, tmp_path, schedule, evaluate=evaluate)
    if where == "orbax":
        assert any(".orbax-checkpoint-tmp" in p.name for p in (tmp_path / "ckpt").iterdir())
    resumed = _fit(ds, tmp_path, schedule, resume=True)
    _assert_same(resumed, (tmp_path / "log.jsonl").read_text(), reference[schedule])
    assert not any(".orbax-checkpoint-tmp" in p.name for p in (tmp_path / "ckpt").iterdir())


def test_resuming_a_finished_fit_returns_its_result_without_training(ds, tmp_path, monkeypatch, reference):
    for schedule in SCHEDULES:
        _fit(ds, tmp_path / schedule, schedule)
        _interrupt_step(monkeypatch, 1)  # any training step would raise
        _assert_same(
            _fit(ds, tmp_path / schedule, schedule, resume=True),
            (tmp_path / schedule / "log.jsonl").read_text(),
            reference[schedule],
        )
        monkeypatch.setattr(fitting, "make_train_step", COMPILED_ONCE)


def test_a_checkpoint_that_differs_from_its_checksum_names_the_array(ds, tmp_path):
    _fit(ds, tmp_path, "epochs")
    latest = max(int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit())
    meta_file = tmp_path / "ckpt" / str(latest) / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    key = "['params']['users']['embedding']"
    meta["checksums"][key] = "0" * 64
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"ckpt/\d+ is corrupt: array \['params'\]\['users'\]\['embedding'\]"):
        _fit(ds, tmp_path, "epochs", resume=True)


def test_checkpointing_session_resumes_every_phase(ds, tmp_path, monkeypatch):
    """Two phases (as a recipe runs them) under one session; interrupted in the second, resumed to the same."""

    def two_phases():
        config = T.TrainConfig(epochs=2, progress=False, optimizer=T.OptimizerConfig(learning_rate=0.02))
        task = T.Task(TinyCDR(dropout=0.1), OBJECTIVE, make_batches(ds), name="phase")
        return T.run_phases([(config, task), (config, task)])

    reference = two_phases()
    _interrupt_step(monkeypatch, 20)  # the second phase: each has 2 epochs of 8 steps
    with pytest.raises(KeyboardInterrupt), checkpoint.checkpointing(tmp_path, resume=False) as session:
        two_phases()
    assert session.fits == 2 and session.epoch == 1 and session.name == "phase"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit0-phase", "fit1-phase"]
    monkeypatch.setattr(fitting, "make_train_step", COMPILED_ONCE)
    with checkpoint.checkpointing(tmp_path, resume=True):
        resumed = two_phases()
    for got, want in zip(resumed, reference, strict=True):
        assert_trees_close(got.params, want.params, rtol=0, atol=0)
        assert got.history == want.history
    assert checkpoint.current_session() is None
    leaves = jax.tree.leaves(resumed[-1].params)
    assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
