"""Run directories and the train / evaluate / diagnose commands: round trip, metrics.json layout, clear errors,
stable scorer names, and run directories written by jaxrec 0.1.0."""

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import write_dataset_dir

from jaxrec import cli, data, evaluate, methods, runs

LEGACY = pathlib.Path(__file__).parent / "fixtures" / "legacy_runs"


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    ds, _ = data.synthetic(n_users=300, n_items=(60, 40), interactions_per_user=(8.0, 4.0), seed=1)
    ds = data.cold_start_split(ds, "source", "target", fraction=0.25, seed=0)
    return write_dataset_dir(ds, tmp_path_factory.mktemp("tiny"))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "jaxrec", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("method", ["cmf", "item_map"])
def test_train_save_load_evaluate_round_trip(dataset_dir, tmp_path, method):
    ds = data.load_dir(dataset_dir)
    overrides = {"epochs": 2, "dim": 8, "progress": False} if method == "cmf" else {"lams": (10.0,)}
    trained, run_dir = runs.train_run(
        ds,
        method=method,
        source="source",
        target="target",
        out=tmp_path / "run",
        data_path=str(dataset_dir),
        **overrides,
    )
    restored = runs.load_scorers(run_dir)
    users = np.arange(ds.n_users, dtype=np.int32)
    for domain, scorer in trained.scorers.items():
        got, want = restored[domain], scorer
        np.testing.assert_array_equal(np.asarray(got.users_fn(users)), np.asarray(want.users_fn(users)))
        if want.items is not None:
            np.testing.assert_array_equal(np.asarray(got.items), np.asarray(want.items))
    metrics = runs.evaluate_run(run_dir, ks=(10, 20), seeds=(0, 1))
    direct = evaluate.evaluate(
        trained.scorers["target"], ds, target="target", split="test", source="source", ks=(10, 20), seeds=(0, 1)
    )
    assert metrics["test"]["full"]["NDCG@10"] == pytest.approx(direct["full"]["NDCG@10"], rel=1e-6)
    assert metrics["test"]["sampled"]["HR@10"] == pytest.approx(direct["sampled"]["HR@10"], rel=1e-6)
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert set(on_disk["test"]["sampled"]) == {"MRR", "NDCG@5", "NDCG@10", "HR@1", "HR@5", "HR@10"}
    assert set(on_disk["test"]["full"]) == {"Recall@10", "NDCG@10", "Recall@20", "NDCG@20"}
    assert set(on_disk) >= {"valid", "test", "config", "seed", "versions", "wall_time", "checkpoint", "method"}
    assert on_disk["method"] == method and on_disk["versions"]["jax"]


def test_run_errors(dataset_dir, tmp_path):
    with pytest.raises(runs.RunError, match="not a jaxrec run directory"):
        runs.read_run(tmp_path)
    with pytest.raises(runs.RunError, match="run directory not found"):
        runs.read_run(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("{}")
    with pytest.raises(runs.RunError, match="not a jaxrec run file"):
        runs.read_run(tmp_path / "bad")
    ds = data.load_dir(dataset_dir)
    _, run_dir = runs.train_run(
        ds, method="popularity", source="source", target="target", out=tmp_path / "pop", data_path=str(dataset_dir)
    )
    with pytest.raises(runs.RunError, match="already holds a run"):
        runs.train_run(ds, method="popularity", source="source", target="target", out=run_dir)
    other, _ = data.synthetic(n_users=200, n_items=(60, 40), seed=3)
    with pytest.raises(runs.RunError, match="does not match the checkpoint"):
        runs.evaluate_run(run_dir, ds=data.cold_start_split(other, "source", "target", seed=0))
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        runs.train_run(ds, method="nope", source="source", target="target", out=tmp_path / "x")


def test_cli_train_evaluate_diagnose(dataset_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--data", dataset_dir, "--source", "source", "--target", "target", "--out", run, "--ks", 10]
    main = lambda *a: cli.main([str(x) for x in a])  # noqa: E731  (in-process: no jax start-up per call)
    assert main("train", *args, "--method", "cmf", "--epochs", 1, "--set", "dim=8", "--no-progress", "--plots") == 0
    assert "test (" in capsys.readouterr().out and (run / "metrics.json").exists()
    assert (run / "plots" / "training_curves.png").exists()
    assert main("evaluate", "--run", run, "--ks", 10, 20) == 0
    assert "NDCG@20" in json.loads((run / "metrics.json").read_text())["test"]["full"]
    assert main("diagnose", run) == 0
    assert "proxy A-distance" in capsys.readouterr().out
    # bad input: clear messages and exit status 2
    assert main("train", *args[:-4], "--out", tmp_path / "r2", "--method", "bprmf") == 2
    assert "unknown method 'bprmf'" in capsys.readouterr().err
    assert main("train", *args[:-4], "--out", tmp_path / "r3", "--method", "popularity", "--epochs", 3) == 2
    assert "has no epochs" in capsys.readouterr().err
    assert main("train", *args[:-4], "--out", tmp_path / "r4", "--method", "popularity", "--ks", 500) == 2
    assert "exceeds the catalogue" in capsys.readouterr().err
    out = _cli("evaluate", "--run", tmp_path)  # the real entry point, once
    assert out.returncode == 2 and "not a jaxrec run directory" in out.stderr


def test_cli_sweep_and_methods(dataset_dir, capsys):
    args = ["sweep", "--data", dataset_dir, "--source", "source", "--target", "target", "--method", "coral"]
    assert (
        cli.main([str(a) for a in args] + ["--lam", "0.1", "1.0", "--epochs", "1", "--set", "dim=8", "--no-progress"])
        == 0
    )
    table = capsys.readouterr().out
    assert "0.1" in table and "NDCG@10" in table
    assert cli.main(["sweep", "--method", "popularity"]) == 2
    assert "popularity" in capsys.readouterr().err
    assert cli.main(["methods"]) == 0
    assert "item_map" in capsys.readouterr().out


def test_cli_shared_users_is_recorded_and_reused(dataset_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--data", dataset_dir, "--source", "source", "--target", "target", "--out", run, "--ks", 10]
    assert cli.main([str(a) for a in ("train", *args, "--method", "popularity", "--shared-users", 250)]) == 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["shared_users"] == 250
    n_local = json.loads((run / "run.json").read_text())["dataset"]["n_users"]
    assert n_local > data.load_dir(dataset_dir).n_users  # ids >= 250 became one user per domain
    capsys.readouterr()
    assert cli.main(["evaluate", "--run", str(run), "--ks", "10"]) == 0  # reloads with the recorded setting
    assert cli.main(["data", "--data", str(dataset_dir), "--shared-users", "250"]) == 0
    assert "user ids >= 250 are local to their domain" in capsys.readouterr().out
    assert cli.main(["data", "--data", str(dataset_dir), "--link-test", "source", "target"]) == 0
    assert "link test source -> target" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["data", "--data", str(dataset_dir), "--shared-users", "some"])
    assert "expected 'all', 'below_heldout' or an integer" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# The run format: stable scorer names, and run directories written by older versions
# ----------------------------------------------------------------------------------------------------------------


def _partial_names(node) -> set:
    """Every ``"partial"`` function name in a scorer description of run.json."""
    if isinstance(node, dict):
        found = {node["partial"]} if "partial" in node else set()
        return found.union(*(_partial_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_partial_names(v) for v in node))
    return set()


def test_saved_runs_name_only_stable_scorer_functions(dataset_dir, tmp_path):
    ds = data.load_dir(dataset_dir)
    overrides = {"popularity": {}, "item_map": {"lams": (10.0,)}, "cmf": {"epochs": 1, "dim": 8, "progress": False}}
    names = set()
    for method, kw in overrides.items():
        _, run_dir = runs.train_run(ds, method=method, source="source", target="target", out=tmp_path / method, **kw)
        meta = json.loads((run_dir / "run.json").read_text())
        assert meta["format"] == runs.FORMAT == "jaxrec-run/2"
        names |= _partial_names(meta["scorers"])
    assert names == {"popularity", "item_map_scores", "warm_or_popularity"}
    assert names <= set(runs.scorer_functions())


def test_scorer_over_another_function_is_refused_before_writing(dataset_dir, tmp_path):
    ds = data.load_dir(dataset_dir)
    table = np.ones((ds.n_users, 2), np.float32)
    bad = methods.Trained({"target": evaluate.Scorer(jax.tree_util.Partial(np.take, table))}, None, [], None)
    kw = dict(method="x", source="source", target="target", ds=ds, data_path=None, seed=0, train_seconds=0.0)
    with pytest.raises(runs.RunError, match=r"cannot save a scorer over .*take.*one of \['embedding', 'item_map"):
        runs.save_run(tmp_path / "bad", bad, **kw)
    assert not (tmp_path / "bad").exists()
    # evaluate.embedding_scorer is saveable, under its stable name, and restores to the same scores
    good = methods.Trained({"target": evaluate.embedding_scorer(table, np.ones((3, 2), np.float32))}, None, [], None)
    run_dir = runs.save_run(tmp_path / "good", good, **kw)
    assert _partial_names(json.loads((run_dir / "run.json").read_text())["scorers"]) == {"embedding"}
    restored = runs.load_scorers(run_dir)["target"]
    np.testing.assert_array_equal(np.asarray(restored.users_fn(np.arange(4))), table[:4])


@pytest.fixture(scope="module")
def legacy_ds(legacy_data_dir):
    return data.load_dir(legacy_data_dir)


@pytest.mark.parametrize("method", ["popularity", "item_map", "cmf", "emcdr"])
def test_legacy_run_directories_evaluate_to_their_metrics(legacy_ds, tmp_path, method):
    """Run directories written by jaxrec 0.1.0 (format jaxrec-run/1, private qualified scorer names) load and
    evaluate to the metrics they had then (tests/fixtures/legacy_runs/README.md). Evaluated on a copy: evaluate_run
    writes metrics.json into the run directory."""
    run_dir = shutil.copytree(LEGACY / method, tmp_path / method)
    meta = runs.read_run(run_dir)
    assert meta["format"] == "jaxrec-run/1" and _partial_names(meta["scorers"]) <= set(runs.LEGACY_NAMES)
    metrics = runs.evaluate_run(run_dir, ds=legacy_ds, seeds=(0,))
    expected = json.loads((LEGACY / "expected_metrics.json").read_text())[method]
    assert set(expected) == {"valid", "test"}
    for split, want in expected.items():
        assert metrics[split]["counts"] == want["counts"]
        for protocol in ("sampled", "sampled_std", "full"):
            assert set(metrics[split][protocol]) == set(want[protocol])
            for name, value in want[protocol].items():
                assert metrics[split][protocol][name] == pytest.approx(value, rel=1e-6), (split, protocol, name)
