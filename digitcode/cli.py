"""digitcode encode|decode|reconstruct IN [-o OUT] [--url URL]

Input
    A ``.npy`` file holds a 2-D array of numbers. Anything else is text, one row per line
    (``-``: standard input): comma-separated, or tab-separated in a ``.tsv`` file or when the
    first line has tabs and no commas. Blank lines are skipped. A first line with a word in it
    (a field with letters that is not a number, like ``p0`` or ``label``) is a header and is
    skipped; ``--header`` skips the first line whatever it holds, ``--no-header`` reads it as
    data. For ``encode`` and ``reconstruct`` each row is 64 pixels, for ``decode`` 2
    coordinates; one more column (a label, as in the optdigits files) is passed through as the
    last output column.
Output
    ``-o`` picks the format by extension in the same way: ``.npy`` (a float64 array), ``.tsv``,
    otherwise CSV; without ``-o``, or with ``-o -``, CSV on standard output. No header line.
    Columns: ``encode`` → z1, z2; ``decode`` → 64 pixels; ``reconstruct`` → 64 pixels, error,
    is_outlier (1 when the error, or the distance to the model's prototypes, is above its
    calibrated threshold, else 0); then the label, if the input had one.
Digits
    The service computes in its model's precision, the ``dtype`` of ``GET /model`` (float32 for
    the default model). The client hands back float64 arrays, but what they hold depends on the
    transport, which the client picks by request size: a JSON answer carries the shortest
    digits of each float32 value and reads back as the float64 nearest those digits
    (``-0.7868897``), a ``.npy`` answer carries the float32 value widened exactly
    (``-0.78688973188...``). Both round to the same float32, the value the model computed, so
    the CLI rounds every output value to the model's dtype and prints the shortest digits that
    read back as that value in that dtype (numpy's shortest repr; 1e-04 style below 0.0001).
    The output is then the same whatever the file size, batch size or transport, and reading it
    back in the model's precision gives the model's values exactly; ``.npy`` output holds those
    values widened to float64. Integral values print without ``.0``. Labels are the input's
    numbers, printed with float64 shortest digits. A service that does not name its dtype is
    treated as float64, which loses nothing.
Errors
    Places are named as the input shows them: ``line`` and ``column`` of a text file (counting
    from 1, header and blank lines included), ``[row, column]`` indices (from 0) of a ``.npy``
    array. Each message goes to standard error on a line of its own, after the progress bar is
    closed. Exit status: 0 done, 1 the service refused or failed, 2 unusable input, output or
    arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from digitcode._client import DEFAULT_BATCH_SIZE, DEFAULT_URL, Client
from digitcode._exceptions import APIError, ClientError, DigitcodeError, describe_detail
from digitcode._operations import OPERATIONS

__all__ = ["InputError", "Table", "main", "read_input", "read_rows"]

# Below this many rows a progress bar is noise.
_PROGRESS_MIN_ROWS = 1000
_SHOWN = 3  # service errors spelled out, one a line; the rest are counted
STDIN = "standard input"


class InputError(ValueError):
    """The input does not have the shape the command needs."""


@dataclass(frozen=True)
class Table:
    """The rows read from one input, and where each came from.

    Attributes
    ----------
    data : ndarray of shape (n, width)
    labels : ndarray of shape (n,) or None
        The extra last column, if the rows had one.
    lines : ndarray of shape (n,) or None
        The line of the file each row was read from, counting from 1; None for a ``.npy`` array.
    source : str
        The input's name in messages.
    """

    data: NDArray[np.float64]
    labels: NDArray[np.float64] | None
    lines: NDArray[np.int64] | None
    source: str

    def where(self, row: int, column: int | None = None) -> str:
        """``row`` (and ``column``), counted from 0 in ``data``, as the input file shows them."""
        if self.lines is None:
            index = f"{row}" if column is None else f"{row}, {column}"
            return f"{self.source}[{index}]"
        place = f"{self.source}, line {self.lines[row]}"
        return place if column is None else f"{place}, column {column + 1}"


def _split_columns(
    table: NDArray[np.float64], width: int, source: str
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    if table.shape[1] == width:
        return table, None
    if table.shape[1] == width + 1:
        return table[:, :width], table[:, width]
    raise InputError(
        f"{source}: rows have {table.shape[1]} columns; expected {width} "
        f"(or {width + 1} with a label column)"
    )


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _is_word(field: str) -> bool:
    """A column name: not a number, and with letters (``1;2`` is a mistake, not a name)."""
    return any(c.isalpha() for c in field) and not _is_number(field)


def _bad_line(numbered: list[tuple[int, str]], sep: str, source: str) -> InputError:
    """The first problem in rows numpy could not read, named by line and column."""
    first_line, first = numbered[0]
    expected = len(first.split(sep))
    separated = "tab" if sep == "\t" else "comma"
    for line, text in numbered:
        fields = text.split(sep)
        for column, field in enumerate(fields, 1):
            if not field.strip():
                return InputError(f"{source}, line {line}, column {column}: empty")
            if not _is_number(field):
                other = "\t" if sep == "," else ","
                hint = f" ({separated}s separate the columns here)" if other in field else ""
                return InputError(
                    f"{source}, line {line}, column {column}: {field.strip()!r} is not a number"
                    + hint
                )
        if len(fields) != expected:
            return InputError(
                f"{source}, line {line}: {len(fields)} columns, "
                f"but line {first_line} has {expected}"
            )
    return InputError(f"{source}: not {separated}-separated numbers")


def read_rows(
    text: str,
    width: int,
    source: str = "input",
    *,
    header: bool | None = None,
    separator: str | None = None,
) -> Table:
    """Parse text rows of numbers into data rows and an optional label column.

    Parameters
    ----------
    text : str
        One row per line; blank lines are skipped.
    width : int
        Columns of data per row (64 for pixels, 2 for codes); one more column is a label.
    source : str
        The input's name in messages.
    header : bool, optional
        Whether the first line is a header to skip; None: when one of its fields is a word (not
        a number, and with letters).
    separator : str, optional
        ``","`` or ``"\\t"``; None: tabs when the first line has tabs and no commas, else commas.

    Raises
    ------
    InputError
        Naming the line and column at fault, counting from 1.
    """
    numbered = [(n, line) for n, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1)]
    numbered = [(n, line) for n, line in numbered if line.strip()]
    if not numbered:
        raise InputError(f"{source}: no rows")
    first = numbered[0][1]
    sep = separator or ("\t" if "\t" in first and "," not in first else ",")
    if header is None:
        header = any(_is_word(field) for field in first.split(sep))
    if header:
        numbered = numbered[1:]
        if not numbered:
            raise InputError(f"{source}: no rows after the header line")
    try:
        table = np.loadtxt(
            [line for _, line in numbered], delimiter=sep, dtype=np.float64, ndmin=2, comments=None
        )
    except ValueError:
        raise _bad_line(numbered, sep, source) from None
    data, labels = _split_columns(table, width, source)
    return Table(data, labels, np.array([n for n, _ in numbered], dtype=np.int64), source)


def _read_npy(path: str, width: int) -> Table:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError):  # not a .npy file, truncated, or holding Python objects
        raise InputError(f"{path}: not a .npy file of numbers") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise InputError(f"{path}: holds {kind}, not numbers")
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise InputError(f"{path}: a {array.ndim}-D array; expected rows of numbers (2-D)")
    if array.shape[0] == 0:
        raise InputError(f"{path}: no rows")
    data, labels = _split_columns(array.astype(np.float64), width, path)
    return Table(data, labels, None, path)


def _separator(path: str) -> str | None:
    return "\t" if Path(path).suffix.lower() == ".tsv" else None


def read_input(path: str, width: int, header: bool | None = None) -> Table:
    """The rows of ``path``: a ``.npy`` file, other files as text, ``-`` standard input."""
    if path == "-":
        return read_rows(sys.stdin.read(), width, STDIN, header=header)
    if Path(path).suffix.lower() == ".npy":
        return _read_npy(path, width)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not text (a NumPy array file must be named *.npy)") from None
    return read_rows(text, width, path, header=header, separator=_separator(path))


def _texts(values: NDArray[Any]) -> NDArray[np.str_]:
    """The shortest digits that read back as each value in its own dtype, ``16`` not ``16.0``."""
    texts = values.astype(str)
    return np.where(np.strings.endswith(texts, ".0"), np.strings.slice(texts, 0, -2), texts)


def write_output(
    path: str | None, values: NDArray[Any], labels: NDArray[np.float64] | None
) -> None:
    """``values`` (in the model's dtype) and the labels, in the format ``path``'s extension names.

    ``path`` None or ``-``: CSV on standard output.
    """
    suffix = "" if path is None or path == "-" else Path(path).suffix.lower()
    if path is not None and suffix == ".npy":
        table = values.astype(np.float64)
        if labels is not None:
            table = np.column_stack([table, labels])
        with open(path, "wb") as f:
            np.save(f, table, allow_pickle=False)
        return
    cells = _texts(values)
    if labels is not None:
        cells = np.column_stack([cells, _texts(labels)])
    sep = "\t" if suffix == ".tsv" else ","
    text = "".join(sep.join(row) + "\n" for row in cells.tolist())
    if path is None or path == "-":
        sys.stdout.write(text)
    else:
        Path(path).write_text(text)


def _model_dtype(client: Client) -> np.dtype[Any]:
    """The precision the served model computes in; float64 if the service does not say."""
    try:
        declared = client.model_info().get("dtype")
    except ClientError:  # a service without GET /model
        declared = None
    return np.dtype(np.float32 if declared == "float32" else np.float64)


def _compute(
    client: Client, command: str, data: NDArray[np.float64], progress: Callable[[int], None]
) -> NDArray[np.float64]:
    if command == "encode":
        return client.encode(data, progress=progress)
    if command == "decode":
        return client.decode(data, progress=progress)
    vectors, errors, is_outlier, _ = client.outliers(data, progress=progress)
    return np.column_stack([vectors, errors, is_outlier])


def _describe(exc: DigitcodeError | ValueError, table: Table) -> list[str]:
    """One line per error, with the service's row numbers turned into the input's places."""
    if not isinstance(exc, APIError) or not isinstance(exc.detail, list) or not exc.detail:
        return [str(exc)]
    lines = []
    for item in exc.detail[:_SHOWN]:
        loc = item.get("loc") if isinstance(item, dict) else None
        numbers = [p for p in loc if type(p) is int] if isinstance(loc, list) else []
        if not numbers or not 0 <= numbers[0] < len(table.data):
            lines.append(f"HTTP {exc.status_code}: {describe_detail([item])}")
            continue
        column = numbers[1] if len(numbers) > 1 else None
        lines.append(f"{table.where(numbers[0], column)}: {item.get('msg', '')}")
    if len(exc.detail) > _SHOWN:
        lines.append(f"and {len(exc.detail) - _SHOWN} more")
    return lines


def _error(*lines: str) -> None:
    for line in lines:
        print(f"digitcode: {line}", file=sys.stderr)


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{value!r} must start with http:// or https://")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="digitcode", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=sorted(OPERATIONS))
    p.add_argument("input", help=".csv, .tsv or .npy file, or - for CSV on standard input")
    p.add_argument(
        "-o",
        "--output",
        help=".csv, .tsv or .npy file to write, or - (default): CSV on standard output",
    )
    p.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        help="whether the first line of a text input is a header (default: if it has words)",
    )
    p.add_argument(
        "--url",
        type=_url,
        default=os.environ.get("DIGITCODE_URL", DEFAULT_URL),
        help=f"service address (default: $DIGITCODE_URL or {DEFAULT_URL})",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("DIGITCODE_API_KEY"),
        help="sent as X-API-Key (default: $DIGITCODE_API_KEY)",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per request")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    return p


def main(argv: Sequence[str] | None = None, client: Client | None = None) -> int:
    """Run the command line; ``client`` lets tests inject one bound to an in-process app."""
    args = _parser().parse_args(argv)
    try:
        table = read_input(args.input, OPERATIONS[args.command].input_width, args.header)
    except (OSError, InputError) as exc:
        _error(str(exc))
        return 2
    show = not args.no_progress and len(table.data) >= _PROGRESS_MIN_ROWS
    bar = tqdm(
        total=len(table.data), unit="row", desc=args.command, disable=not show, file=sys.stderr
    )
    try:
        with client or Client(
            args.url, batch_size=args.batch_size, timeout=args.timeout, api_key=args.api_key
        ) as c:
            result = _compute(c, args.command, table.data, bar.update)
            dtype = _model_dtype(c)
    except (DigitcodeError, ValueError) as exc:
        bar.close()  # ends the bar's line, so the message starts its own
        _error(*_describe(exc, table))
        return 1
    finally:
        bar.close()
    try:
        write_output(args.output, result.astype(dtype), table.labels)
    except OSError as exc:
        _error(f"cannot write {args.output}: {exc.strerror}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
