"""Peak-memory estimates of the recipes and the up-front refusal (jaxrec.methods.memory)."""

import math
import os

import numpy as np
import pytest

from jaxrec import data, methods, runs
from jaxrec.methods import memory

PAIR = {"source": "source", "target": "target"}


def _data(n_users=500, n_items=(200, 150), seed=0):
    ds, _ = data.synthetic(n_users=n_users, n_items=n_items, seed=seed)
    return data.cold_start_split(ds, "source", "target", fraction=0.2, seed=seed)


@pytest.fixture(scope="module")
def ds():
    return _data()


@pytest.fixture(scope="module")
def big():
    return _data(n_users=300, n_items=(20_000, 20_000))


def _estimate(name, ds, **overrides):
    config = methods.make_config(methods.get_method(name).default_config, overrides)
    return methods.estimate_memory(name, ds, **PAIR, config=config)


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_recipe_has_a_finite_positive_estimate_from_counts_only(ds, name):
    est = _estimate(name, ds)
    assert isinstance(est, methods.MemoryEstimate)
    assert math.isfinite(est.bytes) and memory.RUNTIME < est.bytes < 2e9, (name, est.bytes)
    assert est.bytes == sum(est.parts.values()) and all(v >= 0 for v in est.parts.values())
    assert list(est.parts.values()) == sorted(est.parts.values(), reverse=True)  # largest part first
    assert est.dominant() == next(iter(est.parts.items()))
    assert est.alternative and est.alternative[-1] != "."
    assert not ds._cache, "the estimate built the dataset's seen-item CSRs (it reads counts only)"


def test_dense_item_map_grows_like_the_square_of_the_catalogue_cmf_linearly():
    sizes = [(200, 150), (400, 300), (800, 600)]
    sets = [_data(n_items=n) for n in sizes]
    gram = [_estimate("item_map", d, solver="dense").parts["item x item Gram and solves"] for d in sets]
    assert gram[1] / gram[0] == pytest.approx(4.0, rel=1e-6) and gram[2] / gram[1] == pytest.approx(4.0, rel=1e-6)
    dense = [_estimate("item_map", d, solver="dense").bytes for d in sets]
    assert dense[2] - dense[1] > 3 * (dense[1] - dense[0])  # the quadratic part dominates the growth
    cmf = [_estimate("cmf", d).bytes for d in sets]
    assert cmf[0] < cmf[1] < cmf[2]
    assert cmf[2] - cmf[1] == pytest.approx(2 * (cmf[1] - cmf[0]), rel=0.05)  # linear in the catalogue


def test_lowrank_item_map_is_far_below_dense_on_a_large_catalogue(ds, big):
    dense, lowrank = _estimate("item_map", big, solver="dense"), _estimate("item_map", big, solver="lowrank", rank=64)
    assert dense.dominant()[0] == "item x item Gram and solves" and dense.bytes > 10 * lowrank.bytes
    assert "lowrank" in dense.alternative and "rank" in lowrank.alternative
    # "auto" takes the estimate of the solver it runs
    assert _estimate("item_map", big).bytes == _estimate("item_map", big, solver="lowrank").bytes
    assert _estimate("item_map", ds).bytes == _estimate("item_map", ds, solver="dense").bytes


def test_estimates_follow_the_config(ds, big):
    assert _estimate("cmf", ds, dim=256).bytes > _estimate("cmf", ds, dim=32).bytes
    assert _estimate("lightgcn", ds, num_layers=4).bytes > _estimate("lightgcn", ds, num_layers=1).bytes
    full, sampled = _estimate("history", big), _estimate("history", big, task_loss="sampled_softmax")
    assert full.bytes > sampled.bytes and "sampled_softmax" in full.alternative
    # tables of sparse_min_rows rows or more keep no dense gradient and update
    assert _estimate("cmf", ds, sparse_min_rows=1).bytes < _estimate("cmf", ds, sparse_min_rows=None).bytes


def test_memory_limit_reads_the_variable_then_the_physical_memory(monkeypatch):
    monkeypatch.setenv(memory.ENV_VAR, "2")
    assert methods.memory_limit() == int(memory.SAFETY * 2e9)
    assert methods.memory_limit(4.0) == int(memory.SAFETY * 4e9)  # an explicit limit wins
    monkeypatch.delenv(memory.ENV_VAR)
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert methods.memory_limit() == pytest.approx(memory.SAFETY * physical, rel=1e-6)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", ""])
def test_a_bad_memory_variable_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv(memory.ENV_VAR, value)
    with pytest.raises(ValueError, match=f"{memory.ENV_VAR}={value!r}: expected a positive number"):
        methods.memory_limit()


def test_run_refuses_up_front_and_check_memory_false_bypasses(monkeypatch, ds):
    monkeypatch.setenv(memory.ENV_VAR, "0.001")
    with pytest.raises(methods.MemoryLimitError) as err:
        methods.run("cmf", ds, **PAIR, epochs=1, progress=False)
    message = str(err.value)
    for part in (
        "cmf would need about",
        "GB (mostly",
        "limit of 0.0 GB",
        "JAXREC_MEMORY_GB=0.001",
        "Use a smaller dim",
    ):
        assert part in message, (part, message)
    assert isinstance(err.value, ValueError)
    assert not ds._cache  # refused before any training structure was built
    trained = methods.run("cmf", ds, **PAIR, epochs=1, progress=False, check_memory=False)
    assert "target" in trained.scorers


def test_jaxrec_train_checks_memory_before_training(monkeypatch, ds, tmp_path):
    monkeypatch.setenv(memory.ENV_VAR, "0.001")
    with pytest.raises(methods.MemoryLimitError, match="item_map would need"):
        runs.check_trainable(ds, method="item_map", **PAIR)
    with pytest.raises(methods.MemoryLimitError, match="lightgcn would need"):
        runs.train_run(ds, method="lightgcn", **PAIR, out=tmp_path / "run", epochs=1, progress=False)
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv(memory.ENV_VAR, "100")
    runs.check_trainable(ds, method="item_map", **PAIR)  # fits


def test_unknown_recipe_names_the_valid_ones(ds):
    with pytest.raises(ValueError, match="unknown method 'nope'; valid methods"):
        methods.estimate_memory("nope", ds, **PAIR, config=None)
    assert set(memory._FAMILIES) == set(methods.METHODS)


def test_estimate_matches_the_bench_rule_for_the_measured_dense_item_map():
    """The dense solver's Grams at 17,943 + 12,655 items: measured 8.3 GB peak (bench/scale.py's rule of thumb,
    10·(N_s + N_t)² bytes, says 9.4 GB)."""
    rng = np.random.default_rng(0)
    n_s, n_t, users = 17_943, 12_655, 2_000
    domains = {
        "source": data.Domain("source", n_s, {"train": data.Interactions(*_pairs(rng, users, n_s))}, np.arange(n_s)),
        "target": data.Domain("target", n_t, {"train": data.Interactions(*_pairs(rng, users, n_t))}, np.arange(n_t)),
    }
    big = data.CrossDomainDataset(domains, users, np.arange(users))
    gram = _estimate("item_map", big, solver="dense").parts["item x item Gram and solves"]
    assert 0.8 * 8.3e9 < gram < 2 * 8.3e9


def _pairs(rng, users, items, n=5_000):
    return rng.integers(0, users, n).astype(np.int32), rng.integers(0, items, n).astype(np.int32)
