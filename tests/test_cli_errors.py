"""Every user mistake through the ``jaxrec`` command is an early, one-line error with exit code 2 that names the
option, field or file: checked before any data is loaded (or, for what needs the data, before any training), never
a traceback. Random option values through the parser give a usage error or a checked run (hypothesis)."""

import re

import numpy as np
import pytest
from conftest import write_dataset_dir
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jaxrec import cli, data, methods, runs
from jaxrec.methods import common


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """Tiny datasets (usable, no overlapping users, no cold users), a user's folder, a file and a finished run."""
    root = tmp_path_factory.mktemp("cli_errors")
    ds, _ = data.synthetic(n_users=120, n_items=(30, 20), interactions_per_user=(6.0, 4.0), seed=1)
    good = write_dataset_dir(data.cold_start_split(ds, "source", "target", fraction=0.3, seed=0), root / "good")
    apart = {  # users 0-49 only in the source, 50-99 only in the target
        "source": {"train": (np.arange(50).repeat(3), np.tile(np.arange(3), 50))},
        "target": {"train": (np.arange(50, 100), np.arange(50) % 7), "test": (np.arange(50, 60), np.arange(10) % 7)},
    }
    no_overlap = write_dataset_dir(data.from_arrays(apart), root / "no_overlap")
    together = {  # every test user also has target train history: nobody is cold
        "source": {"train": (np.arange(40), np.arange(40) % 9)},
        "target": {"train": (np.arange(40), np.arange(40) % 8), "test": (np.arange(10), np.arange(10) % 8)},
    }
    no_cold = write_dataset_dir(data.from_arrays(together), root / "no_cold")
    mine = root / "mine"
    (mine / "plots").mkdir(parents=True)
    (mine / "metrics.json").write_text("my own numbers")
    (root / "a_file").write_text("not a folder")
    finished = root / "finished"
    runs.train_run(data.load_dir(good), method="popularity", source="source", target="target", out=finished)
    return {"root": root, "good": good, "no_overlap": no_overlap, "no_cold": no_cold, "mine": mine}


@pytest.fixture
def no_work(monkeypatch):
    """Loading data or training fails the test: what is checked must be checked before."""

    def fail(*args, **kwargs):
        raise AssertionError("work started before the mistake was reported")

    monkeypatch.setattr(data, "load_dir", fail)
    monkeypatch.setattr(data, "synthetic", fail)
    monkeypatch.setattr(runs, "train_run", fail)
    monkeypatch.setattr(runs, "evaluate_run", fail)


@pytest.fixture
def no_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started before the mistake was reported")

    monkeypatch.setattr(runs, "train_run", fail)
    monkeypatch.setattr(runs, "evaluate_run", fail)


def _train(places, *extra, data_dir="good", method="cmf", source="source", target="target"):
    base = ["train", "--data", places[data_dir], "--source", source, "--target", target, "--method", method]
    out = [] if "--out" in extra else ["--out", places["root"] / "new_run"]
    return [str(a) for a in (*base, *out, "--no-progress", *extra)]


def _run(argv, capsys) -> tuple[int, str]:
    """``(exit code, stderr)`` of ``jaxrec argv`` in this process; argparse's usage errors exit themselves."""
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


# ---------------------------------------------------------------------------------------------------------------
# Mistakes found before any data is loaded
# ---------------------------------------------------------------------------------------------------------------

BEFORE_DATA = {
    "seeds negative": (["--seeds", "-1"], r"argument --seeds: expected a non-negative integer below 2\*\*63, got '-1'"),
    "seeds text": (["--seeds", "0", "x"], r"argument --seeds: .* got 'x'"),
    "seed too large": (["--seed", str(2**63)], r"argument --seed: expected a non-negative integer"),
    "ks zero": (["--ks", "0"], r"argument --ks: expected a positive integer, got '0'"),
    "ks float": (["--ks", "1.5"], r"argument --ks: expected a positive integer, got '1.5'"),
    "epochs zero": (["--epochs", "0"], r"argument --epochs: expected a positive integer, got '0'"),
    "shared users negative": (["--shared-users", "-3"], r"argument --shared-users: '-3': expected 'all'"),
    "resume and overwrite": (["--resume", "--overwrite"], r"argument --overwrite: not allowed with argument --resume"),
    "set dim text": (["--set", "dim=abc"], r"EmbeddingConfig.dim must be an int, got 'abc'"),
    "set learning rate text": (["--set", "learning_rate=abc"], r"learning_rate must be a finite number, got 'abc'"),
    "set tower text": (["--set", "user_tower=x"], r"EmbeddingConfig.user_tower must be a tuple of ints .* got 'x'"),
    "set nan": (["--set", "lam=nan"], r"EmbeddingConfig.lam must be a finite number, got 'nan'"),
    "set negative": (["--set", "lam=-1"], r"EmbeddingConfig.lam must be a number in \[0, inf\), got -1.0"),
    "set zero width": (["--set", "dim=0"], r"EmbeddingConfig.dim must be a positive int, got 0"),
    "set unknown field": (["--set", "nosuch=1"], r"method 'cmf' has no option\(s\) \['nosuch'\]; its options are"),
    "set without value": (["--set", "dim"], r"--set expects key=value, got 'dim'"),
    "set bool": (["--set", "progress=maybe"], r"EmbeddingConfig.progress must be true or false, got 'maybe'"),
    "set parallel": (["--set", "parallel=tpu"], r"EmbeddingConfig.parallel='tpu'; expected one of none, pmap, mesh"),
    "set discrepancy": (["--set", "discrepancy=wasserstein"], r"unknown discrepancy 'wasserstein'; valid names"),
    "set seed": (["--set", "seed=3"], r"--set seed=3: give the seed with --seed"),
    "set huge value": (
        ["--set", "dim=" + "9" * 10**6],
        r"dim must be an int, got '9{50,}\.\.\. \(1,000,002 characters\)",
    ),
}


@pytest.mark.parametrize("name", list(BEFORE_DATA))
def test_option_mistakes_are_reported_before_any_data_is_loaded(places, capsys, no_work, name):
    extra, message = BEFORE_DATA[name]
    code, err = _run(_train(places, *extra), capsys)
    assert code == 2
    assert len(err) < 2000 and err.strip().splitlines()[-1].startswith(("jaxrec: error:", "jaxrec train: error:"))
    assert err.count("\n") <= 1 or err.startswith("usage:")
    assert re.search(message, err), err


OUT_MISTAKES = {
    "unknown method": (dict(method="bprmf"), "new_run", r"unknown method 'bprmf'; valid methods"),
    "source is target": (dict(target="source"), "new_run", r"--source and --target must differ, both are 'source'"),
    "epochs for popularity": (dict(method="popularity", extra=("--epochs", "3")), "new_run", r"has no epochs"),
    "data missing": (dict(data_dir="nothing"), "new_run", r"--data .*nothing: dataset directory not found"),
    "data is a file": (dict(data_dir="a_file"), "new_run", r"--data .*a_file: not a folder"),
    "out is a file": ({}, "a_file", r"--out .*a_file is a file; a run directory must be a new or empty folder"),
    "out inside a file": ({}, "a_file/run", r"cannot create --out .*a_file/run: .*a_file is a file"),
    "out is a user's folder": (
        {},
        "mine",
        r"--out .*mine exists and is not a jaxrec run \(it holds metrics.json, plots",
    ),
    "out holds a run": ({}, "finished", r"finished already holds a run; choose another --out, or pass --overwrite"),
    "resume without a run": (dict(extra=("--resume",)), "new_run", r"--resume: .*new_run holds no run to resume"),
    "resume a finished run": (dict(extra=("--resume",)), "finished", r"holds a finished run: nothing to resume"),
    "overwrite a user's folder": (dict(extra=("--overwrite",)), "mine", r"mine exists and is not a jaxrec run"),
}


@pytest.mark.parametrize("name", list(OUT_MISTAKES))
def test_method_data_and_out_mistakes_are_reported_before_any_data_is_loaded(places, capsys, no_work, name):
    kw, out, message = OUT_MISTAKES[name]
    root = places["root"]
    places = {**places, "nothing": root / "nothing", "a_file": root / "a_file"}
    before = {p: p.read_bytes() for p in root.joinpath("mine").rglob("*") if p.is_file()}
    argv = _train(places, "--out", root / out, *kw.get("extra", ()), **{k: v for k, v in kw.items() if k != "extra"})
    code, err = _run(argv, capsys)
    assert code == 2 and err.startswith("jaxrec: error:") and err.count("\n") == 1
    assert re.search(message, err), err
    assert {p: p.read_bytes() for p in root.joinpath("mine").rglob("*") if p.is_file()} == before
    assert not (root / "new_run").exists()


# ---------------------------------------------------------------------------------------------------------------
# Mistakes that need the data: found right after loading it, before any training
# ---------------------------------------------------------------------------------------------------------------

AFTER_DATA = {
    "K above the catalogue": (
        {},
        ("--ks", "10", "500"),
        r"--ks 500 exceeds the catalogue of domain 'target' \(20 items\)",
    ),
    "unknown source": (dict(source="nope"), (), r"unknown domain 'nope'; this dataset has \['source', 'target'\]"),
    "unknown auxiliary domain": ({}, ("--set", "auxiliary=comics"), r"unknown domain 'comics'"),
    "no overlapping users": (
        dict(data_dir="no_overlap"),
        (),
        r"no user has train interactions in both 'source' and 'target': method 'cmf' learns its transfer",
    ),
    "no cold users": (dict(data_dir="no_cold", method="popularity"), ("--ks", "5"), r"no cold-start user of 'target'"),
}


@pytest.mark.parametrize("name", list(AFTER_DATA))
def test_data_mistakes_are_reported_before_training(places, capsys, no_training, name):
    kw, extra, message = AFTER_DATA[name]
    code, err = _run(_train(places, *extra, **kw), capsys)
    assert code == 2 and re.search(message, err), err
    assert not (places["root"] / "new_run").exists()


def test_dry_run_checks_everything_and_writes_nothing(places, capsys, no_training):
    code, _ = _run(_train(places, "--ks", "10", "--set", "dim=8", "user_tower=16,16", "--dry-run"), capsys)
    assert code == 0 and not (places["root"] / "new_run").exists()


# ---------------------------------------------------------------------------------------------------------------
# The other commands
# ---------------------------------------------------------------------------------------------------------------

OTHER = {
    "evaluate a user's folder": (["evaluate", "--run", "{root}/mine"], r"mine is not a jaxrec run directory"),
    "evaluate a missing run": (["evaluate", "--run", "{root}/gone"], r"run directory not found: .*gone"),
    "evaluate K above the catalogue": (
        ["evaluate", "--run", "{root}/finished", "--ks", "21"],
        r"--ks 21 exceeds the catalogue of domain 'target' \(20 items\)",
    ),
    "evaluate negative seeds": (["evaluate", "--run", "{root}/finished", "--seeds", "-1"], r"argument --seeds"),
    "evaluate data missing": (
        ["evaluate", "--run", "{root}/finished", "--ks", "5", "--data", "{root}/x"],
        r"--data .*x: dataset directory not found",
    ),
    "diagnose a missing run": (["diagnose", "{root}/gone"], r"run directory not found"),
    "diagnose negative seed": (["diagnose", "{root}/finished", "--seed", "-2"], r"argument --seed: .* got '-2'"),
    "sweep data without source": (["sweep", "--data", "{good}"], r"sweep --data needs --source and --target"),
    "sweep source without data": (["sweep", "--source", "foo"], r"--source 'foo': without --data, sweep trains on"),
    "sweep unknown method": (
        ["sweep", "--method", "popularity"],
        r"method 'popularity' cannot be swept; valid methods",
    ),
    "sweep NaN lambda": (["sweep", "--lam", "0.1", "nan"], r"argument --lam: expected a finite number >= 0, got 'nan'"),
    "sweep zero learning rate": (["sweep", "--lr", "0"], r"argument --lr: expected a finite number > 0, got '0'"),
    "sweep set text": (["sweep", "--set", "dim=big"], r"EmbeddingConfig.dim must be an int, got 'big'"),
    "demo unknown method": (["demo", "--methods", "popularity", "nope"], r"unknown method 'nope'"),
    "demo zero epochs": (["demo", "--epochs", "0"], r"argument --epochs: expected a positive integer"),
    "data unknown domain": (["data", "--data", "{good}", "--link-test", "source", "nope"], r"unknown domain 'nope'"),
    "data missing": (["data", "--data", "{root}/x"], r"--data .*x: dataset directory not found"),
}


@pytest.mark.parametrize("name", list(OTHER))
def test_other_command_mistakes(places, capsys, name):
    argv, message = OTHER[name]
    argv = [a.format(root=places["root"], good=places["good"]) for a in argv]
    code, err = _run(argv, capsys)
    assert code == 2 and re.search(message, err), err


def test_an_unfinished_run_says_how_to_resume(places, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / runs.TRAINING_FILE).write_text('{"format": "jaxrec-run/2", "command": "jaxrec train --data D --out R"}')
    code, err = _run(["evaluate", "--run", str(run)], capsys)
    assert code == 2 and "this run did not finish; resume it with `jaxrec train --data D --out R --resume`" in err
    code, err = _run(_train(places, "--out", run), capsys)
    assert code == 2 and "holds a run that did not finish; continue it with --resume, or pass --overwrite" in err


def test_help_says_what_overwrite_deletes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "deletes only what jaxrec wrote there" in text and "never other files" in text
    assert "--resume" in text and "--dry-run" in text


# ---------------------------------------------------------------------------------------------------------------
# Config overrides through Python: common.make_config (what methods.run goes through)
# ---------------------------------------------------------------------------------------------------------------

WRONG_TYPES = [
    ("cmf", {"dim": "abc"}, r"EmbeddingConfig.dim must be an int, got 'abc'"),
    ("cmf", {"learning_rate": "abc"}, r"EmbeddingConfig.learning_rate must be a finite number, got 'abc'"),
    ("mmd", {"user_tower": 64}, r"EmbeddingConfig.user_tower must be a tuple of ints \(e.g. 64,128 or \(\)\), got 64"),
    ("cmf", {"epochs": 2.0}, r"EmbeddingConfig.epochs must be an int, got 2.0"),
    ("cmf", {"progress": "no"}, r"EmbeddingConfig.progress must be true or false, got 'no'"),
    ("cmf", {"discrepancy_options": [1]}, r"discrepancy_options must be a mapping .* or None, got \[1\]"),
    ("item_map", {"lams": 10.0}, r"ItemMapConfig.lams must be a tuple of finite numbers .* got 10.0"),
    ("item_map", {"lams": (1.0, float("inf"))}, r"ItemMapConfig.lams must be a tuple of finite numbers"),
    ("emcdr", {"linear": 1}, r"EMCDRConfig.linear must be true or false, got 1"),
    ("ptupcdr", {"loss": 3}, r"PTUPCDRConfig.loss must be a string, got 3"),
    ("lightgcn", {"num_layers": "2"}, r"LightGCNConfig.num_layers must be an int, got '2'"),
    ("mmoe", {"dropout_rate": None}, r"MMoEConfig.dropout_rate must be a finite number, got None"),
    (
        "popularity",
        {"seed": 2**63},
        r"PopularityConfig.seed must be an int in \[-2\*\*63, 2\*\*63\), got 9223372036854775808",
    ),
    ("finetune", {"seed": -1}, r"FinetuneConfig.seed must be an int in \[0, 2\*\*63\), got -1"),
    ("cmf", {"epoch": 3}, r"method 'cmf' has no option\(s\) \['epoch'\]; its options are \['align_size'"),
]


@pytest.mark.parametrize(("method", "overrides", "message"), WRONG_TYPES)
def test_make_config_names_the_field_the_value_and_the_type(method, overrides, message):
    default = methods.get_method(method).default_config
    with pytest.raises(ValueError, match=message):
        common.make_config(default, overrides, owner=f"method {method!r}")


def test_make_config_parses_text_by_the_declared_type():
    default = methods.get_method("mmd").default_config
    text = {"dim": "32", "user_tower": "64,32", "lam": "0.5", "progress": "false", "discrepancy": "coral"}
    config = common.make_config(default, {**text, "auxiliary": "all", "discrepancy_options": "none"}, from_strings=True)
    assert (config.dim, config.user_tower, config.lam, config.progress) == (32, (64, 32), 0.5, False)
    assert config.discrepancy == "coral" and config.discrepancy_options is None and config.auxiliary == ("all",)
    assert common.make_config(default, {"user_tower": "()"}, from_strings=True).user_tower == ()
    assert common.make_config(default, {"user_tower": "[8, 4]"}, from_strings=True).user_tower == (8, 4)
    assert common.make_config(default, {"user_tower": [8], "lam": 2}).lam == 2.0  # ints are numbers
    item_map = methods.get_method("item_map").default_config
    assert common.make_config(item_map, {"lams": "1,1e3"}, from_strings=True).lams == (1.0, 1000.0)


# ---------------------------------------------------------------------------------------------------------------
# Random option values through the parser
# ---------------------------------------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_number = st.one_of(st.integers(-(2**70), 2**70).map(str), st.floats(allow_nan=True).map(str), _text)
_field = st.sampled_from(sorted(f for f in methods.EmbeddingConfig.__dataclass_fields__) + ["nosuch", ""])
_option = st.one_of(
    st.tuples(st.sampled_from(["--epochs", "--seed", "--shared-users"]), _number),
    st.tuples(st.sampled_from(["--seeds", "--ks"]), st.lists(_number, min_size=1, max_size=3)),
    st.tuples(st.just("--set"), st.lists(st.builds("{}={}".format, _field, _number), min_size=1, max_size=3)),
    st.tuples(st.just("--method"), st.sampled_from(["cmf", "mmd", "popularity", "item_map", "nope", "-x"])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=st.lists(_option, max_size=4))
@example(options=[("--set", ["dim=8", "user_tower=4,4"]), ("--seeds", ["1", "2"])])  # a checked run
def test_random_options_give_a_checked_run_or_a_usage_error(places, capsys, options):
    argv = _train(places, "--dry-run", "--ks", "10")
    for name, value in options:
        argv += [name, *(value if isinstance(value, list) else [value])]
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err and (code == 0 or "error:" in err)
    assert not (places["root"] / "new_run").exists()
