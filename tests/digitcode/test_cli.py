import io
import re

import numpy as np
import pytest

from digitcode import Client
from digitcode.cli import InputError, main, read_rows
from service.app import create_app
from service.repository import load_repository
from service.settings import Settings
from tests.conftest import (
    DATA,
    assert_same_in_model_precision,
    synthetic_digits,
    write_optdigits,
)
from tests.digitcode.conftest import transport_into
from training.data import load_optdigits

HEADER = ",".join([f"p{i}" for i in range(64)] + ["label"])


@pytest.fixture
def run(sync_transport):
    """The CLI against the app in-process; ``binary_from`` as the client takes it."""

    def _run(*argv: str, binary_from: int | None = 100) -> int:
        client = Client(
            "http://test", transport=sync_transport, batch_size=40, binary_from=binary_from
        )
        return main(list(argv), client=client)

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
    # Four real test digits and one that is nothing like a digit: an is_outlier column of both.
    X = np.vstack([load_optdigits(DATA / "optdigits.tes")[0][:4], np.full(64, 16.0)])
    src = tmp_path / "in.csv"
    np.savetxt(src, X, fmt="%d", delimiter=",")
    assert run("reconstruct", str(src)) == 0
    out = np.loadtxt(capsys.readouterr().out.splitlines(), delimiter=",")
    X_hat, errors = default_model.reconstruct(X)
    assert out.shape == (5, 66)
    assert_same_in_model_precision(out[:, :64], X_hat)
    assert_same_in_model_precision(out[:, 64], errors)
    assert out[:, 65].tolist() == (errors > default_model.threshold).tolist()
    assert 0 < out[:, 65].sum() < 5


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
    assert f"digitcode: {src}, line 1, column 1: Value 20.0 is outside [0, 16]" in (
        capsys.readouterr().err
    )


def test_unreachable_service_exits_1(tmp_path, capsys):
    src = tmp_path / "in.csv"
    np.savetxt(src, np.zeros((1, 64)), fmt="%d", delimiter=",")
    assert main(["encode", str(src), "--url", "http://127.0.0.1:9", "--timeout", "2"]) == 1
    assert "digitcode: POST http://127.0.0.1:9/encode:" in capsys.readouterr().err


def test_read_rows_shapes():
    table = read_rows("1,2\n3,4\n", 2)
    assert table.data.shape == (2, 2) and table.labels is None
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


# -- Headers, formats, standard streams


def _optdigits_text(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    X, y = synthetic_digits(n)
    rows = np.column_stack([X, y]).astype(int)
    return X, y, "".join(",".join(map(str, row)) + "\n" for row in rows)


def _csv(X: np.ndarray) -> str:
    return "".join(",".join(f"{v:g}" for v in row) + "\n" for row in X)


def test_header_line_is_detected_and_skipped(run, tmp_path):
    _, _, text = _optdigits_text(5)
    plain, headed = tmp_path / "plain.csv", tmp_path / "headed.csv"
    plain.write_text(text)
    headed.write_text(HEADER + "\n" + text)
    assert run("encode", str(plain), "-o", str(tmp_path / "a.csv")) == 0
    assert run("encode", str(headed), "-o", str(tmp_path / "b.csv")) == 0
    assert (tmp_path / "b.csv").read_text() == (tmp_path / "a.csv").read_text()


def test_header_options_override_detection(run, tmp_path, capsys):
    _, _, text = _optdigits_text(5)
    headed, numbered = tmp_path / "headed.csv", tmp_path / "numbered.csv"
    headed.write_text(HEADER + "\n" + text)
    numbered.write_text(",".join(str(i) for i in range(65)) + "\n" + text)  # numeric header
    assert run("encode", str(headed), "--no-header") == 2
    assert f"digitcode: {headed}, line 1, column 1: 'p0' is not a number" in (
        capsys.readouterr().err
    )
    assert run("encode", str(numbered), "--header") == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


def test_unreadable_field_names_its_line_and_column(run, tmp_path, capsys):
    _, _, text = _optdigits_text(3)
    lines = text.splitlines()
    fields = lines[1].split(",")
    lines[1] = ",".join([fields[0], "x", *fields[2:]])
    src = tmp_path / "in.csv"
    src.write_text(HEADER + "\n\n" + "\n".join(lines) + "\n")  # a header and a blank line
    assert run("encode", str(src)) == 2
    err = capsys.readouterr().err
    assert f"digitcode: {src}, line 4, column 2: 'x' is not a number" in err
    assert "float64" not in err and "usecols" not in err


def test_ragged_row_names_its_line(run, tmp_path, capsys):
    _, _, text = _optdigits_text(3)
    lines = text.splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]
    src = tmp_path / "in.csv"
    src.write_text("\n".join(lines) + "\n")
    assert run("encode", str(src)) == 2
    assert f"{src}, line 3: 64 columns, but line 1 has 65" in capsys.readouterr().err


def test_tsv_input_and_output(run, tmp_path):
    _, _, text = _optdigits_text(5)
    (tmp_path / "in.csv").write_text(text)
    (tmp_path / "in.tsv").write_text(text.replace(",", "\t"))
    assert run("encode", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv")) == 0
    assert run("encode", str(tmp_path / "in.tsv"), "-o", str(tmp_path / "out.tsv")) == 0
    tsv = (tmp_path / "out.tsv").read_text()
    assert "\t" in tsv and "," not in tsv
    assert tsv.replace("\t", ",") == (tmp_path / "out.csv").read_text()


def test_npy_input_and_output(run, tmp_path, default_model):
    X, y = synthetic_digits(5)
    np.save(tmp_path / "in.npy", np.column_stack([X, y]))
    assert run("reconstruct", str(tmp_path / "in.npy"), "-o", str(tmp_path / "out.npy")) == 0
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (5, 67) and out.dtype == np.float64
    np.testing.assert_array_equal(out[:, 66], y)
    X_hat, errors = default_model.reconstruct(X)
    assert_same_in_model_precision(out[:, :64], X_hat)
    assert_same_in_model_precision(out[:, 64], errors)


def test_npy_input_error_names_the_array_index(run, tmp_path, capsys):
    X = np.zeros((3, 64))
    X[2, 5] = 20
    np.save(tmp_path / "in.npy", X)
    assert run("encode", str(tmp_path / "in.npy")) == 1
    assert f"digitcode: {tmp_path / 'in.npy'}[2, 5]: Value 20.0" in capsys.readouterr().err


def test_stdin_and_stdout_dash(run, tmp_path, monkeypatch, capsys):
    _, _, text = _optdigits_text(5)
    (tmp_path / "in.csv").write_text(text)
    assert run("encode", str(tmp_path / "in.csv")) == 0
    expected = capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(HEADER + "\n" + text))
    assert run("encode", "-", "-o", "-") == 0
    assert capsys.readouterr().out == expected
    monkeypatch.setattr("sys.stdin", io.StringIO(text.replace(",", "\t")))  # tabs, detected
    assert run("encode", "-") == 0
    assert capsys.readouterr().out == expected


# -- Where errors point, and where they are printed


@pytest.mark.parametrize("binary_from", [None, 1], ids=["json", "npy"])
def test_service_error_names_the_files_line(run, tmp_path, capsys, binary_from):
    X, _ = synthetic_digits(100)
    X[57, 9] = 20  # the second batch of 40
    src = tmp_path / "in.csv"
    src.write_text("p" + ",p".join(map(str, range(63))) + "\n\n" + _csv(X))
    assert run("encode", str(src), binary_from=binary_from) == 1
    # data row 57 is line 60: after a header, a blank line and 57 rows
    assert f"digitcode: {src}, line 60, column 10: Value 20.0 is outside" in (
        capsys.readouterr().err
    )


def test_error_is_not_on_the_progress_bars_line(run, tmp_path, capsys):
    X, _ = synthetic_digits(1000)
    X[500, 0] = 20
    src = tmp_path / "in.csv"
    src.write_text(_csv(X))
    assert run("encode", str(src)) == 1
    err = capsys.readouterr().err
    assert "| 0/1000 [" in err  # the bar was drawn
    assert re.search(r"(^|\n)digitcode: ", err)  # and the message starts a line
    assert "line 501, column 1: Value 20.0" in err


# -- Output digits


def test_same_digits_whatever_the_transport(run, tmp_path, capsys):
    X, _ = synthetic_digits(5)
    src = tmp_path / "in.csv"
    src.write_text(_csv(X))
    outputs = []
    for binary_from in (None, 1):  # JSON answers, then .npy answers
        assert run("reconstruct", str(src), binary_from=binary_from) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    cells = [c for line in outputs[0].splitlines() for c in line.split(",")]
    # the float32 model's values, each with the shortest digits that read back as it
    assert all(c == str(np.float32(c)).removesuffix(".0") for c in cells)
    significant = [c.lstrip("-").split("e")[0].replace(".", "").strip("0") for c in cells]
    assert max(map(len, significant)) <= 9


@pytest.fixture
def float64_transport(tiny_model_dir):
    """The app serving the tiny test model, which computes in float64."""
    app = create_app(
        Settings(model_dir=tiny_model_dir, max_batch=40),
        repository=load_repository(tiny_model_dir)[0],
    )
    with transport_into(app) as transport:
        yield transport


def test_float64_model_prints_every_digit(float64_transport, tmp_path, capsys):
    X, _ = synthetic_digits(5)
    src = tmp_path / "in.csv"
    src.write_text(_csv(X))
    outputs, answers = [], []
    for binary_from in (None, 1):
        with Client("http://test", transport=float64_transport, binary_from=binary_from) as c:
            assert c.model_info()["dtype"] == "float64"
            answers.append(c.encode(X))
            assert main(["encode", str(src)], client=c) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    printed = np.loadtxt(outputs[0].splitlines(), delimiter=",")
    np.testing.assert_array_equal(printed, answers[1])  # no digit lost


def test_unusable_npy_and_separator_mistakes_are_named(run, tmp_path, capsys):
    (tmp_path / "text.npy").write_text("1,2\n")
    assert run("decode", str(tmp_path / "text.npy")) == 2
    assert "text.npy: not a .npy file of numbers" in capsys.readouterr().err
    (tmp_path / "commas.tsv").write_text("0.1,0.2\n")  # not a header: no words in it
    assert run("decode", str(tmp_path / "commas.tsv")) == 2
    assert "commas.tsv, line 1, column 1: '0.1,0.2' is not a number (tabs separate" in (
        capsys.readouterr().err
    )
