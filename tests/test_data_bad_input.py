"""Bad input through every loader: each case is a ``DataError`` (exactly that type) whose message names the file
(or the argument, domain and split, or table) and the line or row, says what was expected, and stays short; or
a documented behaviour (a dataset, with a note where something was skipped)."""

import math
import os
import pathlib
import re

import numpy as np
import pytest

from jaxrec import data as D

pd = pytest.importorskip("pandas")

SHORT = 400  # every message stays under this many characters, whatever the input


def _raises(fn, *, names: str, match: str, line: int | None = None, unit: str = "line") -> str:
    """Calls ``fn``, checks it raises exactly DataError naming ``names`` (and the line), short; returns the text."""
    with pytest.raises(D.DataError) as e:
        fn()
    message = str(e.value)
    assert type(e.value) is D.DataError
    assert names in message, message
    if line is not None:
        assert f"{unit} {line}:" in message, message
    assert len(message) < SHORT, message[:500]
    assert re.search(match, message), message
    return message


def _folder(tmp_path: pathlib.Path, content: bytes) -> pathlib.Path:
    """A dataset folder whose domain ``a`` has ``content`` as train.txt; domain ``b`` is valid."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / "b" / "train.txt").write_text("1\t2\n")
    path = tmp_path / "a" / "train.txt"
    path.write_bytes(content)
    return path


def _lines(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


# ---------------------------------------------------------------------------------------------- file contents

NOT_INT = "is not a non-negative integer"
TSV_CASES = [
    # (id, train.txt content, load_dir kwargs, line named, pattern)
    ("underscore-id", _lines("1\t2", "1_0\t2"), {}, 2, f"user id '1_0' {NOT_INT}"),
    ("plus-sign-id", _lines("+7\t2"), {}, 1, f"user id '\\+7' {NOT_INT}"),
    ("space-padded-id", _lines(" 7\t2"), {}, 1, f"user id ' 7' {NOT_INT}"),
    ("trailing-space-item", _lines("7\t2 "), {}, 1, f"item id '2 ' {NOT_INT}"),
    ("arabic-indic-digit", _lines("1\t2", "\u0663\t2"), {}, 2, f"user id '\u0663' {NOT_INT}"),
    ("fullwidth-digit", _lines("\uff17\t2"), {}, 1, NOT_INT),
    ("superscript-digit", _lines("1\t\u00b2"), {}, 1, f"item id '\u00b2' {NOT_INT}"),
    ("hex-id", _lines("0x10\t2"), {}, 1, f"user id '0x10' {NOT_INT}"),
    ("negative-id", _lines("-3\t7"), {}, 1, f"user id '-3' {NOT_INT}"),
    ("float-id", _lines("3.5\t7"), {}, 1, f"user id '3.5' {NOT_INT}"),
    ("scientific-id", _lines("1e3\t7"), {}, 1, f"user id '1e3' {NOT_INT}"),
    ("id-2**64", _lines("1\t2", f"{2**64}\t2"), {}, 2, "out of range: integer ids must fit in int64"),
    ("id-2**63", _lines(f"{2**63}\t2"), {}, 1, "out of range"),
    (
        "id-10000-digits",
        _lines("9" * 10_000 + "\t2"),
        {},
        1,
        r"out of range.*10,000 characters|10,000 characters.*out of range",
    ),
    ("id-10MB", _lines("x" * 10_000_000 + "\t2"), {}, 1, r"\(10,000,000 characters\) is not a non-negative integer"),
    ("empty-user-id", _lines("1\t2", "\t5"), {}, 2, "user id '' is empty"),
    ("empty-item-id", _lines("5\t"), {}, 1, "item id '' is empty"),
    ("header-line", _lines("user\titem", "1\t2"), {}, 1, f"user id 'user' {NOT_INT}.*integer_ids=False"),
    ("latin-1-byte", b"1\t2\n3\t\xe94\n", {}, 2, r"byte 0xe9 at offset 6 is not UTF-8"),
    ("latin-1-after-crlf", b"1\t2\r\n1\t3\r\n3\t\xe94\r\n", {}, 3, r"byte 0xe9 .* is not UTF-8"),
    ("utf-16-file", "1\t2\n".encode("utf-16"), {}, 1, r"not UTF-8 \(the file is UTF-16\)"),
    ("nul-byte", b"1\t2\n3\t4\x00\n", {}, 2, r"control character 0x00 \(a binary or UTF-16 file\?\)"),
    ("form-feed", b"1\t2\x0c\n", {}, 1, "control character 0x0c"),
    ("del-char", b"1\t2\x7f\n", {}, 1, "control character 0x7f"),
    (
        "third-column-on-line-1-only",
        _lines("1\t2\t3", "4\t5", "6\t7"),
        {},
        1,
        "expected 2 tab-separated columns like line 2",
    ),
    ("third-column-tie", _lines("1\t2\t3", "4\t5"), {}, 1, r"expected 2 .* like line 2 .* got 3"),
    ("extra-column-mid-file", _lines("1\t2", "1\t3", "3\t4\t5\t6\t7", "5\t6"), {}, 3, r"expected 2 .* got 5"),
    (
        "missing-rating-column",
        _lines("1\t2\t5", "1\t3\t4", "2\t2"),
        {},
        3,
        r"expected 3 tab-separated columns .* got 2",
    ),
    ("space-separated", _lines("1 2", "3 4"), {}, 1, "expected 2 to 4 .* this line has none \\(it has spaces\\)"),
    ("comma-separated", _lines("1,2", "3,4"), {}, 1, "it has commas"),
    ("five-columns-everywhere", _lines("1\t2\t3\t4\t5"), {}, 1, "expected 2 to 4 tab-separated columns.* got 5"),
    ("nan-rating", _lines("1\t2\t5", "2\t3\tnan"), {}, 2, "rating 'nan' is not finite"),
    ("NaN-rating", _lines("2\t3\tNaN"), {}, 1, "rating 'NaN' is not finite"),
    ("inf-rating", _lines("1\t2\tinf"), {}, 1, "rating 'inf' is not finite"),
    ("minus-infinity-rating", _lines("1\t2\t-Infinity"), {}, 1, "is not finite"),
    ("overflowing-rating", _lines("1\t2\t1e400"), {}, 1, "rating '1e400' is not finite"),
    ("rating-beyond-float32", _lines("1\t2\t1e39"), {}, 1, "beyond the float32 range"),
    ("word-rating", _lines("1\t2\t5", "2\t3\tfive"), {}, 2, "rating 'five' is not a number"),
    ("underscore-rating", _lines("1\t2\t1_0"), {}, 1, "rating '1_0' is not a number"),
    ("arabic-digit-rating", _lines("1\t2\t\u0663"), {}, 1, "is not a number"),
    ("empty-rating", _lines("1\t2\t"), {}, 1, "rating '' is empty"),
    ("word-timestamp", _lines("1\t2\t5\tyesterday"), {}, 1, "timestamp 'yesterday' is not a number"),
    ("nan-timestamp", _lines("1\t2\t5\tnan"), {}, 1, "timestamp 'nan' is not finite"),
    ("line-numbers-count-blank-lines", _lines("1\t2", "", "   ", "\t", "x\t2"), {}, 5, NOT_INT),
    ("line-numbers-after-bom", b"\xef\xbb\xbf1\t2\nx\t2\n", {}, 2, NOT_INT),
    ("line-numbers-with-cr-line-ends", b"1\t2\r1\t3\rx\t2\r", {}, 3, NOT_INT),
    (
        "string-id-padded",
        _lines("alice\tx", " bob\ty"),
        {"integer_ids": False},
        2,
        "user id ' bob' has leading or trailing",
    ),
    ("string-id-too-long", _lines("a" * 300 + "\tx"), {"integer_ids": False}, 1, "is longer than 256 characters"),
    ("string-id-10MB", _lines("a" * 10_000_000 + "\tx"), {"integer_ids": False}, 1, "longer than 256 characters"),
]


@pytest.mark.parametrize("content, kwargs, line, match", [c[1:] for c in TSV_CASES], ids=[c[0] for c in TSV_CASES])
def test_load_dir_bad_file_contents(tmp_path, content, kwargs, line, match):
    path = _folder(tmp_path, content)
    _raises(lambda: D.load_dir(tmp_path, **kwargs), names=str(path), line=line, match=match)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n\t\n", b"\xef\xbb\xbf"], ids=["empty", "blank-lines", "bom-only"])
def test_load_dir_empty_train_file(tmp_path, content):
    path = _folder(tmp_path, content)
    _raises(lambda: D.load_dir(tmp_path), names=str(path), match="domain 'a' has no train interactions")


def test_load_dir_quotes_cut_lines(tmp_path):
    # The column-count message quotes the line; a 1 MB line is cut to about 100 characters.
    path = _folder(tmp_path, _lines("1\t2", "1\t" + "3" * 1_000_000 + "\t4\t5\t6"))
    message = _raises(lambda: D.load_dir(tmp_path), names=str(path), line=2, match=r"\(1,000,008 characters\)")
    assert "3" * 101 not in message


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"\xef\xbb\xbf1\t2\n3\t4\n", [1, 3]),  # a UTF-8 byte-order mark is dropped
        (b"1\t2\r\n3\t4\r\n", [1, 3]),  # Windows line ends
        (b"1\t2\r3\t4", [1, 3]),  # old Mac line ends, no final newline
        (b"\n1\t2\n  \n\t\n3\t4\n\n", [1, 3]),  # blank and whitespace-only lines are skipped
        (b"007\t2\n3\t4\n", [3, 7]),  # leading zeros: 007 is id 7
        (f"{2**63 - 1}\t2\n".encode(), [2**63 - 1]),  # the largest int64
    ],
    ids=["bom", "crlf", "cr", "blank-lines", "leading-zeros", "int64-max"],
)
def test_load_dir_accepts(tmp_path, content, expected):
    _folder(tmp_path, content)
    ds = D.load_dir(tmp_path)
    np.testing.assert_array_equal(ds.raw_users(np.unique(ds.interactions("a").users)), expected)


# ---------------------------------------------------------------------------------------------- folders


def test_domain_folder_without_train_is_an_error(tmp_path):
    _folder(tmp_path, _lines("1\t2"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "valid.txt").write_text("1\t2\n")
    _raises(lambda: D.load_dir(tmp_path), names=str(tmp_path / "c"), match="has valid.txt but no train.txt")


def test_hidden_and_empty_folders_are_skipped_with_a_note(tmp_path):
    _folder(tmp_path, _lines("1\t2"))
    for name in (".ipynb_checkpoints", ".git"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.txt").write_text("1\t2\n")
    (tmp_path / "plots").mkdir()
    (tmp_path / "README.md").write_text("not a domain\n")
    ds = D.load_dir(tmp_path)
    assert ds.domain_names == ("a", "b")
    assert "skipped hidden folder '.ipynb_checkpoints'" in ds.notes
    assert "skipped hidden folder '.git'" in ds.notes
    assert "skipped folder 'plots': no train.txt, valid.txt or test.txt" in ds.notes


def test_broken_domain_symlink_is_skipped_with_a_note(tmp_path):
    _folder(tmp_path, _lines("1\t2"))
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    os.symlink(tmp_path / "missing", tmp_path / "gone")
    ds = D.load_dir(tmp_path)
    assert ds.domain_names == ("a", "b")
    assert "skipped 'loop': a broken or looping symbolic link" in ds.notes
    assert "skipped 'gone': a broken or looping symbolic link" in ds.notes


def _train_is_a_folder(root):
    (root / "a" / "train.txt").unlink()
    (root / "a" / "train.txt").mkdir()


def _train_symlink_loop(root):
    (root / "a" / "train.txt").unlink()
    os.symlink("train.txt", root / "a" / "train.txt")


def _train_broken_symlink(root):
    (root / "a" / "train.txt").unlink()
    os.symlink("nowhere.txt", root / "a" / "train.txt")


def _train_fifo(root):
    (root / "a" / "train.txt").unlink()
    os.mkfifo(root / "a" / "train.txt")


def _test_is_a_folder(root):
    (root / "a" / "test.txt").mkdir()


@pytest.mark.parametrize(
    "make, match",
    [
        (_train_is_a_folder, "train.txt: is a folder, expected a file"),
        (_train_symlink_loop, "train.txt: cannot be read: Too many levels of symbolic links"),
        (_train_broken_symlink, "train.txt: file not found \\(a broken symbolic link\\)"),
        (_train_fifo, "train.txt: is not a regular file"),
        (_test_is_a_folder, "test.txt: is a folder"),
    ],
    ids=["train-is-a-folder", "train-symlink-loop", "train-broken-symlink", "train-is-a-pipe", "test-is-a-folder"],
)
def test_load_dir_unreadable_files(tmp_path, make, match):
    _folder(tmp_path, _lines("1\t2"))
    make(tmp_path)
    _raises(lambda: D.load_dir(tmp_path), names=str(tmp_path / "a"), match=match)


def test_permission_denied_names_the_file(tmp_path, monkeypatch):
    # Simulated, so that it also runs as root (who may read any file).
    path = _folder(tmp_path, _lines("1\t2"))
    real = pathlib.Path.read_bytes

    def read_bytes(self):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    _raises(lambda: D.load_dir(tmp_path), names=str(path), match="cannot be read: Permission denied")


def test_folder_problems(tmp_path):
    _raises(lambda: D.load_dir(tmp_path), names=str(tmp_path), match="no domain folders with a train.txt")
    _raises(lambda: D.load_dir(tmp_path / "nope"), names=str(tmp_path / "nope"), match="dataset directory not found")
    (tmp_path / "file.txt").write_text("1\t2\n")
    _raises(lambda: D.load_dir(tmp_path / "file.txt"), names="file.txt", match="is a file; expected the dataset folder")
    (tmp_path / "train.txt").write_text("1\t2\n")
    _raises(lambda: D.load_dir(tmp_path), names=str(tmp_path), match="holds train.txt itself: pass the folder above it")


def test_domain_names_differing_only_by_case(tmp_path):
    _folder(tmp_path, _lines("1\t2"))
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "train.txt").write_text("1\t2\n")
    _raises(lambda: D.load_dir(tmp_path), names=str(tmp_path), match="domain folders 'A' and 'a' differ only by case")


@pytest.mark.parametrize(
    "domains, match",
    [
        ("a", r"domains='a'; expected a list of domain folder names"),
        ([], r"domains=\[\] names no domain"),
        (["../a"], r"'../a' is not a folder name"),
        (["a", 3], r"3 is not a folder name"),
        (["a", "a"], r"'a' is named twice"),
        (["a", "nope"], r"nope: domain folder not found"),
    ],
    ids=["a-string", "empty", "parent-path", "not-a-string", "twice", "missing"],
)
def test_load_dir_bad_domains_argument(tmp_path, domains, match):
    _folder(tmp_path, _lines("1\t2"))
    _raises(lambda: D.load_dir(tmp_path, domains=domains), names="domain", match=match)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"unknown_items": "skip"}, r"unknown_items='skip'; expected one of \('error', 'drop'\)"),
        ({"duplicates": 1}, r"duplicates=1; expected one of"),
        ({"shared_users": "all"}, r"shared_users='all'; expected None, an integer >= 0"),
        ({"shared_users": -1}, r"shared_users=-1"),
        ({"integer_ids": "yes"}, r"integer_ids='yes'; expected True or False"),
    ],
    ids=["unknown_items", "duplicates", "shared_users-name", "shared_users-negative", "integer_ids"],
)
def test_load_dir_bad_options_before_reading(tmp_path, kwargs, match):
    # The folder does not exist: the option is refused before anything is read.
    _raises(lambda: D.load_dir(tmp_path / "nope", **kwargs), names=next(iter(kwargs)), match=match)


# ---------------------------------------------------------------------------------------------- RecBole

RECBOLE_CASES = [
    (
        "id-typed-float",
        "user_id:float\titem_id:token\n1\t2\n",
        1,
        r"header field 'user_id:float' must have type 'token'",
    ),
    (
        "rating-typed-token",
        "user_id:token\titem_id:token\trating:token\n1\t2\t5\n",
        1,
        r"'rating:token' must have type 'float'",
    ),
    ("untyped-field", "user_id\titem_id:token\nu1\ti1\n", 1, r"header field 'user_id' must be 'name:type'"),
    (
        "unknown-type",
        "user_id:token\titem_id:string\nu1\ti1\n",
        1,
        r"header field 'item_id:string' must be 'name:type'",
    ),
    ("empty-name", "user_id:token\titem_id:token\t:float\nu1\ti1\t3\n", 1, r"header field ':float'"),
    ("column-twice", "user_id:token\titem_id:token\tuser_id:token\nu\ti\tu\n", 1, "names column 'user_id' twice"),
    ("no-item-column", "user_id:token\trating:float\nu1\t3\n", 1, "has no 'item_id' column"),
    ("short-row", "user_id:token\titem_id:token\nu1\ti1\nu2\n", 3, r"expected 2 columns \['user_id', 'item_id'\]"),
    ("long-row", "user_id:token\titem_id:token\nu1\ti1\tx\n", 2, r"as in the header \(line 1\), got 3"),
    ("nan-rating", "user_id:token\titem_id:token\trating:float\nu1\ti1\tnan\n", 2, "rating 'nan' is not finite"),
    ("empty-id", "user_id:token\titem_id:token\nu1\ti1\n\ti2\n", 3, "user id '' is empty"),
    ("padded-id", "user_id:token\titem_id:token\nu1\t i1\n", 2, "item id ' i1' has leading or trailing whitespace"),
    (
        "word-timestamp",
        "user_id:token\titem_id:token\ttimestamp:float\nu\ti\tnoon\n",
        2,
        "timestamp 'noon' is not a number",
    ),
]


@pytest.mark.parametrize("text, line, match", [c[1:] for c in RECBOLE_CASES], ids=[c[0] for c in RECBOLE_CASES])
def test_load_recbole_bad_files(tmp_path, text, line, match):
    path = tmp_path / "x.inter"
    path.write_text(text)
    _raises(lambda: D.load_recbole({"x": path}), names=str(path), line=line, match=match)


def test_load_recbole_empty_and_header_only_and_binary(tmp_path):
    path = tmp_path / "x.inter"
    path.write_bytes(b"")
    _raises(lambda: D.load_recbole({"x": path}), names=str(path), match="empty file")
    path.write_text("user_id:token\titem_id:token\n")
    _raises(lambda: D.load_recbole({"x": path}), names=str(path), match="domain 'x' has no train interactions")
    path.write_bytes(b"user_id:token\titem_id:token\nu\xff\ti\n")
    _raises(lambda: D.load_recbole({"x": path}), names=str(path), line=2, match="byte 0xff at offset 29")


@pytest.mark.parametrize(
    "files, names, match",
    [
        ([("x", "x.inter")], "files=", r"expected a non-empty mapping"),
        ({}, "files=", r"files=\{\}; expected a non-empty mapping"),
        ({"x": {"dev": "x.inter"}}, "files['x']", r"unknown split 'dev'"),
        ({"x": 3}, "files['x']['train']", r"expected a file path, got int"),
        ({"": "x.inter"}, "files:", r"domain names must be non-empty strings"),
        ({"x": "missing.inter"}, "missing.inter", r"file not found"),
    ],
    ids=["a-list", "empty", "unknown-split", "not-a-path", "empty-name", "missing-file"],
)
def test_load_recbole_bad_arguments(files, names, match):
    _raises(lambda: D.load_recbole(files), names=names, match=match)


# ---------------------------------------------------------------------------------------------- tables


def _frame(**changes):
    cols = {"user": [1, 2, 3], "item": [5, 6, 5], "domain": ["a", "a", "b"], "rating": [1.0, 2.0, 3.0]}
    cols.update(changes)
    return pd.DataFrame(cols)


FRAME_CASES = [
    ("nan-user-id", _frame(user=[1.0, float("nan"), 3.0]), 1, r"user id is missing \(an empty cell, NaN or None\)"),
    ("none-item-id", _frame(item=["x", None, "y"]), 1, "item id is missing"),
    ("fractional-id", _frame(user=[1.0, 3.5, 2.0]), 1, r"user id 3.5 is not a whole number"),
    ("negative-id", _frame(item=[5, -6, 5]), 1, "negative item id -6"),
    ("ids-beyond-int64", _frame(user=np.array([1, 2**63, 3], dtype=np.uint64)), 1, "out of range"),
    ("mixed-int-and-str-ids", _frame(user=[1, "two", 3]), 1, r"user id 'two' is a string but row 0's is an integer"),
    ("empty-string-id", _frame(item=["x", "", "y"]), 1, "item id '' is empty"),
    ("padded-string-id", _frame(item=["x", "y ", "z"]), 1, "item id 'y ' has leading or trailing whitespace"),
    ("nan-domain", _frame(domain=["a", None, "b"]), 1, "domain is missing"),
    ("empty-domain", _frame(domain=["a", "", "b"]), 1, "domain '' is empty"),
    (
        "unknown-split",
        _frame(split=["train", "dev", "train"]),
        1,
        r"split 'dev' is not one of \('train', 'valid', 'test'\)",
    ),
    ("nan-rating", _frame(rating=[1.0, float("nan"), 2.0]), 1, "rating is missing"),
    ("inf-rating", _frame(rating=[1.0, 2.0, float("inf")]), 2, r"rating inf is not finite"),
    ("word-rating", _frame(rating=["1", "five", "2"]), 1, "rating 'five' is not a number"),
    ("bool-ids", _frame(user=[True, False, True]), None, "user ids must be integers or strings, got dtype bool"),
]


@pytest.mark.parametrize("frame, row, match", [c[1:] for c in FRAME_CASES], ids=[c[0] for c in FRAME_CASES])
def test_from_table_bad_dataframe(frame, row, match):
    _raises(lambda: D.from_table(frame), names="<DataFrame>", line=row, unit="row", match=match)


CSV_CASES = [
    ("short-row", "user,item,domain\n1,2,a\n1,2\n", 3, "domain '' is empty"),
    ("long-row", "user,item,domain\n1,2,a,4\n", None, "a row has more fields than the header"),
    ("long-row-later", "user,item,domain\n1,2,a\n1,2,a,4\n", None, r"not a well-formed CSV table: .*Expected 3 fields"),
    ("space-after-comma", "user,item,domain\n1, 2,a\n", 2, "item id ' 2' has leading or trailing whitespace"),
    ("header-only", "user,item,domain\n", None, "the table has no rows"),
    ("empty", "", None, "empty file"),
    ("latin-1", b"user,item,domain\n1,caf\xe9,a\n", 2, "byte 0xe9 at offset 22 is not UTF-8"),
    ("nan-rating", "user,item,domain,rating\n1,2,a,nan\n", 2, "rating 'nan' is not finite"),
    (
        "missing-column",
        "user,item\n1,2\n",
        None,
        r"no column 'domain' for role 'domain'; columns are \['user', 'item'\]",
    ),
]


@pytest.mark.parametrize("text, line, match", [c[1:] for c in CSV_CASES], ids=[c[0] for c in CSV_CASES])
def test_from_table_bad_csv(tmp_path, text, line, match):
    path = tmp_path / "t.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    _raises(lambda: D.from_table(path), names=str(path), line=line, match=match)


def test_from_table_bad_arguments(tmp_path):
    frame = _frame()
    _raises(lambda: D.from_table([1, 2]), names="table", match="expected a pandas DataFrame or the path")
    _raises(lambda: D.from_table(frame, columns=["user"]), names="columns", match="expected a mapping")
    _raises(lambda: D.from_table(frame, columns={"usr": "user"}), names="columns", match="unknown role 'usr'")
    _raises(lambda: D.from_table(frame, columns={"item": "user"}), names="<DataFrame>", match="both read column 'user'")
    twice = pd.concat([frame, frame[["user"]]], axis=1)
    _raises(lambda: D.from_table(twice), names="<DataFrame>", match="column 'user' appears more than once")
    _raises(lambda: D.from_table(frame.iloc[:0]), names="<DataFrame>", match="the table has no rows")
    (tmp_path / "t.xlsx").write_text("x")
    _raises(lambda: D.from_table(tmp_path / "t.xlsx"), names="t.xlsx", match="unsupported table format '.xlsx'")
    _raises(lambda: D.from_table(tmp_path / "none.csv"), names="none.csv", match="file not found")
    pytest.importorskip("pyarrow")
    (tmp_path / "t.parquet").write_bytes(b"not parquet at all")
    _raises(lambda: D.from_table(tmp_path / "t.parquet"), names="t.parquet", match="not a readable Parquet file")


def test_from_table_accepts_extra_columns_and_whole_float_ids():
    frame = _frame(user=[1.0, 2.0, 3.0], note=["x", "y", "z"])
    ds = D.from_table(frame)
    assert ds.user_ids.dtype.kind == "i" and ds.user_ids.tolist() == [1, 2, 3]


# ---------------------------------------------------------------------------------------------- arrays


ARRAY_CASES = [
    ("lengths-differ", {"a": {"train": ([0, 1], [0])}}, r"users \(2,\) and items \(1,\) must be 1-D of equal length"),
    ("two-d", {"a": {"train": (np.zeros((2, 2), int), np.zeros((2, 2), int))}}, "must be 1-D"),
    ("ragged", {"a": {"train": ([[0], [1, 2]], [0, 1])}}, "users is not an array"),
    ("negative", {"a": {"train": ([0, -1], [0, 0])}}, r"row 1: negative user id -1"),
    ("fractional-float", {"a": {"train": ([0.5, 1.0], [0, 0])}}, r"row 0: user id 0.5 is not a whole number"),
    ("nan-float", {"a": {"train": ([0.0, math.nan], [0, 0])}}, r"row 1: user id nan is missing \(NaN\)"),
    ("huge-float", {"a": {"train": ([1e300], [0])}}, "too large for a float to hold exactly"),
    ("python-int-2**64", {"a": {"train": ([0, 2**64], [0, 0])}}, "out of range"),
    ("bool", {"a": {"train": ([True], [0])}}, "user ids must be integers or strings, got dtype bool"),
    ("none-in-list", {"a": {"train": (["u", None], [0, 0])}}, r"row 1: user id is missing \(None\)"),
    ("empty-string", {"a": {"train": (["u", ""], [0, 0])}}, "row 1: user id '' is empty"),
    ("one-column", {"a": {"train": ([0, 1],)}}, r"expected \(users, items\[, ratings\[, timestamps\]\]\)"),
    ("five-columns", {"a": {"train": ([0], [0], [1.0], [1.0], [0])}}, "got tuple of length 5"),
    ("a-string", {"a": {"train": "users"}}, "got str"),
    ("unknown-key", {"a": {"train": {"user": [0], "items": [0]}}}, "unknown key 'user'"),
    ("no-items", {"a": {"train": {"users": [0]}}}, "no items; every split needs users and items"),
    ("ratings-length", {"a": {"train": ([0, 1], [0, 1], [1.0])}}, r"ratings \(1,\) must be 1-D with one value per"),
    ("nan-rating", {"a": {"train": ([0, 1], [0, 1], [1.0, math.nan])}}, r"row 1: rating nan is missing \(NaN\)"),
    ("word-rating", {"a": {"train": ([0], [0], ["five"])}}, "rating 'five' is not a number"),
    ("inf-timestamp", {"a": {"train": ([0], [0], None, [math.inf])}}, "timestamp inf is not finite"),
    ("complex-rating", {"a": {"train": ([0], [0], [1j])}}, "ratings must be numbers, got dtype complex128"),
    ("unknown-split", {"a": {"dev": ([0], [0])}}, "unknown split 'dev'"),
    ("no-train", {"a": {"test": ([0], [0])}}, "domain 'a' has no train interactions"),
]


@pytest.mark.parametrize("domains, match", [c[1:] for c in ARRAY_CASES], ids=[c[0] for c in ARRAY_CASES])
def test_from_arrays_bad_input(domains, match):
    _raises(lambda: D.from_arrays(domains), names="domain 'a'", match=match)


@pytest.mark.parametrize(
    "domains, match",
    [
        ([("a", ([0], [0]))], "domains must be a mapping"),
        ({1: {"train": ([0], [0])}}, "domain names must be non-empty strings, got 1"),
        ({"a": [([0], [0])]}, r"domain 'a': expected a mapping \{split: \(users, items\)\}, got list"),
    ],
    ids=["a-list", "int-name", "splits-a-list"],
)
def test_from_arrays_bad_structure(domains, match):
    _raises(lambda: D.from_arrays(domains), names="domain", match=match)


def test_from_arrays_accepts_whole_floats_and_object_ints():
    ds = D.from_arrays({"a": {"train": (np.array([3.0, 1.0]), np.array([7, 8], dtype=object))}})
    assert ds.user_ids.tolist() == [1, 3] and ds.domain("a").item_ids.tolist() == [7, 8]
