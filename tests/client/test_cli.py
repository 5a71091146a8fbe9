import numpy as np
import pytest

from client import Client
from client.cli import InputError, main, read_rows
from tests.conftest import assert_same_in_model_precision, synthetic_digits, write_optdigits


@pytest.fixture
def run(sync_transport):
    def _run(*argv: str) -> int:
        return main(
            list(argv), client=Client("http://test", transport=sync_transport, batch_size=40)
        )

    return _run


def test_encode_passes_optdigits_labels_through(run, tmp_path, default_model):
    X, y = synthetic_digits(100)
    src = write_optdigits(tmp_path / "in.csv", X, y)
    assert run("encode", str(src), "-o", str(tmp_path / "out.csv")) == 0
    out = np.loadtxt(tmp_path / "out.csv", delimiter=",")
    assert out.shape == (100, 3)
    np.testing.assert_array_equal(out[:, 2], y)
    assert_same_in_model_precision(out[:, :2], default_model.encode(X))


def test_reconstruct_without_labels_to_stdout(run, tmp_path, capsys, default_model):
    X, _ = synthetic_digits(5)
    src = tmp_path / "in.csv"
    np.savetxt(src, X, fmt="%d", delimiter=",")
    assert run("reconstruct", str(src)) == 0
    out = np.loadtxt(capsys.readouterr().out.splitlines(), delimiter=",")
    X_hat, errors = default_model.reconstruct(X)
    assert out.shape == (5, 65)
    assert_same_in_model_precision(out[:, :64], X_hat)
    assert_same_in_model_precision(out[:, 64], errors)


def test_decode_with_label_column(run, tmp_path):
    src = tmp_path / "codes.csv"
    src.write_text("0.1,0.2,3\n-0.5,0.5,7\n")
    assert run("decode", str(src), "-o", str(tmp_path / "out.csv")) == 0
    out = np.loadtxt(tmp_path / "out.csv", delimiter=",")
    assert out.shape == (2, 65)
    np.testing.assert_array_equal(out[:, 64], [3, 7])
    assert out[:, :64].min() >= 0 and out[:, :64].max() <= 16


def test_bad_file_exits_2_with_message(run, tmp_path, capsys):
    src = tmp_path / "bad.csv"
    src.write_text("1,2,3\n")
    assert run("encode", str(src)) == 2
    assert "rows have 3 columns; expected 64 (or 65 with a label column)" in capsys.readouterr().err
    assert run("encode", str(tmp_path / "absent.csv")) == 2


def test_service_refusal_exits_1_with_message(run, tmp_path, capsys):
    src = tmp_path / "big.csv"
    np.savetxt(src, np.full((1, 64), 20), fmt="%d", delimiter=",")
    assert run("encode", str(src)) == 1
    assert "vectors[0][0]: Value 20.0 is outside [0, 16]" in capsys.readouterr().err


def test_unreachable_service_exits_1(tmp_path, capsys):
    src = tmp_path / "in.csv"
    np.savetxt(src, np.zeros((1, 64)), fmt="%d", delimiter=",")
    assert main(["encode", str(src), "--url", "http://127.0.0.1:9", "--timeout", "2"]) == 1
    assert "digitcode: POST http://127.0.0.1:9/encode:" in capsys.readouterr().err


def test_read_rows_shapes():
    data, labels = read_rows("1,2\n3,4\n", 2)
    assert data.shape == (2, 2) and labels is None
    with pytest.raises(InputError, match="no rows"):
        read_rows("", 2)


def test_unwritable_output_exits_2_with_message(run, tmp_path, capsys):
    src = tmp_path / "in.csv"
    np.savetxt(src, np.zeros((1, 64)), fmt="%d", delimiter=",")
    assert run("encode", str(src), "-o", str(tmp_path / "no" / "such" / "dir.csv")) == 2
    assert "digitcode: cannot write" in capsys.readouterr().err


def test_fractional_label_column_is_kept(run, tmp_path, capsys):
    src = tmp_path / "codes.csv"
    src.write_text("0.1,0.2,7.5\n")
    assert run("decode", str(src)) == 0
    assert capsys.readouterr().out.strip().endswith(",7.5")


def test_url_without_scheme_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["encode", str(tmp_path / "x.csv"), "--url", "127.0.0.1:8000"])
    assert info.value.code == 2
    assert "must start with http:// or https://" in capsys.readouterr().err
