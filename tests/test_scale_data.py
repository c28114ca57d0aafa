"""The lean data layer: the chunked reader of ``load_dir`` against a line-by-line Python reference and against
the strict reader (the same datasets, the same errors), the id maps against ``np.unique``/``searchsorted``,
and Parquet read through ``pyarrow.dataset``."""

import numpy as np
import pytest
from conftest import AMAZON
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxrec import data as D
from jaxrec.data import chunks, idmap, parquet, stream

SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _reference(text: str, width: int):
    """Columns and 1-based line numbers of a tab-separated text, read line by line in Python."""
    rows, lines = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip(" \t"):
            rows.append(line.split("\t"))
            lines.append(number)
    cols = [[r[c] for r in rows] for c in range(width)]
    users = np.array([int(t) for t in cols[0]], np.int64)
    items = np.array([int(t) for t in cols[1]], np.int64)
    ratings = np.array([float(t) for t in cols[2]], np.float32) if width > 2 else None
    stamps = np.array([float(t) for t in cols[3]]) if width > 3 else None
    return users, items, ratings, stamps, np.array(lines, np.int64)


IDS = st.one_of(st.integers(0, 10**6).map(str), st.integers(0, 999).map(lambda v: f"00{v}"), st.just("9" * 18))
NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.sampled_from(["4.", ".5", "-0.5", "1e3", "2E-2", "+3", "1e+2"]),
)
BLANKS = st.sampled_from(["", " ", "\t", " \t  "])


@st.composite
def tsv_files(draw):
    width = draw(st.integers(2, 4))
    lines = []
    for _ in range(draw(st.integers(1, 30))):
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(BLANKS))
        fields = [draw(IDS), draw(IDS)] + [draw(NUMBERS) for _ in range(width - 2)]
        lines.append("\t".join(fields))
    end = draw(st.sampled_from(["", "\n", "\n\n", "\n \n"]))
    return "\n".join(lines) + end, width


@SETTINGS
@given(tsv_files(), st.sampled_from([1, 3, 16, 64, chunks.CHUNK_BYTES]))
def test_chunked_reader_matches_a_line_by_line_reference(tmp_path, file, chunk_bytes):
    text, width = file
    path = tmp_path / "train.txt"
    path.write_text(text)
    got = chunks.read_int_tsv(path, chunk_bytes=chunk_bytes)
    assert got is not None
    users, items, ratings, stamps, lines = _reference(text, width)
    np.testing.assert_array_equal(got.users, users)
    np.testing.assert_array_equal(got.items, items)
    assert got.users.dtype == (np.int32 if users.max() < 2**31 else np.int64)
    for g, want in ((got.ratings, ratings), (got.timestamps, stamps)):
        if want is None:
            assert g is None
        else:
            np.testing.assert_array_equal(g, want)
            assert g.dtype == want.dtype
    np.testing.assert_array_equal(got.lines[np.arange(len(lines))], lines)
    assert [got.lines[r] for r in range(len(lines))] == lines.tolist()


@pytest.mark.parametrize(
    "text",
    [
        "1\t2\r\n3\t4\r\n",  # carriage returns
        "\ufeff1\t2\n",  # a byte-order mark
        "1\t2\n3\t4\t5\n",  # widths differ
        "1\t2\n3\t\n",  # an empty id
        "1\t2\n3\tx\n",  # not digits
        "1\t2\n1234567890123456789\t4\n",  # 19 digits (a valid id the strict reader reads)
        "1\t2\tnan\n",  # not finite
        "1\t2\t1e39\n",  # beyond float32
        "1\t2\t1_0\n",  # not plain decimal
        "1\t\u00e92\n",  # not ASCII
        "1\t2\x00\n",  # a control character
    ],
)
def test_chunked_reader_leaves_anything_else_to_the_strict_reader(tmp_path, text):
    path = tmp_path / "train.txt"
    path.write_text(text, encoding="utf-8")
    assert chunks.read_int_tsv(path, chunk_bytes=4) is None


def _datasets_equal(a, b):
    assert a.domain_names == b.domain_names and a.n_users == b.n_users and a.notes == b.notes
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    for d in a.domain_names:
        np.testing.assert_array_equal(a.domain(d).item_ids, b.domain(d).item_ids)
        assert a.splits(d) == b.splits(d)
        for s in a.splits(d):
            for x, y in zip(a.interactions(d, s), b.interactions(d, s)):
                assert (x is None) == (y is None)
                if x is not None:
                    np.testing.assert_array_equal(x, y)
                    assert x.dtype == y.dtype


def _strict(monkeypatch, fn):
    """``fn()`` with the chunked reader switched off: every file goes through the strict reader."""
    with monkeypatch.context() as m:
        m.setattr(chunks, "read_int_tsv", lambda path, **_: None)
        return fn()


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 12)), min_size=1, max_size=80), st.integers(0, 3))
def test_load_dir_equals_the_strict_reader_on_random_folders(tmp_path_factory, monkeypatch, pairs, held):
    root = tmp_path_factory.mktemp("ds")
    for d in ("a", "b"):
        (root / d).mkdir()
        rows = [(u + (7 if d == "b" else 0), i) for u, i in pairs]
        (root / d / "train.txt").write_text("".join(f"{u}\t{i}\n" for u, i in rows))
        (root / d / "test.txt").write_text("".join(f"{u}\t{i}\n" for u, i in rows[:held]) + "\n")
    for kwargs in ({}, {"duplicates": "keep"}, {"duplicates": "error"}, {"shared_users": 10}):
        chunked = _outcome(lambda: D.load_dir(root, **kwargs))
        strict = _outcome(lambda: _strict(monkeypatch, lambda: D.load_dir(root, **kwargs)))
        if isinstance(strict, str):
            assert chunked == strict
        else:
            _datasets_equal(chunked, strict)


def _outcome(fn):
    """``fn()``, or the message of the DataError it raises."""
    try:
        return fn()
    except D.DataError as e:
        return str(e)


def test_errors_after_chunking_name_the_line(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    lines = [f"{u}\t{u % 7}" for u in range(200)] + ["", "  ", "5\t5"] + [f"{u}\t1" for u in range(300, 400)]
    (tmp_path / "a" / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "a" / "test.txt").write_text("1\t2\n\n3\t99\n")
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 64)
    with pytest.raises(D.DataError, match=r"train.txt, line 203: duplicate interaction \(user 5, item 5\)"):
        D.load_dir(tmp_path, duplicates="error")
    with pytest.raises(D.DataError, match=r"test.txt, line 3: item 99 of domain 'a' split 'test' never occurs"):
        D.load_dir(tmp_path)


def test_load_dir_equals_the_strict_reader_on_the_fixtures(legacy_data_dir, monkeypatch):
    _datasets_equal(D.load_dir(legacy_data_dir), _strict(monkeypatch, lambda: D.load_dir(legacy_data_dir)))


@pytest.mark.shared_data
def test_load_dir_equals_the_strict_reader_on_amazon(monkeypatch):
    if not AMAZON.is_dir():
        pytest.skip(f"{AMAZON} is absent")
    kwargs = {"shared_users": "below_heldout"}
    _datasets_equal(D.load_dir(AMAZON, **kwargs), _strict(monkeypatch, lambda: D.load_dir(AMAZON, **kwargs)))


@SETTINGS
@given(
    st.lists(st.lists(st.integers(0, 2**40), max_size=40), min_size=1, max_size=3),
    st.lists(st.integers(0, 2**40), max_size=40),
    st.booleans(),
)
def test_id_maps_equal_unique_and_searchsorted(columns, probe, dense):
    cols = [np.array(c, np.int64) % (64 if dense else 2**40) for c in columns]
    index = idmap.sorted_unique(cols)
    np.testing.assert_array_equal(index, np.unique(np.concatenate(cols)))
    probe = np.array(probe, np.int64) % (64 if dense else 2**40)
    pos, known = idmap.IdMap(index)(probe)
    want_known = np.isin(probe, index)
    np.testing.assert_array_equal(known if known is not None else np.ones(probe.size, bool), want_known)
    np.testing.assert_array_equal(pos, np.where(want_known, np.searchsorted(index, probe), 0))
    assert pos.dtype == np.int32


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.booleans()), max_size=40))
def test_repeated_rows_are_all_but_the_first_kept_row_of_each_pair(rows):
    users = np.array([r[0] for r in rows], np.int32)
    items = np.array([r[1] for r in rows], np.int32)
    keep = np.array([r[2] for r in rows], bool)
    seen, want = set(), []
    for u, i, k in rows:
        want.append(k and (u, i) in seen)
        if k:
            seen.add((u, i))
    got = idmap.repeated_rows(users, items, 6, keep)
    np.testing.assert_array_equal(np.zeros(len(rows), bool) if got is None else got, np.array(want, bool))


def _frame(**changes):
    pd = pytest.importorskip("pandas")
    cols = {"user": [1, 2, 3, 2], "item": [5, 6, 5, 7], "domain": ["a", "a", "b", "b"], "rating": [1.0, 2.0, 3.0, 4]}
    cols.update(changes)
    return pd.DataFrame(cols)


PARQUET_FRAMES = {
    "int-ids": {},
    "string-ids": {"user": ["u1", "u2", "u3", "u2"], "item": ["x", "y", "x", "z"]},
    "whole-float-ids": {"user": [1.0, 2.0, 3.0, 2.0]},
    "splits": {"split": ["train", "train", "train", "test"], "item": [5, 6, 5, 5]},
    "timestamps": {"timestamp": [1.5, 2.0, 3.0, 4.0]},
    "int-domains": {"domain": [1, 1, 2, 2]},
    "nan-user-id": {"user": [1.0, float("nan"), 3.0, 2.0]},
    "none-item-id": {"item": ["x", None, "y", "y"]},
    "fractional-id": {"user": [1.0, 3.5, 2.0, 2.0]},
    "negative-id": {"item": [5, -6, 5, 5]},
    "empty-string-id": {"item": ["x", "", "y", "y"]},
    "padded-string-id": {"item": ["x", "y ", "z", "z"]},
    "nan-domain": {"domain": ["a", None, "b", "b"]},
    "empty-domain": {"domain": ["a", "", "b", "b"]},
    "padded-domain": {"domain": ["a", "a", "b ", "b"]},
    "unknown-split": {"split": ["train", "dev", "train", "train"]},
    "nan-rating": {"rating": [1.0, float("nan"), 2.0, 2.0]},
    "inf-rating": {"rating": [1.0, 2.0, float("inf"), 2.0]},
    "word-rating": {"rating": ["1", "five", "2", "2"]},
    "bool-ids": {"user": [True, False, True, True]},
    "unknown-test-item": {"split": ["train", "train", "train", "test"], "item": [5, 6, 5, 9]},
}


@pytest.mark.parametrize("changes", PARQUET_FRAMES.values(), ids=PARQUET_FRAMES.keys())
def test_parquet_through_pyarrow_dataset_equals_the_dataframe(tmp_path, changes):
    pytest.importorskip("pyarrow")
    frame = _frame(**changes)
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    from_frame = _outcome(lambda: D.from_table(frame))
    from_file = _outcome(lambda: D.from_table(path))
    if isinstance(from_frame, str):
        assert from_file == from_frame.replace("<DataFrame>", str(path))
    else:
        _datasets_equal(from_file, from_frame)


def test_parquet_reads_only_the_role_columns(tmp_path):
    pytest.importorskip("pyarrow")
    frame = _frame(extra=[[1, 2]] * 4)  # a nested column no role reads
    frame.to_parquet(tmp_path / "t.parquet")
    table = parquet.read_parquet(tmp_path / "t.parquet", ["user", "item", "domain", "nope", "user"])
    assert list(table.columns) == ["user", "item", "domain"] and table.n_rows == 4
    assert table.names == ["user", "item", "domain", "rating", "extra"]
    assert table.columns["user"].values.dtype == np.int64 and table.columns["domain"].codes.tolist() == [0, 0, 1, 1]
    ds = D.from_table(tmp_path / "t.parquet")
    assert ds.domain_names == ("a", "b") and ds.interactions("a").ratings.tolist() == [1.0, 2.0]


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 2**62), st.integers(0, 10**7)), max_size=30))
def test_format_pairs_equals_python_formatting(pairs):
    users = np.array([p[0] for p in pairs], np.int64)
    items = np.array([p[1] for p in pairs], np.int64)
    assert stream.format_pairs(users, items) == "".join(f"{u}\t{i}\n" for u, i in pairs).encode()


def test_synthetic_large_is_deterministic_and_round_trips_through_a_folder(tmp_path):
    cfg = stream.LargeSyntheticConfig(
        n_users=3000, n_items=(400, 300), interactions_per_user=(8.0, 4.0), n_topics=8, block_users=700
    )
    ds = stream.synthetic_large(cfg)
    again = stream.synthetic_large(cfg)
    _datasets_equal(ds, again)
    for d in ds.domain_names:
        users, items, *_ = ds.interactions(d)
        key = users.astype(np.int64) * 1000 + items
        assert (np.diff(key) > 0).all()  # sorted by user then item, no repeated pair
        assert users.dtype == items.dtype == np.int32 and items.max() < ds.n_items(d)
    both = ds.overlap()[("source", "target")]
    assert 0.5 * 3000 < both < 0.7 * 3000  # overlap=0.6
    loaded = D.load_dir(stream.write_dir(ds, tmp_path / "ds"))
    for d in ds.domain_names:
        a, b = ds.interactions(d), loaded.interactions(d)
        np.testing.assert_array_equal(loaded.user_ids[b.users], a.users)
        np.testing.assert_array_equal(loaded.domain(d).item_ids[b.items], a.items)
    with pytest.raises(D.DataError, match="exists"):
        stream.write_dir(ds, tmp_path / "ds")


def test_synthetic_large_source_history_predicts_the_target():
    # The shared taste makes a user's target items likelier under their own source items than under another
    # user's: with P(target item | source item) counted on half of the users, the own history wins for most of
    # the other half (chance: 0.5).
    ds = stream.synthetic_large(n_users=4000, n_items=(300, 200), interactions_per_user=(10.0, 5.0), n_topics=32, dim=8)
    src, tgt = ds.seen("source"), ds.seen("target")
    both = np.flatnonzero((src.lengths > 0) & (tgt.lengths > 0))
    fit, held = both[: both.size // 2], both[both.size // 2 :]
    co = np.ones((300, 200))
    for u in fit:
        co[np.ix_(src.row(u), tgt.row(u))] += 1
    co /= co.sum(1, keepdims=True)

    def log_likelihood(history_of, items_of):
        return np.log(co[src.row(history_of)].mean(0)[tgt.row(items_of)]).mean()

    wins = np.mean([log_likelihood(u, u) > log_likelihood(v, u) for u, v in zip(held, np.roll(held, 1))])
    assert wins > 0.7, wins
