"""Data layer: loaders, containers, splits, synthetic data, bad input."""

import pathlib

import numpy as np
import pytest

from jaxrec import data as D


def _write(folder: pathlib.Path, domain: str, split: str, lines: list[str]) -> pathlib.Path:
    path = folder / domain / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def tiny_dir(tmp_path):
    # Raw user ids 10, 20, 30, 40 -> contiguous 0..3; game items 5, 7, 9 -> 0..2; video items 100, 200 -> 0, 1.
    _write(tmp_path, "game", "train", ["10\t5", "10\t7", "20\t9", "30\t5", "40\t7"])
    _write(tmp_path, "video", "train", ["10\t100", "20\t200", "20\t100"])
    _write(tmp_path, "video", "test", ["30\t200", "40\t100"])
    return tmp_path


# ---------------------------------------------------------------------------------------------- public surface


def test_public_names_of_the_package():
    # The names `jaxrec.data` exports, each defined once in a submodule and re-exported here.
    expected = [
        "CSR", "CrossDomainDataset", "DataError", "Domain", "Interactions", "LOADERS", "LargeSyntheticConfig",
        "Planted", "SHARED_USERS_RULES", "SPLITS", "SyntheticConfig", "cold_start_split", "from_arrays", "from_table",
        "get_loader", "leave_one_out", "limit_overlap", "load_dir", "load_recbole", "ratio_split", "synthetic",
        "synthetic_large", "write_dir",
    ]  # fmt: skip
    assert sorted(D.__all__) == sorted(expected)
    functions = [getattr(D, name) for name in expected if callable(getattr(D, name))]
    assert all(f.__module__.startswith("jaxrec.data.") for f in functions)
    assert D.SPLITS == ("train", "valid", "test") and D.SHARED_USERS_RULES == ("below_heldout",)


# ---------------------------------------------------------------------------------------------- directory format


def test_load_dir_remaps_ids_and_keeps_maps(tiny_dir):
    ds = D.load_dir(tiny_dir)
    assert ds.domain_names == ("game", "video")
    assert ds.n_users == 4 and ds.n_items("game") == 3 and ds.n_items("video") == 2
    users, items, *_ = ds.interactions("game", "train")
    np.testing.assert_array_equal(users, [0, 0, 1, 2, 3])
    np.testing.assert_array_equal(items, [0, 1, 2, 0, 1])
    assert users.dtype == np.int32 and items.dtype == np.int32
    np.testing.assert_array_equal(ds.raw_users(users), [10, 10, 20, 30, 40])
    np.testing.assert_array_equal(ds.raw_items("video", [0, 1]), [100, 200])
    # valid.txt is optional: an absent split is empty, not an error.
    assert ds.interactions("video", "valid").size == 0
    assert "valid" not in ds.splits("video")


def test_interactions_are_immutable(tiny_dir):
    ds = D.load_dir(tiny_dir)
    with pytest.raises(ValueError):
        ds.interactions("game", "train").users[0] = 3


def test_seen_csr_and_padding(tiny_dir):
    ds = D.load_dir(tiny_dir)
    seen = ds.seen("video", "train")
    assert seen.n_rows == ds.n_users
    np.testing.assert_array_equal(seen.indptr, [0, 1, 3, 3, 3])
    np.testing.assert_array_equal(seen.indices, [0, 0, 1])  # sorted per row
    np.testing.assert_array_equal(seen.to_padded(), [[0, -1], [0, 1], [-1, -1], [-1, -1]])
    both = ds.seen("video", ("train", "test"))
    np.testing.assert_array_equal(both.lengths, [1, 2, 1, 1])
    with pytest.raises(D.DataError, match="cut rows"):
        seen.to_padded(width=1)


def test_overlap_and_cold_users(tiny_dir):
    ds = D.load_dir(tiny_dir)
    assert ds.overlap() == {("game", "video"): 2}
    np.testing.assert_array_equal(ds.cold_users("game", "video", "test"), [2, 3])


def test_ratings_and_timestamps_columns(tmp_path):
    _write(tmp_path, "a", "train", ["1\t1\t4.5\t100", "2\t1\t3\t50"])
    _write(tmp_path, "b", "train", ["1\t9\t1\t7"])
    ds = D.load_dir(tmp_path)
    inter = ds.interactions("a", "train")
    np.testing.assert_allclose(inter.ratings, [4.5, 3.0])
    np.testing.assert_allclose(inter.timestamps, [100, 50])


def test_string_ids_when_not_integer(tmp_path):
    _write(tmp_path, "a", "train", ["alice\tx", "bob\ty"])
    _write(tmp_path, "b", "train", ["bob\tz"])
    ds = D.load_dir(tmp_path, integer_ids=False)
    assert list(ds.user_ids) == ["alice", "bob"]
    assert ds.overlap() == {("a", "b"): 1}


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(D.DataError, match="no domain folders"):
        D.load_dir(tmp_path)
    with pytest.raises(D.DataError, match="train.txt: file not found"):
        D.load_dir(tmp_path, domains=["a"])
    with pytest.raises(D.DataError, match="dataset directory not found"):
        D.load_dir(tmp_path / "nope")


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("3\t4\t5\t6\t7", "line 2: expected 2 tab-separated columns"),
        ("3", "line 2: expected 2"),
        ("3\tx7", "line 2: item id 'x7' is not a non-negative integer"),
        ("-3\t7", "line 2: user id '-3' is not a non-negative integer"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = _write(tmp_path, "a", "train", ["1\t2", bad_line, "5\t6"])
    _write(tmp_path, "b", "train", ["1\t2"])
    with pytest.raises(D.DataError, match=message) as e:
        D.load_dir(tmp_path)
    assert str(path) in str(e.value) and repr(bad_line) in str(e.value)


def test_bad_rating(tmp_path):
    _write(tmp_path, "a", "train", ["1\t2\t5", "2\t3\tfive"])
    _write(tmp_path, "b", "train", ["1\t2\t1"])
    with pytest.raises(D.DataError, match="line 2: rating 'five' is not a number"):
        D.load_dir(tmp_path)


def test_empty_domain(tmp_path):
    _write(tmp_path, "a", "train", ["1\t2"])
    _write(tmp_path, "b", "train", [])
    with pytest.raises(D.DataError, match="domain 'b' has no train interactions"):
        D.load_dir(tmp_path)


def test_test_item_unseen_in_train_errors_or_is_counted(tiny_dir):
    path = _write(tiny_dir, "video", "test", ["30\t200", "40\t999", "40\t998"])
    with pytest.raises(D.DataError, match=r"line 2: item 999 .* never occurs in that domain's train") as e:
        D.load_dir(tiny_dir)
    assert str(path) in str(e.value)
    ds = D.load_dir(tiny_dir, unknown_items="drop")
    assert ds.interactions("video", "test").size == 1
    assert any("dropped 2 interactions whose item is not in train" in n for n in ds.notes)


def test_duplicates_dropped_with_count_or_error(tmp_path):
    _write(tmp_path, "a", "train", ["1\t2", "1\t2", "1\t3", "1\t2"])
    _write(tmp_path, "b", "train", ["1\t2"])
    ds = D.load_dir(tmp_path)
    assert ds.interactions("a", "train").size == 2
    assert any("dropped 2 duplicate interactions" in n for n in ds.notes)
    assert D.load_dir(tmp_path, duplicates="keep").interactions("a", "train").size == 4
    with pytest.raises(D.DataError, match="line 2: duplicate interaction"):
        D.load_dir(tmp_path, duplicates="error")


def test_unknown_domain_and_split(tiny_dir):
    ds = D.load_dir(tiny_dir)
    with pytest.raises(D.DataError, match=r"unknown domain 'books'; this dataset has \['game', 'video'\]"):
        ds.interactions("books", "train")
    with pytest.raises(D.DataError, match="unknown split 'dev'"):
        ds.interactions("game", "dev")


# ---------------------------------------------------------------------------------------------- RecBole & tables


def test_load_recbole(tmp_path):
    (tmp_path / "books.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\tb1\t5\t10\nu2\tb2\t3\t20\nu1\tb2\t4\t30\n"
    )
    (tmp_path / "movies.inter").write_text("user_id:token\titem_id:token\nu2\tm1\nu3\tm1\n")
    ds = D.load_recbole({"books": tmp_path / "books.inter", "movies": tmp_path / "movies.inter"})
    assert ds.n_users == 3 and list(ds.user_ids) == ["u1", "u2", "u3"]
    assert ds.overlap() == {("books", "movies"): 1}
    inter = ds.interactions("books", "train")
    np.testing.assert_allclose(inter.ratings, [5, 3, 4])
    np.testing.assert_allclose(inter.timestamps, [10, 20, 30])
    assert ds.interactions("movies", "train").ratings is None


def test_load_recbole_bad_header_and_row(tmp_path):
    (tmp_path / "x.inter").write_text("user_id\titem_id:token\nu1\ti1\n")
    with pytest.raises(D.DataError, match="line 1: header field 'user_id'"):
        D.load_recbole({"x": tmp_path / "x.inter", "y": tmp_path / "x.inter"})
    (tmp_path / "y.inter").write_text("user_id:token\titem_id:token\nu1\ti1\nu2\n")
    with pytest.raises(D.DataError, match=r"y.inter, line 3: expected 2 columns"):
        D.load_recbole({"y": tmp_path / "y.inter"})


def test_from_table_dataframe_csv_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {
            "uid": ["a", "b", "a", "c"],
            "iid": ["x", "y", "p", "q"],
            "dom": ["books", "books", "movies", "movies"],
            "stars": [5, 4, 3, 2],
        }
    )
    cols = {"user": "uid", "item": "iid", "domain": "dom", "rating": "stars"}
    ds = D.from_table(df, columns=cols)
    assert ds.domain_names == ("books", "movies")
    assert ds.overlap() == {("books", "movies"): 1}
    np.testing.assert_allclose(ds.interactions("movies", "train").ratings, [3, 2])
    df.to_csv(tmp_path / "t.csv", index=False)
    ds_csv = D.from_table(tmp_path / "t.csv", columns=cols)
    np.testing.assert_array_equal(ds_csv.interactions("books").items, ds.interactions("books").items)
    pytest.importorskip("pyarrow")
    df.to_parquet(tmp_path / "t.parquet")
    ds_pq = D.from_table(tmp_path / "t.parquet", columns=cols)
    assert ds_pq.overlap() == ds.overlap()
    with pytest.raises(D.DataError, match="no column 'domain' for role 'domain'"):
        D.from_table(df.drop(columns="dom"), columns={"user": "uid", "item": "iid"})


def test_from_arrays_with_splits_and_errors():
    ds = D.from_arrays(
        {"a": {"train": ([0, 1, 2], [0, 1, 1]), "test": ([2], [0])}, "b": {"train": {"users": [1, 2], "items": [5, 6]}}}
    )
    assert ds.n_users == 3 and ds.n_items("a") == 2 and ds.n_items("b") == 2
    with pytest.raises(D.DataError, match="negative user id -1"):
        D.from_arrays({"a": {"train": ([-1], [0])}})
    with pytest.raises(D.DataError, match="must be 1-D of equal length"):
        D.from_arrays({"a": {"train": ([0, 1], [0])}})


# ---------------------------------------------------------------------------------------------- splits


@pytest.fixture(scope="module")
def synth():
    ds, planted = D.synthetic(n_users=1500, n_items=(300, 200), seed=3)
    return ds, planted


def test_cold_start_split_protocol(synth):
    ds, _ = synth
    out = D.cold_start_split(ds, "source", "target", fraction=0.3, seed=1)
    cold = np.union1d(out.users_with("target", "valid"), out.users_with("target", "test"))
    # cold users have no target train history, keep their source history, and are disjoint across valid/test
    assert not np.isin(cold, out.users_with("target", "train")).any()
    assert np.isin(cold, out.users_with("source", "train")).all()
    assert np.intersect1d(out.users_with("target", "valid"), out.users_with("target", "test")).size == 0
    np.testing.assert_array_equal(out.cold_users("source", "target", "test"), out.users_with("target", "test"))
    # nothing lost: target interactions are only moved (or dropped with a count in the notes)
    total = sum(out.interactions("target", s).size for s in D.SPLITS)
    assert (
        total + int(out.notes[-1].split("dropped ")[1].split()[0]) + int(out.notes[-1].split(" and ")[-1].split()[0])
        == ds.interactions("target").size
    )
    n_overlap = ds.overlap()[("source", "target")]
    assert cold.size == round(0.3 * n_overlap)
    # deterministic given the seed, different for another seed
    again = D.cold_start_split(ds, "source", "target", fraction=0.3, seed=1)
    np.testing.assert_array_equal(again.interactions("target", "test").users, out.interactions("target", "test").users)
    other = D.cold_start_split(ds, "source", "target", fraction=0.3, seed=2)
    assert not np.array_equal(other.users_with("target", "test"), out.users_with("target", "test"))
    assert out.interactions("source").size == ds.interactions("source").size


def test_cold_start_split_bad_input(synth):
    ds, _ = synth
    for frac in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(D.DataError, match=f"fraction={frac} must be strictly between 0 and 1"):
            D.cold_start_split(ds, "source", "target", fraction=frac)
    with pytest.raises(D.DataError, match="unknown domain 'movies'"):
        D.cold_start_split(ds, "source", "movies")
    disjoint = D.from_arrays({"a": {"train": ([0, 1], [0, 1])}, "b": {"train": ([2, 3], [0, 1])}})
    with pytest.raises(D.DataError, match="share no users"):
        D.cold_start_split(disjoint, "a", "b")


def test_leave_one_out_by_timestamp():
    users = [0, 0, 0, 0, 1, 1, 1, 2, 2]
    items = [0, 1, 2, 3, 0, 1, 2, 0, 1]
    ts = [4, 1, 3, 2, 10, 30, 20, 1, 2]
    ds = D.from_arrays({"a": {"train": (users, items, None, ts)}, "b": {"train": ([0], [0])}})
    out = D.leave_one_out(ds, "a", min_interactions=3)
    test = out.interactions("a", "test")
    valid = out.interactions("a", "valid")
    assert dict(zip(test.users.tolist(), test.items.tolist())) == {0: 0, 1: 1}  # latest timestamps
    assert dict(zip(valid.users.tolist(), valid.items.tolist())) == {0: 2, 1: 2}  # second latest
    assert 2 not in test.users  # user 2 has only 2 interactions: all kept in train
    assert out.interactions("a", "train").size == 5


def test_leave_one_out_random_is_deterministic(synth):
    ds, _ = synth
    a = D.leave_one_out(ds, seed=5)
    b = D.leave_one_out(ds, seed=5)
    for name in ds.domain_names:
        np.testing.assert_array_equal(a.interactions(name, "test").items, b.interactions(name, "test").items)
        per_user = np.bincount(a.interactions(name, "test").users)
        assert per_user.max() == 1


def test_ratio_split(synth):
    ds, _ = synth
    out = D.ratio_split(ds, "target", ratios=(0.6, 0.2, 0.2), seed=0)
    sizes = [out.interactions("target", s).size for s in D.SPLITS]
    assert sum(sizes) == ds.interactions("target").size
    assert abs(sizes[0] / sum(sizes) - 0.6) < 0.05
    with pytest.raises(D.DataError, match="ratios="):
        D.ratio_split(ds, ratios=(0.5, 0.6, 0.1))


@pytest.mark.parametrize("mode", ["drop", "split"])
def test_limit_overlap(synth, mode):
    ds, _ = synth
    before = ds.overlap()[("source", "target")]
    out = D.limit_overlap(ds, "source", "target", ratio=0.25, mode=mode, seed=0)
    assert out.overlap()[("source", "target")] == round(0.25 * before)
    if mode == "split":
        assert out.n_users == ds.n_users + before - round(0.25 * before)
        assert out.interactions("source").size == ds.interactions("source").size
    else:
        assert out.interactions("source").size < ds.interactions("source").size
    with pytest.raises(D.DataError, match="ratio=1.5 must be in"):
        D.limit_overlap(ds, "source", "target", ratio=1.5)


# ---------------------------------------------------------------------------------------------- synthetic data


def _recall_at_10(scores, users, test):
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    hits = [np.isin(test.items[test.users == u], top[r]).mean() for r, u in enumerate(users)]
    return float(np.mean(hits))


def test_synthetic_oracle_beats_popularity_beats_random():
    ds, planted = D.synthetic(seed=0)
    ds = D.cold_start_split(ds, "source", "target", fraction=0.2, seed=0)
    test = ds.interactions("target", "test")
    users = np.unique(test.users)
    assert users.size > 100
    oracle = _recall_at_10(planted.scores("target", users), users, test)
    pop = ds.item_popularity("target").astype(float)
    popularity = _recall_at_10(np.tile(pop, (users.size, 1)), users, test)
    rng = np.random.default_rng(0)
    random = _recall_at_10(rng.random((users.size, ds.n_items("target"))), users, test)
    # measured with the defaults: oracle 0.55, popularity 0.09, random 0.015
    assert oracle > 3 * popularity
    assert popularity > 2 * random


def test_synthetic_is_deterministic_and_configurable():
    a, _ = D.synthetic(
        n_users=500, domains=("x", "y", "z"), n_items=(50, 60, 70), interactions_per_user=(5.0, 5.0, 5.0), seed=7
    )
    b, _ = D.synthetic(
        n_users=500, domains=("x", "y", "z"), n_items=(50, 60, 70), interactions_per_user=(5.0, 5.0, 5.0), seed=7
    )
    assert a.domain_names == ("x", "y", "z")
    for name in a.domain_names:
        np.testing.assert_array_equal(a.interactions(name).items, b.interactions(name).items)
    assert len(a.overlap()) == 3
    with pytest.raises(D.DataError, match="one value per domain"):
        D.synthetic(domains=("x", "y", "z"))
    with pytest.raises(D.DataError, match="overlap=1.5"):
        D.synthetic(overlap=1.5)


def test_shared_users_bound_splits_ids_above_it(tiny_dir):
    # Users 30 and 40 are local to their domain: video's 40 (test) and game's 40 (train) are two people.
    ds = D.load_dir(tiny_dir, shared_users=30)
    assert ds.n_users == 6
    assert sorted(ds.user_ids.tolist()) == ["10", "20", "game:30", "game:40", "video:30", "video:40"]
    assert ds.overlap()[("game", "video")] == 2
    # The test users have no game history any more, so none of them is a game->video cold-start user.
    assert ds.cold_users("game", "video", "test").size == 0
    assert any("user ids >= 30 are local" in n for n in ds.notes)
    game_users = ds.raw_users(ds.interactions("game", "train").users)
    np.testing.assert_array_equal(game_users, ["10", "10", "20", "game:30", "game:40"])


def test_shared_users_below_heldout_uses_the_largest_heldout_id(tmp_path):
    # CDRIB's layout: common users 0, 1; cold-start (held-out) user 2; ids >= 3 numbered per domain.
    _write(tmp_path, "game", "train", ["0\t1", "1\t2", "2\t1", "3\t1", "4\t2"])
    _write(tmp_path, "video", "train", ["0\t7", "1\t8", "3\t8", "4\t7"])
    _write(tmp_path, "video", "test", ["2\t7"])
    ds = D.load_dir(tmp_path, shared_users="below_heldout")
    assert ds.overlap()[("game", "video")] == 2  # 0 and 1; the 3s and 4s are four different people
    assert ds.n_users == 7
    np.testing.assert_array_equal(ds.raw_users(ds.cold_users("game", "video", "test")), ["2"])
    assert D.load_dir(tmp_path).overlap()[("game", "video")] == 4  # the default reads every id as shared
    via_arrays = D.from_arrays(
        {"a": {"train": ([0, 5], [1, 1]), "test": ([1], [1])}, "b": {"train": ([0, 1, 5], [3, 3, 3])}},
        shared_users="below_heldout",
    )
    assert via_arrays.overlap()[("a", "b")] == 1


@pytest.mark.parametrize(
    "value, match",
    [("nearest", "shared_users='nearest'"), (-1, "integer >= 0"), (True, "integer >= 0"), (2.5, "integer >= 0")],
)
def test_shared_users_bad_values(tiny_dir, value, match):
    with pytest.raises(D.DataError, match=match):
        D.load_dir(tiny_dir, shared_users=value)


def test_shared_users_needs_integer_ids_and_heldout_users(tmp_path):
    _write(tmp_path, "a", "train", ["alice\tx"])
    _write(tmp_path, "b", "train", ["alice\ty"])
    with pytest.raises(D.DataError, match="needs integer user ids.*domain 'a' split 'train'"):
        D.load_dir(tmp_path, integer_ids=False, shared_users=1)
    _write(tmp_path, "a", "train", ["1\t2"])
    _write(tmp_path, "b", "train", ["1\t3"])
    with pytest.raises(D.DataError, match="needs valid/test users"):
        D.load_dir(tmp_path, shared_users="below_heldout")


def test_summary_counts_users_in_both_valid_and_test(tmp_path):
    _write(tmp_path, "a", "train", ["1\t2", "2\t2"])
    _write(tmp_path, "b", "train", ["1\t3", "1\t4", "2\t4"])
    _write(tmp_path, "b", "valid", ["2\t3"])
    _write(tmp_path, "b", "test", ["2\t4"])
    assert "users in both valid and test of b: 1 (of 1 / 1)" in D.load_dir(tmp_path).summary()


# ---------------------------------------------------------------------------------------------- shared benchmark


@pytest.mark.shared_data
def test_amazon_game_video_counts(amazon_dir):
    ds = D.load_dir(amazon_dir)
    assert ds.interactions("game", "train").size == 155_036
    assert ds.interactions("video", "train").size == 156_091
    assert ds.overlap()[("game", "video")] == 19_014
    assert ds.n_items("game") == 12_319 and ds.n_items("video") == 8_751
    test = ds.interactions("video", "test")
    assert test.size == 1_458 and np.unique(test.users).size == 216
    cold = ds.cold_users("game", "video", "test")
    np.testing.assert_array_equal(cold, np.unique(test.users))  # all have Game history, no Video train history
    assert ds.interactions("video", "valid").size == 1_435
    assert ds.interactions("game", "valid").size == 1_381 and ds.interactions("game", "test").size == 1_304
    assert ds.notes == ()  # nothing deduplicated or dropped


@pytest.mark.shared_data
def test_amazon_game_video_true_overlap(amazon_dir):
    # CDRIB's preprocessing numbers the common users 0..2178 (the cold-start users 1736..2178 last) and every
    # other user per domain: only 1,736 train users are one person in both domains.
    ds = D.load_dir(amazon_dir, shared_users="below_heldout")
    assert ds.overlap()[("game", "video")] == 1_736
    assert ds.n_users == 1_736 + 217 + 226 + 22_846 + 17_278
    for source, target, n in (("game", "video", 216), ("video", "game", 212)):
        assert ds.cold_users(source, target, "test").size == n
    assert ds.interactions("video", "train").size == 156_091
    # The valid and test users of a direction are (nearly) the same people, each with half of their held-out items.
    summary = ds.summary()
    assert "users in both valid and test of video: 209 (of 210 / 216)" in summary
