"""Training driver: fit (determinism, resume, checkpoints, the NaN guard, early stopping, files), run_phases."""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TinyCDR, assert_trees_close, bpr_tasks, make_batches

from jaxrec import train as T

# ---------------------------------------------------------------------------------------------- fit


def _task(ds, **kw):
    objective = kw.pop("objective", T.Objective(bpr_tasks, discrepancy="mmd", lam=0.1))
    return T.Task(model=kw.pop("model", TinyCDR(dropout=0.1)), objective=objective, batches=make_batches(ds), **kw)


def _cfg(**kw):
    base = dict(epochs=2, progress=False, log_every=3, optimizer=T.OptimizerConfig(learning_rate=0.02))
    base.update(kw)
    return T.TrainConfig(**base)


def test_fit_is_deterministic(ds):
    a = T.fit(_cfg(), _task(ds))
    b = T.fit(_cfg(), _task(ds))
    assert a.history == b.history
    assert_trees_close(a.params, b.params, rtol=0, atol=0)
    c = T.fit(_cfg(seed=1), _task(ds))
    assert a.history != c.history
    assert a.history[-1]["loss"] < a.history[0]["loss"]


@pytest.mark.parametrize("parallel", ["none", "pmap"])
def test_resume_is_bit_identical(ds, tmp_path, parallel):
    evaluate = lambda p: {"norm": float(jnp.sum(p["users"]["embedding"] ** 2))}
    full = T.fit(_cfg(epochs=3, parallel=parallel), _task(ds, evaluate=evaluate))
    steps_per_epoch = sum(1 for _ in make_batches(ds)(np.random.default_rng(0)))
    ckpt = str(tmp_path / "ckpt")
    interrupted = T.fit(
        _cfg(epochs=3, parallel=parallel, checkpoint_dir=ckpt, checkpoint_every=2, max_steps=steps_per_epoch + 3),
        _task(ds, evaluate=evaluate),
    )
    assert int(interrupted.state.step) == steps_per_epoch + 3
    resumed = T.fit(
        _cfg(epochs=3, parallel=parallel, checkpoint_dir=ckpt, checkpoint_every=2, resume=True),
        _task(ds, evaluate=evaluate),
    )
    assert_trees_close(full.params, resumed.params, rtol=0, atol=0)
    assert [r for r in full.history if "eval/norm" in r] == [r for r in resumed.history if "eval/norm" in r]


def test_corrupt_or_incompatible_checkpoint_is_a_clear_error(ds, tmp_path):
    ckpt = tmp_path / "ckpt"
    T.fit(_cfg(epochs=1, checkpoint_dir=str(ckpt)), _task(ds))
    with pytest.raises(ValueError, match="cannot be restored into this model"):
        T.fit(_cfg(epochs=2, checkpoint_dir=str(ckpt), resume=True), _task(ds, model=TinyCDR(dim=4)))
    for f in ckpt.rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "meta" not in str(f):
            f.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt or incompatible"):
        T.fit(_cfg(epochs=2, checkpoint_dir=str(ckpt), resume=True), _task(ds))


def test_nan_guard_names_the_step_and_writes_no_checkpoint_after_it(ds, tmp_path):
    objective = T.Objective(bpr_tasks, model_kwargs=lambda step: {"poison": step >= 4})
    ckpt = tmp_path / "ckpt"
    with pytest.raises(T.NonFiniteError, match=r"step 5: \[.*'loss'.*'task/source'"):
        T.fit(_cfg(checkpoint_dir=str(ckpt), checkpoint_every=2, log_every=100), _task(ds, objective=objective))
    saved = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    assert saved and max(saved) <= 4


def test_nan_policy_skip_counts_and_keeps_params_finite(ds):
    objective = T.Objective(bpr_tasks, model_kwargs=lambda step: {"poison": step % 5 == 4})
    result = T.fit(_cfg(nan_policy="skip"), _task(ds, objective=objective))
    assert sum(r.get("skipped", 0) for r in result.history) >= 2
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(result.params))


def _open_files_under(directory: pathlib.Path) -> list[str]:
    """Files under ``directory`` that this process holds open (Linux: /proc/self/fd)."""
    fds = pathlib.Path("/proc/self/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:  # closed between listing and reading
            continue
    return [t for t in targets if t.startswith(str(directory.resolve()))]


@pytest.mark.skipif(not pathlib.Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")
def test_files_are_closed_when_nonfinite_error_is_raised(ds, tmp_path):
    objective = T.Objective(bpr_tasks, model_kwargs=lambda step: {"poison": step >= 4})
    log = tmp_path / "log.jsonl"
    config = _cfg(checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2, log_every=3, jsonl=str(log))
    with pytest.raises(T.NonFiniteError, match="step 5") as raised:
        T.fit(config, _task(ds, objective=objective))
    # the traceback (held by `raised`) keeps fit's frames alive: an unclosed file would still be open here
    assert raised.traceback is not None
    assert _open_files_under(tmp_path) == []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 3, 4]  # checkpoints at 2 and 4, a log at 3; step 5 raised


def test_nan_policy_skip_when_the_last_step_of_a_log_window_is_skipped(ds):
    # state.step % 3 == 2 poisons steps 3, 6, 9, ...: the last record of every window of log_every=3
    objective = T.Objective(bpr_tasks, model_kwargs=lambda step: {"poison": step % 3 == 2})
    result = T.fit(_cfg(nan_policy="skip", log_every=3), _task(ds, objective=objective))
    windows = [r for r in result.history if "loss" in r]
    assert [r["skipped"] for r in windows if r["step"] % 3 == 0] == [1] * 4  # steps 3, 6, 9, 12
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(result.params))


def test_early_stopping_keeps_best_params(ds, tmp_path):
    calls = []

    def evaluate(params):
        calls.append(params)
        return {"ndcg": [0.5, 0.7, 0.6, 0.4, 0.3, 0.2][len(calls) - 1]}

    log = tmp_path / "log.jsonl"
    result = T.fit(
        _cfg(epochs=20, eval_every=2, early_stopping_metric="ndcg", patience=2, jsonl=str(log)),
        _task(ds, evaluate=evaluate),
    )
    assert len(calls) == 4  # best at the 2nd evaluation, two without improvement, stop
    assert result.best["eval/ndcg"] == 0.7
    assert_trees_close(result.best_params, calls[1], rtol=0, atol=0)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records == result.history
    with pytest.raises(KeyError, match="early_stopping_metric='recall'"):
        T.fit(_cfg(early_stopping_metric="recall"), _task(ds, evaluate=evaluate))


def test_run_phases_pretrain_then_finetune(ds):
    source_only = T.Objective(lambda o, b: {"source": bpr_tasks(o, b)["source"]})
    target_only = T.Objective(lambda o, b: {"target": bpr_tasks(o, b)["target"]})
    results = T.run_phases(
        [
            (_cfg(epochs=1), _task(ds, objective=source_only, name="pretrain")),
            (
                _cfg(epochs=1, optimizer=T.OptimizerConfig(name="sgd", learning_rate=0.1)),
                _task(ds, objective=target_only, name="finetune"),
            ),
        ]
    )
    pre, fine = results
    # the fine-tuning phase starts from the pretrained parameters: source item table untouched by target loss
    np.testing.assert_array_equal(
        np.asarray(pre.params["items_source"]["embedding"]), np.asarray(fine.params["items_source"]["embedding"])
    )
    assert not np.array_equal(
        np.asarray(pre.params["items_target"]["embedding"]), np.asarray(fine.params["items_target"]["embedding"])
    )


def test_config_validation():
    with pytest.raises(ValueError, match="parallel='tpu'"):
        T.TrainConfig(parallel="tpu")
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        T.TrainConfig(resume=True)
    with pytest.raises(ValueError, match="nan_policy='ignore'"):
        T.TrainConfig(nan_policy="ignore")
