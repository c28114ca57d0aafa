"""jaxrec.plot: figures built without pyplot, their data equal to the inputs, clear errors on bad input."""

import json

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.container import BarContainer  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from jaxrec import plot  # noqa: E402


def _history():
    """Records laid out as train.fit writes them (keys seen in a real methods.run("mmd", ...) history)."""
    train = []
    for step, (loss, src, tgt, d) in enumerate(
        [(1.5, 0.69, 0.68, 0.12), (1.4, 0.68, 0.66, 0.06), (1.3, 0.66, 0.62, 0.02), (1.2, 0.62, 0.57, 0.01)], 1
    ):
        train.append(
            {
                "step": 3 * step,
                "epoch": (step - 1) // 2,
                "discrepancy": d,
                "grad_norm": 2.0 / step,
                "lam": 1.0,
                "loss": loss,
                "task": src + tgt,
                "task/source": src,
                "task/target": tgt,
                "total": loss,
                "weighted_discrepancy": d,
                "skipped": 0,
            }
        )
    evals = [
        {"step": 6, "epoch": 0, "eval/NDCG@10": 0.09, "eval/Recall@10": 0.07},
        {"step": 12, "epoch": 1, "eval/NDCG@10": 0.14, "eval/Recall@10": 0.15},
    ]
    return [train[0], train[1], evals[0], train[2], train[3], evals[1]]


def _lines(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def _bars(ax):
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    return bars


def _assert_headless(fig):
    assert isinstance(fig, Figure)
    assert fig.canvas.manager is None  # not registered with pyplot: no window, no global state


# ----------------------------------------------------------------------------------------------------------------
# training curves and discrepancy
# ----------------------------------------------------------------------------------------------------------------


def test_training_curves_plot_the_history_values():
    history = _history()
    fig = plot.training_curves(history, title="mmd")
    _assert_headless(fig)
    assert len(fig.axes) == 2
    loss_ax, eval_ax = fig.axes
    lines = _lines(loss_ax)
    assert list(lines) == ["loss", "task/source", "task/target", "weighted_discrepancy"]
    train = [r for r in history if "loss" in r]
    for key, (x, y) in lines.items():
        assert x == [r["step"] for r in train]
        assert y == [r[key] for r in train]
    evals = _lines(eval_ax)
    assert list(evals) == ["eval/NDCG@10", "eval/Recall@10"]
    assert evals["eval/NDCG@10"] == ([6, 12], [0.09, 0.14])


def test_training_curves_options_and_sources(tmp_path):
    history = _history()
    no_eval = [r for r in history if "loss" in r]
    assert len(plot.training_curves(no_eval).axes) == 1  # no evaluation record: no metric panel
    fig = plot.training_curves(history, keys=["grad_norm"], eval_keys=["eval/Recall@10"])
    assert list(_lines(fig.axes[0])) == ["grad_norm"] and list(_lines(fig.axes[1])) == ["eval/Recall@10"]
    # λ·D that is always zero (a method without alignment) is not drawn by default
    flat = [dict(r, weighted_discrepancy=0.0) if "loss" in r else r for r in history]
    assert "weighted_discrepancy" not in _lines(plot.training_curves(flat).axes[0])
    # a JSONL log (TrainConfig.jsonl) and an object with .history plot the same lines
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in history))
    assert plot.load_history(path) == history
    assert _lines(plot.training_curves(path).axes[0]) == _lines(plot.training_curves(history).axes[0])

    class Result:
        pass

    result = Result()
    result.history = history
    assert _lines(plot.training_curves(result).axes[1]) == _lines(plot.training_curves(history).axes[1])


def test_training_curves_bad_input():
    with pytest.raises(ValueError, match="history is empty"):
        plot.training_curves([])
    with pytest.raises(ValueError, match=r"unknown training key\(s\) \['nope'\].*'grad_norm'"):
        plot.training_curves(_history(), keys=["nope"])
    with pytest.raises(ValueError, match="eval/NDCG@10"):
        plot.training_curves(_history(), eval_keys=["eval/MRR"])
    with pytest.raises(TypeError, match="list of record dicts"):
        plot.training_curves(3)


def test_load_history_names_the_bad_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 3"):
        plot.load_history(path)


def test_discrepancy_curve():
    history = _history()
    fig = plot.discrepancy_curve(history)
    _assert_headless(fig)
    (x, y) = _lines(fig.axes[0])["discrepancy"]
    train = [r for r in history if "loss" in r]
    assert x == [r["step"] for r in train] and y == [r["discrepancy"] for r in train]
    # into an existing axes, weighted
    host = plot.training_curves(history)
    assert plot.discrepancy_curve(history, weighted=True, ax=host.axes[1]) is host
    assert "weighted_discrepancy" in _lines(host.axes[1])
    with pytest.raises(ValueError, match="discrepancy.*'loss'"):
        plot.discrepancy_curve([{"step": 1, "loss": 1.0}])
    with pytest.raises(ValueError, match="history is empty"):
        plot.discrepancy_curve([])


# ----------------------------------------------------------------------------------------------------------------
# metric bars
# ----------------------------------------------------------------------------------------------------------------


def _result(full, sampled, sampled_std):
    """The layout of an evaluate.evaluate(..., seeds=...) result."""
    return {
        "full": {"NDCG@10": full, "Recall@10": 2 * full},
        "sampled": {"NDCG@10": sampled, "HR@10": 2 * sampled},
        "sampled_std": {"NDCG@10": sampled_std, "HR@10": 2 * sampled_std},
        "counts": {"users": 10, "pairs": 30, "seeds": 3},
    }


def test_metric_bars_heights_and_error_bars():
    results = {"popularity": _result(0.05, 0.2, 0.01), "cmf": _result(0.10, 0.3, 0.02), "mmd": _result(0.12, 0.35, 0.0)}
    fig = plot.metric_bars(results, metric="NDCG@10", protocol="sampled")
    _assert_headless(fig)
    ax = fig.axes[0]
    assert len(ax.patches) == 3
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.2, 0.3, 0.35])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["popularity", "cmf", "mmd"]
    segments = _bars(ax).errorbar.lines[2][0].get_segments()  # one vertical segment per bar: value ± std
    lows_highs = np.array([[s[0][1], s[1][1]] for s in segments])
    np.testing.assert_allclose(lows_highs, [[0.19, 0.21], [0.28, 0.32], [0.35, 0.35]], rtol=1e-12)
    # full ranking has no *_std entry: no error bars
    full = plot.metric_bars(results, metric="Recall@10", protocol="full").axes[0]
    assert [p.get_height() for p in full.patches] == pytest.approx([0.1, 0.2, 0.24])
    assert _bars(full).errorbar is None


def test_metric_bars_over_training_seeds_use_the_sample_std():
    runs = [_result(v, 0.0, 0.0) for v in (0.10, 0.13, 0.16)]
    ax = plot.metric_bars({"cmf": runs, "pop": [_result(0.05, 0.0, 0.0)]}).axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.13, 0.05])
    low, high = _bars(ax).errorbar.lines[2][0].get_segments()[0][:, 1]
    std = np.std([0.10, 0.13, 0.16], ddof=1)
    assert (low, high) == pytest.approx((0.13 - std, 0.13 + std))


def test_metric_bars_bad_input():
    results = {"cmf": _result(0.1, 0.3, 0.02)}
    with pytest.raises(ValueError, match=r"no metric 'NDCG@99'.*'NDCG@10', 'Recall@10'"):
        plot.metric_bars(results, metric="NDCG@99")
    with pytest.raises(ValueError, match=r"no protocol 'bogus'.*\['full', 'sampled'\]"):
        plot.metric_bars(results, protocol="bogus")
    with pytest.raises(ValueError, match="non-empty"):
        plot.metric_bars({})
    with pytest.raises(ValueError, match="empty list"):
        plot.metric_bars({"cmf": []})


# ----------------------------------------------------------------------------------------------------------------
# embeddings
# ----------------------------------------------------------------------------------------------------------------


def _ref_pca(x):
    """Top-2 principal axes from the float64 covariance eigendecomposition (an independent route from SVD)."""
    mean = x.mean(0)
    w, v = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    order = np.argsort(w)[::-1][:2]
    return mean, v[:, order], w[order] / w.sum()


def test_embedding_scatter_projects_the_union_on_its_principal_axes():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(60, 5)) * np.array([3.0, 1.0, 0.5, 0.2, 0.1])
    tgt = rng.normal(size=(40, 5)) * np.array([3.0, 1.0, 0.5, 0.2, 0.1]) + 2.0
    fig = plot.embedding_scatter({"source": src, "target": tgt}, title="users")
    _assert_headless(fig)
    ax = fig.axes[0]
    assert len(ax.collections) == 2
    mean, comps, ratio = _ref_pca(np.concatenate([src, tgt]))
    for collection, x in zip(ax.collections, (src, tgt)):
        xy = np.asarray(collection.get_offsets())
        expected = (x - mean) @ comps
        signs = np.sign(np.sum(xy * expected, axis=0))  # principal axes are defined up to sign
        np.testing.assert_allclose(xy, expected * signs, rtol=1e-7, atol=1e-9)
    assert ax.get_xlabel() == f"PC1 ({ratio[0]:.0%} var.)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["source (60)", "target (40)"]


def test_embedding_scatter_subsamples_and_draws_into_axes():
    rng = np.random.default_rng(1)
    tables = {"a": rng.normal(size=(500, 3)), "b": rng.normal(size=(30, 3)), "c": rng.normal(size=(80, 3))}
    fig = plot.embedding_scatter(tables, max_points=50, seed=2)
    assert [len(c.get_offsets()) for c in fig.axes[0].collections] == [50, 30, 50]
    again = plot.embedding_scatter(tables, max_points=50, seed=2)
    np.testing.assert_array_equal(fig.axes[0].collections[0].get_offsets(), again.axes[0].collections[0].get_offsets())
    host = plot.training_curves(_history())
    assert plot.embedding_scatter(tables, ax=host.axes[0]) is host
    one_dim = plot.embedding_scatter({"a": np.arange(5.0)[:, None], "b": np.ones((3, 1))})
    assert np.all(np.asarray(one_dim.axes[0].collections[0].get_offsets())[:, 1] == 0.0)


def test_embedding_scatter_pair_has_two_panels():
    rng = np.random.default_rng(3)
    before = {"source": rng.normal(size=(40, 4)), "target": rng.normal(size=(30, 4)) + 3.0}
    after = {"source": rng.normal(size=(40, 6)), "target": rng.normal(size=(30, 6))}
    fig = plot.embedding_scatter_pair(before, after)
    _assert_headless(fig)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["before alignment", "after alignment"]
    assert [[len(c.get_offsets()) for c in ax.collections] for ax in fig.axes] == [[40, 30], [40, 30]]


def test_embedding_scatter_bad_input():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 2\)"):
        plot.embedding_scatter({"a": np.ones((4, 3)), "b": np.ones((4, 2))})
    with pytest.raises(ValueError, match="non-empty mapping"):
        plot.embedding_scatter({})
    with pytest.raises(ValueError, match="finite"):
        plot.embedding_scatter({"a": np.full((3, 2), np.nan)})
    with pytest.raises(ValueError, match="max_points"):
        plot.embedding_scatter({"a": np.ones((3, 2))}, max_points=0)


# ----------------------------------------------------------------------------------------------------------------
# gap bars and files
# ----------------------------------------------------------------------------------------------------------------


def test_gap_bars():
    gaps = {
        "domains": {"mmd": 0.1, "linear_mmd": 0.2, "coral": 0.3, "proxy_a_distance": 1.2, "n_a": 5, "n_b": 4},
        "cold_vs_warm": {"mmd": 0.4, "linear_mmd": 0.5, "coral": 0.6, "proxy_a_distance": 0.2, "n_a": 2, "n_b": 4},
        "skipped": None,
    }
    fig = plot.gap_bars(gaps, title="gaps")
    assert [ax.get_title() for ax in fig.axes] == ["mmd", "linear_mmd", "coral", "proxy_a_distance"]
    assert [p.get_height() for p in fig.axes[3].patches] == pytest.approx([1.2, 0.2])
    with pytest.raises(ValueError, match=r"unknown gap measure.*'coral'"):
        plot.gap_bars(gaps, measures=["wasserstein"])
    with pytest.raises(ValueError, match="every comparison is None"):
        plot.gap_bars({"domains": None})


def test_save_creates_parent_dirs_and_renders_headless(tmp_path):
    fig = plot.metric_bars({"cmf": _result(0.1, 0.3, 0.02)})
    path = plot.save(fig, tmp_path / "run" / "plots" / "bars.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = plot.save(plot.training_curves(_history()), tmp_path / "curves.svg")
    assert b"<svg" in svg.read_bytes()[:400]
    with pytest.raises(ValueError, match="no suffix"):
        plot.save(fig, tmp_path / "noext")
