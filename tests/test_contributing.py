"""CONTRIBUTING.md's worked examples run: every ``python`` block, in order, in one namespace."""

import pathlib
import re

import numpy as np

import jaxrec

CONTRIBUTING = pathlib.Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", CONTRIBUTING.read_text(), flags=re.S)


def test_examples_run_and_do_what_they_say():
    blocks = _blocks()
    assert len(blocks) >= 4, "the setup block and one worked example per kind of change"
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(CONTRIBUTING), "exec"), namespace)
    ds = namespace["ds"]

    # The recipe: ranks every target item for every user and beats popularity on the cold users.
    scorer = namespace["trained"].scorers["target"]
    assert np.asarray(scorer.users_fn(np.arange(3))).shape[0] == 3
    popularity = jaxrec.evaluate.evaluate(
        jaxrec.popularity_scorer(ds.item_popularity("target")), ds, target="target", source="source", users="cold"
    )
    assert namespace["result"]["full"]["NDCG@10"] > popularity["full"]["NDCG@10"]

    # The discrepancy: masked rows do not count, an all-masked side gives 0, and it trained a recipe.
    gap = namespace["mean_cosine_gap"]
    hs, ht = np.eye(3, dtype=np.float32), np.ones((2, 3), np.float32)
    padded = np.concatenate([hs, 100 * np.ones((1, 3), np.float32)])
    np.testing.assert_allclose(gap(hs, ht), gap(padded, ht, hs_mask=np.array([1, 1, 1, 0], bool)), rtol=1e-6)
    assert float(gap(hs, ht, hs_mask=np.zeros(3, bool))) == 0.0
    assert "target" in namespace["aligned"].scorers

    # The loader: both domains, the shared user ids, and a clear error naming the file and line.
    small = namespace["small"]
    assert sorted(small.domains) == ["a", "b"] and small.n_users == 2
    bad = namespace["folder"] / "bad.jsonl"
    bad.write_text('{"user": 1, "item": 2, "domain": "a"}\n{"user": 1}\n')
    try:
        namespace["load_jsonl"](bad)
    except jaxrec.DataError as e:
        assert f"{bad}:2" in str(e)
    else:
        raise AssertionError("a line without item/domain must raise DataError")


def test_registries_are_found_the_same_way():
    """Recipes, discrepancy terms and loaders: a static mapping and a getter that lists the valid names."""
    import pytest

    from jaxrec import data, losses, methods

    for registry, get in (
        (methods.METHODS, methods.get_method),
        (losses.DISCREPANCIES, losses.get_discrepancy),
        (data.LOADERS, data.get_loader),
    ):
        for name in registry:
            assert get(name) is not None
        with pytest.raises(ValueError, match=r"valid .*\[") as info:
            get("no-such-name")
        assert all(repr(name) in str(info.value) for name in registry)
    assert data.get_loader("dir") is data.load_dir
