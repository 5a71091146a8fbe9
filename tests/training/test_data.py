import hashlib

import numpy as np
import pytest

from tests.conftest import synthetic_digits, write_optdigits
from training.data import DataError, fit_minmax, load_optdigits


def test_load_reads_pixels_and_labels(tmp_path):
    X, y = synthetic_digits(30)
    got_X, got_y = load_optdigits(write_optdigits(tmp_path / "d.tra", X, y))
    assert got_X.shape == (30, 64) and got_y.shape == (30,)
    np.testing.assert_array_equal(got_X, X)
    np.testing.assert_array_equal(got_y, y)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3\n", "expected 65 columns"),
        (",".join(["17"] * 64 + ["1"]) + "\n", "pixel values must be integers in 0..16"),
        (",".join(["1"] * 64 + ["12"]) + "\n", "labels must be integers in 0..9"),
        ("a,b\n", "not a comma-separated numeric file"),
        ("", "no rows"),
    ],
)
def test_load_refuses_bad_files(tmp_path, text, message):
    path = tmp_path / "bad.tra"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_optdigits(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_optdigits(tmp_path / "absent.tra")


def test_minmax_maps_training_range_to_unit_interval():
    X = np.array([[0.0, 2.0, 5.0], [4.0, 2.0, 15.0], [2.0, 2.0, 10.0]])
    lo, scale = fit_minmax(X)
    np.testing.assert_array_equal(lo, [0.0, 2.0, 5.0])
    np.testing.assert_array_equal(scale, [0.25, 1.0, 0.1])  # constant column: scale 1, no 1/0
    Xs = (X - lo) * scale
    np.testing.assert_array_equal(Xs.min(axis=0), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(Xs.max(axis=0), [1.0, 0.0, 1.0])


def test_the_committed_uci_files_are_the_documented_ones():
    from tests.conftest import DATA
    from training.data import DATA_DIR, OPTDIGITS_SHA256

    assert DATA_DIR == DATA
    readme = (DATA / "README.md").read_text()
    for name, rows in (("optdigits.tra", 3823), ("optdigits.tes", 1797)):
        digest = hashlib.sha256((DATA / name).read_bytes()).hexdigest()
        assert digest == OPTDIGITS_SHA256[name]
        assert f"| {name} | {rows} | {digest} |" in readme
        X, y = load_optdigits(DATA / name)
        assert X.shape == (rows, 64) and set(y.tolist()) == set(range(10))


def test_a_changed_uci_file_is_refused(tmp_path):
    from tests.conftest import DATA

    changed = tmp_path / "optdigits.tes"
    text = (DATA / "optdigits.tes").read_text()
    changed.write_text(text.replace("0,", "1,", 1))  # still valid optdigits rows
    with pytest.raises(DataError, match=r"sha256 \w+… is not the UCI file.s"):
        load_optdigits(changed)
    renamed = tmp_path / "other.csv"  # other names are not checked
    renamed.write_text(text.replace("0,", "1,", 1))
    assert load_optdigits(renamed)[0].shape == (1797, 64)


def test_portable_path_is_relative_inside_the_current_directory(tmp_path):
    from training.data import portable_path

    repo = tmp_path / "repo"
    assert portable_path(repo / "models" / "b", cwd=repo) == "models/b"
    assert portable_path("./models/b", cwd=repo) == "models/b"
    assert portable_path("models/b", cwd=repo) == "models/b"
    assert portable_path(f"../{repo.name}/data/d.tra", cwd=repo) == "data/d.tra"
    assert portable_path(repo, cwd=repo) == "."


def test_portable_path_keeps_a_path_outside_the_current_directory_as_given(tmp_path):
    from training.data import portable_path

    repo = tmp_path / "repo"
    # Not just "model_b": that would rebuild into a different directory.
    assert portable_path(tmp_path / "x" / "model_b", cwd=repo) == f"{tmp_path}/x/model_b"
    assert portable_path("../x/model_b", cwd=repo) == "../x/model_b"


def test_portable_path_sees_through_a_symlinked_current_directory(tmp_path):
    from training.data import portable_path

    (tmp_path / "real" / "models").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert portable_path(tmp_path / "real" / "models", cwd=tmp_path / "link") == "models"
    assert portable_path(tmp_path / "link" / "models", cwd=tmp_path / "real") == "models"
