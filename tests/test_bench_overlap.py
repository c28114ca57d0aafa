"""bench/overlap.py's core on tiny synthetic data: the regimes keep the asked share of linked users and every
interaction, the *with* arm is chosen on valid only, measured models are reused, and the summary's means, stds,
ratios and "helps" verdicts match a numpy recomputation."""

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest

import jaxrec

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "overlap.py"


@pytest.fixture(scope="module")
def overlap():
    spec = importlib.util.spec_from_file_location("bench_overlap", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def tiny():
    ds, _ = jaxrec.synthetic(n_users=300, n_items=(60, 40), seed=0)
    return jaxrec.cold_start_split(ds, "source", "target", fraction=0.2, seed=0)


def test_regime_keeps_the_share_of_links_and_every_interaction(overlap, tiny):
    linked = overlap.linked_users(tiny, "source", "target")
    for ratio in (1.0, 0.3, 0.0):
        ds = overlap.regime(tiny, "source", "target", ratio, seed=1)
        assert overlap.linked_users(ds, "source", "target") == round(ratio * linked)
        for d in ("source", "target"):
            for split in tiny.splits(d):
                assert ds.interactions(d, split).size == tiny.interactions(d, split).size
        for split in ("valid", "test"):  # the evaluated cold users are the same
            np.testing.assert_array_equal(
                ds.cold_users("source", "target", split), tiny.cold_users("source", "target", split)
            )


def _stub_train(ds, source, target, method, overrides, seed):
    """Scores that depend on λ and the linked users: valid prefers λ = 0.1, test prefers λ = 1."""
    lam = overrides["lam"]
    n = len(np.intersect1d(ds.users_with(source, "train"), ds.users_with(target, "train")))
    base = 0.1 + 1e-4 * n + 1e-3 * seed
    valid = base + (0.02 if lam == 0.1 else 0.01 * lam)
    test = base + 0.03 * lam
    return {"valid": {"sampled": valid, "full": valid / 2}, "test": {"sampled": test, "full": test / 2}}


def _families(overlap):
    return {
        "f": overlap.Family("f", ("m", {"lam": 0.0}), (("m", {"lam": 0.1}), ("m", {"lam": 1.0}))),
        "g": overlap.Family("g", ("h", {"lam": 0.0}), (("h", {"lam": 1.0}),), needs_links=True),
    }


def test_with_arm_is_chosen_on_valid_and_models_are_reused(overlap, tiny):
    calls, emitted = [], []

    def train(*args):
        calls.append((overlap.linked_users(args[0], "source", "target"),) + args[3:])
        return _stub_train(*args)

    records = overlap.run_study(
        tiny,
        source="source",
        target="target",
        families=_families(overlap),
        ratios=(1.0, 0.0),
        seeds=(0, 1),
        emit=emitted.append,
        train=train,
    )
    study = [r for r in records if r["phase"] == "study"]
    assert {r["overrides"]["lam"] for r in study if r["arm"] == "with" and r["family"] == "f"} == {0.1}  # valid's
    # 2 + 1 candidates, then per (ratio, seed): f's two arms (f's λ = 0.1 at 100 %, seed 0 reused) and g's two
    # arms at 100 % (g's λ = 1 at seed 0 reused); g is skipped at 0 %
    assert len(calls) == 3 + (2 * 2 * 2 - 1) + (2 * 2 - 1)
    assert len({json.dumps(c) for c in calls}) == len(calls)
    skipped = [r for r in study if "skipped" in r]
    assert {(r["family"], r["ratio"]) for r in skipped} == {("g", 0.0)} and len(skipped) == 4
    assert sum(bool(r.get("reused")) for r in emitted) == 2 and len(emitted) == len(records)

    again = []
    overlap.run_study(
        tiny,
        source="source",
        target="target",
        families=_families(overlap),
        ratios=(1.0, 0.0),
        seeds=(0, 1),
        done=emitted,
        emit=again.append,
        train=lambda *a: pytest.fail("trained again"),
    )
    assert again == []


def test_summary_matches_numpy(overlap, tiny):
    records = overlap.run_study(
        tiny,
        source="source",
        target="target",
        families=_families(overlap),
        ratios=(1.0, 0.0),
        seeds=(0, 1, 2),
        train=_stub_train,
    )
    rows = overlap.summarize(records)
    assert {(r["family"], r["ratio"]) for r in rows} == {("f", 1.0), ("f", 0.0), ("g", 1.0)}
    for row in rows:
        for protocol in ("sampled", "full"):
            got = row[protocol]
            for arm in ("with", "without"):
                values = [
                    r["test"][protocol]
                    for r in records
                    if r["phase"] == "study"
                    and r["arm"] == arm
                    and r["family"] == row["family"]
                    and r["ratio"] == row["ratio"]
                ]
                np.testing.assert_allclose(got[arm], (np.mean(values), np.std(values, ddof=1)), rtol=1e-12)
            np.testing.assert_allclose(got["ratio"], got["with"][0] / got["without"][0], rtol=1e-12)
    g = next(r for r in rows if r["family"] == "g")  # λ = 1 adds 0.03 (sampled) against a seed spread of 1e-3
    assert g["sampled"]["helps"] and g["full"]["helps"] and not g["sampled"]["hurts"]
    f = next(r for r in rows if r["family"] == "f" and r["ratio"] == 1.0)  # λ = 0.1 adds 0.003: ratio < 1.05
    assert f["sampled"]["ratio"] < 1.05 and not f["sampled"]["helps"]
    text = overlap.table(rows)
    assert text.count("\n") == 1 + len(rows) and "helps" in text
    assert "(chosen)" in overlap.selection_table(records)


def test_one_real_model_without_links(overlap, tiny):
    """A recipe with its discrepancy term trains and evaluates at 0 % overlap (no user linked)."""
    small = {"dim": 8, "user_tower": (8,), "epochs": 1, "batch_size": 256, "align_size": 32, "lam": 1.0}
    ds = overlap.regime(tiny, "source", "target", 0.0, seed=0)
    assert overlap.linked_users(ds, "source", "target") == 0
    result = overlap.train_one(ds, "source", "target", "coral", small, seed=0)
    assert result["epochs"] == 1
    for split in ("valid", "test"):
        assert all(0.0 <= result[split][p] <= 1.0 for p in ("sampled", "full"))


def test_table_and_figure_from_the_json_lines(overlap, tiny, tmp_path, capsys):
    records = overlap.run_study(
        tiny,
        source="source",
        target="target",
        families=_families(overlap),
        ratios=(1.0, 0.1, 0.0),
        seeds=(0, 1),
        train=_stub_train,
    )
    reference = overlap.reference_popularity(tiny, "source", "target")
    assert all(0.0 <= reference[split][p] <= 1.0 for split in ("valid", "test") for p in ("sampled", "full"))
    records.append(reference)
    again = overlap.run_study(  # a reference line among the done records is no study line
        tiny,
        source="source",
        target="target",
        families=_families(overlap),
        ratios=(1.0,),
        seeds=(0,),
        done=records,
        train=lambda *a: pytest.fail("trained again"),
    )
    assert all(r["phase"] != "reference" for r in again)
    out, png = tmp_path / "overlap.jsonl", tmp_path / "overlap.png"
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert overlap.main(["--table-only", "--out", str(out), "--plot", str(png)]) == 0
    assert "popularity source→target" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
