"""Fuzz tests of the loaders: random bytes, and random mutations of small valid files (characters inserted,
deleted or duplicated, columns swapped, added or dropped, lines duplicated or dropped, tokens replaced by random
unicode), through ``load_dir``, ``load_recbole``, ``from_table`` (CSV) and ``from_arrays``. Each gives a dataset
or a ``DataError`` with a short message, never another exception."""

import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxrec import data as D

FUZZ = settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SHORT = 400

VALID_TSV = "1\t10\t5\t100\n2\t11\t4\t101\n3\t10\t3.5\t102\n2\t10\t1\t103\n"
VALID_RECBOLE = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\ti1\t5\t1\nu2\ti2\t3\t2\nu1\ti2\t4.5\t3\n"
)
VALID_CSV = (
    "user,item,domain,rating,split\n1,10,a,5,train\n2,11,a,4,train\n1,20,b,3,train\n2,21,b,1,train\n2,10,a,2,test\n"
)

# Characters a mutation inserts: anything unicode, plus the ones parsers trip on.
CHARS = st.one_of(
    st.characters(), st.sampled_from(list("\t\n\r ,.-+_eE0123456789\"'\x00\x0b\x7f\ufeff\u0663\u2028\x85"))
)
WORDS = st.sampled_from(["nan", "inf", "-1", "1e400", "0x10", "1_0", str(2**64), "user_id:token", "x" * 300])
TOKENS = st.one_of(st.text(CHARS, max_size=8), WORDS)


@st.composite
def mutated(draw, text: str, sep: str) -> bytes:
    """``text`` after 1 to 4 random edits, as UTF-8 bytes (lone surrogates kept, so not always valid UTF-8)."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            lines = [""]
        row = draw(st.integers(0, len(lines) - 1))
        line, cols = lines[row], lines[row].split(sep)
        op = draw(
            st.sampled_from(
                ["insert", "delete", "duplicate", "swap", "add", "drop", "dup_line", "drop_line", "replace"]
            )
        )
        if op == "insert":
            pos = draw(st.integers(0, len(line)))
            line = line[:pos] + draw(st.one_of(CHARS, WORDS)) + line[pos:]
        elif op in ("delete", "duplicate") and line:
            pos = draw(st.integers(0, len(line) - 1))
            line = line[:pos] + (line[pos] * 2 if op == "duplicate" else "") + line[pos + 1 :]
        elif op == "swap":
            i, j = draw(st.integers(0, len(cols) - 1)), draw(st.integers(0, len(cols) - 1))
            cols[i], cols[j] = cols[j], cols[i]
            line = sep.join(cols)
        elif op == "add":
            line = line + sep + draw(TOKENS)
        elif op == "drop" and len(cols) > 1:
            del cols[draw(st.integers(0, len(cols) - 1))]
            line = sep.join(cols)
        elif op == "dup_line":
            lines.insert(row, line)
        elif op == "drop_line":
            del lines[row]
            continue
        elif op == "replace":
            cols[draw(st.integers(0, len(cols) - 1))] = draw(TOKENS)
            line = sep.join(cols)
        lines[row] = line
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return (end.join(lines) + end).encode("utf-8", "surrogatepass")


def _dataset_or_data_error(load):
    try:
        ds = load()
    except D.DataError as e:
        assert len(str(e)) < SHORT, str(e)[:1000]
        return None
    assert isinstance(ds, D.CrossDomainDataset)
    return ds


def _load_dir(root: pathlib.Path, content: bytes, split: str, **kwargs):
    for name in ("a", "b"):
        (root / name).mkdir(exist_ok=True)
    (root / "b" / "train.txt").write_text(VALID_TSV)
    (root / "a" / "train.txt").write_text(VALID_TSV)
    (root / "a" / "test.txt").unlink(missing_ok=True)
    (root / "a" / f"{split}.txt").write_bytes(content)
    return _dataset_or_data_error(lambda: D.load_dir(root, **kwargs))


LOAD_DIR_OPTIONS = st.fixed_dictionaries(
    {
        "split": st.sampled_from(["train", "test"]),
        "integer_ids": st.booleans(),
        "unknown_items": st.sampled_from(["error", "drop"]),
        "shared_users": st.sampled_from([None, 2, "below_heldout"]),
    }
)


@FUZZ
@given(content=st.binary(max_size=200), options=LOAD_DIR_OPTIONS)
def test_load_dir_random_bytes(tmp_path, content, options):
    _load_dir(tmp_path, content, **options)


@FUZZ
@given(content=mutated(VALID_TSV, "\t"), options=LOAD_DIR_OPTIONS)
def test_load_dir_mutated_lines(tmp_path, content, options):
    _load_dir(tmp_path, content, **options)


def _load_recbole(root: pathlib.Path, content: bytes):
    (root / "x.inter").write_bytes(content)
    (root / "y.inter").write_text(VALID_RECBOLE)
    return _dataset_or_data_error(lambda: D.load_recbole({"x": root / "x.inter", "y": root / "y.inter"}))


def _from_csv(root: pathlib.Path, content: bytes):
    pytest.importorskip("pandas")
    (root / "t.csv").write_bytes(content)
    return _dataset_or_data_error(lambda: D.from_table(root / "t.csv"))


# Loaders of one file: name -> (load(root, content), a valid file, its column separator).
FILE_LOADERS = {
    "load_recbole": (_load_recbole, VALID_RECBOLE, "\t"),
    "from_table_csv": (_from_csv, VALID_CSV, ","),
}


@FUZZ
@pytest.mark.parametrize("loader", FILE_LOADERS)
@given(content=st.binary(max_size=200))
def test_file_loader_random_bytes(tmp_path, loader, content):
    FILE_LOADERS[loader][0](tmp_path, content)


@FUZZ
@pytest.mark.parametrize("loader", FILE_LOADERS)
@given(data=st.data())
def test_file_loader_mutated_lines(tmp_path, loader, data):
    load, valid, sep = FILE_LOADERS[loader]
    load(tmp_path, data.draw(mutated(valid, sep), label="content"))


def test_mutations_of_the_valid_files_load_unchanged(tmp_path):
    # The fuzzed files are valid before mutation, so the tests above exercise both outcomes.
    (tmp_path / "d").mkdir()
    assert _load_dir(tmp_path / "d", VALID_TSV.encode(), "train").interactions("a").size == 4
    assert _load_recbole(tmp_path, VALID_RECBOLE.encode()).interactions("x").size == 3
    assert _from_csv(tmp_path, VALID_CSV.encode()).interactions("a", "test").size == 1


# Any value a user might put in an id or rating list: ints of every size, floats, strings, None, bools.
VALUES = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), TOKENS, st.none(), st.booleans()
)


@FUZZ
@given(
    users=st.lists(VALUES, min_size=1, max_size=6),
    items=st.lists(VALUES, min_size=1, max_size=6),
    ratings=st.none() | st.lists(VALUES, min_size=1, max_size=6),
)
def test_from_arrays_random_values(users, items, ratings):
    n = min(len(users), len(items))
    split = (users[:n], items[:n]) if ratings is None else (users[:n], items[:n], (ratings * n)[:n])

    def load():
        try:
            columns = [np.asarray(c) for c in split]  # numpy itself may refuse a ragged or mixed list
        except (ValueError, TypeError, OverflowError):
            columns = split
        return D.from_arrays({"a": {"train": tuple(columns)}, "b": {"train": ([1], [1])}})

    _dataset_or_data_error(load)
