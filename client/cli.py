"""digitcode encode|decode|reconstruct IN.csv [-o OUT.csv] [--url URL]

Reads CSV rows of numbers (no header). For ``encode`` and ``reconstruct`` each row is 64 pixels,
optionally followed by a label column as in the optdigits files; for ``decode`` each row is 2
coordinates, optionally followed by a label. A label column is passed through as the last
output column. Output columns: ``encode`` → z1, z2; ``decode`` → 64 pixels; ``reconstruct`` →
64 pixels, error.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from client._client import DEFAULT_BATCH_SIZE, DEFAULT_URL, Client
from client._exceptions import DigitcodeError
from client._operations import OPERATIONS

__all__ = ["main", "read_rows"]

# Below this many rows a progress bar is noise.
_PROGRESS_MIN_ROWS = 1000


class InputError(ValueError):
    """The input CSV does not have the shape the command needs."""


def read_rows(
    text: str, width: int, source: str = "input"
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """Parse CSV text into data rows and an optional label column.

    Parameters
    ----------
    text : str
        Comma-separated rows without header.
    width : int
        Columns of data per row (64 for pixels, 2 for codes); one more column is a label.

    Returns
    -------
    data : ndarray of shape (n, width)
    labels : ndarray of shape (n,) or None
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "no data": reported below instead
            table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InputError(f"{source}: not comma-separated numbers ({exc})") from None
    if table.shape[0] == 0:
        raise InputError(f"{source}: no rows")
    if table.shape[1] == width:
        return table, None
    if table.shape[1] == width + 1:
        return table[:, :width], table[:, width]
    raise InputError(
        f"{source}: rows have {table.shape[1]} columns; expected {width} "
        f"(or {width + 1} with a label column)"
    )


def _format(table: NDArray[np.float64]) -> str:
    out = io.StringIO()
    # %.17g would round-trip float64 exactly; 10 significant digits is plenty for pixels and
    # codes, and prints integer labels as integers.
    np.savetxt(out, table, delimiter=",", fmt="%.10g")
    return out.getvalue()


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{value!r} must start with http:// or https://")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="digitcode", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=sorted(OPERATIONS))
    p.add_argument("input", help="CSV file, or - for standard input")
    p.add_argument("-o", "--output", help="CSV file to write (default: standard output)")
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
    width = OPERATIONS[args.command].input_width
    try:
        text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text()
        data, labels = read_rows(text, width, args.input)
    except (OSError, InputError) as exc:
        print(f"digitcode: {exc}", file=sys.stderr)
        return 2
    show = not args.no_progress and len(data) >= _PROGRESS_MIN_ROWS
    bar = tqdm(total=len(data), unit="row", desc=args.command, disable=not show, file=sys.stderr)
    try:
        with client or Client(
            args.url, batch_size=args.batch_size, timeout=args.timeout, api_key=args.api_key
        ) as c:
            if args.command == "encode":
                result = c.encode(data, progress=bar.update)
            elif args.command == "decode":
                result = c.decode(data, progress=bar.update)
            else:
                X_hat, errors = c.reconstruct(data, progress=bar.update)
                result = np.column_stack([X_hat, errors])
    except (DigitcodeError, ValueError) as exc:
        print(f"digitcode: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    if labels is not None:
        result = np.column_stack([result, labels])
    csv = _format(result)
    if args.output:
        try:
            Path(args.output).write_text(csv)
        except OSError as exc:
            print(f"digitcode: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
