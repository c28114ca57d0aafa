"""``jaxrec.sweep.tune`` and ``jaxrec tune``: the ordered grid search on valid cold users, the budget cut, the
chosen config file (read back by ``jaxrec train --config``) and the no-overwrite rule."""

import json

import numpy as np
import pytest
from conftest import write_dataset_dir

from jaxrec import cli, data, methods, sweep


@pytest.fixture(scope="module")
def tiny():
    dataset, _ = data.synthetic(n_users=200, n_items=(40, 30), interactions_per_user=(6.0, 4.0), seed=3)
    return data.cold_start_split(dataset, "source", "target", fraction=0.25, seed=0)


FAST = {"dim": 8, "epochs": 2, "batch_size": 128}


def test_every_learned_recipe_has_a_valid_default_grid():
    learned = {name for name, method in methods.METHODS.items() if method.kind == "learned"}
    assert set(sweep.TUNE_GRIDS) == learned
    for name in learned:
        grid = sweep.default_grid(name)
        config = methods.METHODS[name].default_config
        if hasattr(config, "task_loss"):  # factor_map trains the full softmax only
            assert list(grid)[0] == "task_loss" and set(grid["task_loss"]) == set(methods.TASK_LOSSES)
        for field, values in grid.items():
            assert len(set(values)) == len(values)
            for v in values:
                methods.common.make_config(config, {field: v})
    with pytest.raises(ValueError, match="no tuning grid"):
        sweep.default_grid("popularity")


def test_vmapped_search_is_ordered_and_chooses_the_best_on_valid(tiny, tmp_path):
    grid = {"task_loss": ("bpr", "softmax"), "learning_rate": (1e-2, 3e-2, 3e-3)}
    out = tmp_path / "chosen.json"
    result = sweep.tune("cmf", tiny, source="source", target="target", grid=grid, base=FAST, budget_s=300, out=out)
    assert result.mode == "vmapped" and result.skipped == []
    # trial 0: the start; then the other task loss; then the other learning rates with the best loss so far
    overrides = [t["overrides"] for t in result.trials]
    assert overrides[:2] == [{}, {"task_loss": "softmax"}]
    loss = {} if result.trials[1]["score"] <= result.trials[0]["score"] else {"task_loss": "softmax"}
    assert overrides[2:] == [{**loss, "learning_rate": 3e-2}, {**loss, "learning_rate": 3e-3}]
    for t in result.trials:
        assert t["score"] == pytest.approx((t["full_NDCG@10"] + t["sampled_NDCG@10"]) / 2)
    best = max(result.trials, key=lambda t: t["score"])
    assert result.valid["score"] == best["score"] >= result.start["score"] == result.trials[0]["score"]
    assert result.chosen == {**FAST, **best["overrides"]}
    record = json.loads(out.read_text())
    assert record["method"] == "cmf" and record["set"] == result.chosen and len(record["trials"]) == 4
    # the choice retrains to the measured model: the recipe, early-stopped like the sweep, on valid
    trained = methods.run("cmf", tiny, source="source", target="target", progress=False, **result.chosen)
    valid = methods.valid_evaluator(tiny, "source", "target")(trained.scorers["target"])
    assert valid["NDCG@10"] == pytest.approx(best["full_NDCG@10"], abs=0.05)


def test_budget_cut_returns_the_start_and_reports_what_was_skipped(tiny):
    grid = {"task_loss": ("bpr", "sampled_softmax"), "finetune_learning_rate": (1e-2, 3e-2)}
    base = {"dim": 8, "epochs": 1, "pretrain_epochs": 1, "batch_size": 128}
    result = sweep.tune("finetune", tiny, source="source", target="target", grid=grid, base=base, budget_s=1e-3)
    assert result.mode == "sequential" and len(result.trials) == 1  # trial 0 always runs whole
    assert result.skipped == [{"task_loss": "sampled_softmax"}, {"finetune_learning_rate": 3e-2}]
    assert result.chosen == base and result.valid == result.start


def test_sequential_search_measures_each_seed(tiny):
    grid = {"task_loss": ("bpr", "sampled_softmax")}
    base = {"dim": 8, "epochs": 1, "map_epochs": 1, "batch_size": 128}
    result = sweep.tune("emcdr", tiny, source="source", target="target", grid=grid, base=base, seeds=(0, 1))
    assert [t["overrides"] for t in result.trials] == [{}, {"task_loss": "sampled_softmax"}]
    for t in result.trials:
        assert len(t["per_seed"]) == 2
        assert t["score"] == pytest.approx(np.mean([s["score"] for s in t["per_seed"]]))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"grid": {"nope": (1,)}}, ValueError, "has no option"),
        ({"grid": {"learning_rate": (-1.0,)}}, ValueError, "learning_rate"),
        ({"grid": {"seed": (0, 1)}}, ValueError, "seeds="),
        ({"grid": {"task_loss": ()}}, ValueError, "non-empty"),
        ({"budget_s": 0}, ValueError, "budget_s"),
        ({"seeds": ()}, ValueError, "seeds"),
    ],
)
def test_bad_arguments_are_refused_before_training(tiny, kwargs, error, match):
    with pytest.raises(error, match=match):
        sweep.tune("cmf", tiny, source="source", target="target", **kwargs)


def test_an_existing_file_is_never_replaced_without_overwrite(tiny, tmp_path):
    out = tmp_path / "mine.json"
    out.write_text("my notes")
    with pytest.raises(FileExistsError, match="never replaced"):
        sweep.tune("cmf", tiny, source="source", target="target", out=out)  # refused before any training
    assert out.read_text() == "my notes"
    with pytest.raises(IsADirectoryError):
        sweep.tune("cmf", tiny, source="source", target="target", out=tmp_path)
    grid = {"learning_rate": (1e-2,)}
    sweep.tune("cmf", tiny, source="source", target="target", grid=grid, base=FAST, out=out, overwrite=True)
    assert json.loads(out.read_text())["method"] == "cmf"


def test_cli_tune_writes_a_config_that_train_reads(tiny, tmp_path, capsys):
    folder = write_dataset_dir(tiny, tmp_path / "data")
    out = tmp_path / "chosen.json"
    common = ["--data", str(folder), "--source", "source", "--target", "target", "--method", "cmf"]
    argv = ["tune", *common, "--budget", "120", "--grid", "learning_rate=0.01,0.03", "--set", "dim=8", "epochs=2"]
    assert cli.main(argv + ["--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "chosen:" in text and f"wrote {out}" in text
    record = json.loads(out.read_text())
    assert record["grid"] == {"learning_rate": [0.01, 0.03]} and record["set"]["dim"] == 8
    # the same command again: refused, the file kept
    before = out.read_text()
    assert cli.main(argv + ["--out", str(out)]) == 2
    assert "never replaced without --overwrite" in capsys.readouterr().err and out.read_text() == before
    # jaxrec train --config reads it (and --set still wins)
    train = ["train", *common, "--config", str(out), "--out", str(tmp_path / "run"), "--ks", "10", "--dry-run"]
    assert cli.main(train) == 0
    assert cli.main(["train", *common[:-1], "mmd", "--config", str(out), "--dry-run"]) == 2
    assert "chosen for method 'cmf', not 'mmd'" in capsys.readouterr().err


def test_train_config_file_values_reach_the_config(tmp_path):
    from jaxrec.cli import options

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"method": "mmd", "set": {"user_tower": [32], "task_loss": "softmax"}}))
    args = cli.build_parser().parse_args(
        ["train", "--data", "d", "--source", "a", "--target", "b", "--method", "mmd", "--config", str(path)]
        + ["--set", "lam=0.5"]
    )
    args.argv = []
    config, overrides = options.command_config(args, methods.METHODS["mmd"].default_config, owner="method 'mmd'")
    assert (config.user_tower, config.task_loss, config.lam) == ((32,), "softmax", 0.5)
    assert {"user_tower", "task_loss", "lam"} <= set(overrides)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        options.command_config(args, methods.METHODS["mmd"].default_config, owner="m")
    path.write_text(json.dumps({"set": {"task_loss": "xent"}}))
    with pytest.raises(ValueError, match="task_loss"):
        options.command_config(args, methods.METHODS["mmd"].default_config, owner="m")
