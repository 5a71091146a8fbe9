"""The service's endpoints as the client sees them: the one table the library and CLI read.

The client talks HTTP only and imports nothing from the service; this mirrors the service's
``service/operations.py`` for the three native endpoints (``tests/digitcode`` checks they agree).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OPERATIONS", "OUTLIERS", "Operation"]


@dataclass(frozen=True)
class Operation:
    """One endpoint: what it reads, and the arrays it answers (``width`` None: one per row).

    A ``.npy`` answer stacks the outputs as columns, in this order.
    """

    path: str
    input_key: str
    input_width: int
    outputs: tuple[tuple[str, int | None], ...]
    npy_accept: str = "application/x-npy"  # the .npy layout asked for
    # Read from the X-Outlier-Threshold header into one value per row (as its last output).
    threshold: bool = False

    def empty_shapes(self) -> list[tuple[int, ...]]:
        """The shape of each output (and of the threshold, if read) for zero rows."""
        shapes: list[tuple[int, ...]] = [(0,) if w is None else (0, w) for _, w in self.outputs]
        return [*shapes, (0,)] if self.threshold else shapes

    def column_slices(self) -> list[slice | int]:
        """Where each output is in a ``.npy`` answer's columns."""
        slices: list[slice | int] = []
        start = 0
        for _, width in self.outputs:
            if width is None:
                slices.append(start)
                start += 1
            else:
                slices.append(slice(start, start + width))
                start += width
        return slices


OPERATIONS: dict[str, Operation] = {
    op.path.strip("/"): op
    for op in (
        Operation("/encode", "vectors", 64, (("latent", 2),)),
        Operation("/decode", "latent", 2, (("vectors", 64),)),
        Operation("/reconstruct", "vectors", 64, (("vectors", 64), ("errors", None))),
    )
}
# /reconstruct's layout 2: with each vector's outlier flag and the threshold that set it.
OUTLIERS = Operation(
    "/reconstruct",
    "vectors",
    64,
    (("vectors", 64), ("errors", None), ("is_outlier", None)),
    "application/x-npy; version=2",
    threshold=True,
)
