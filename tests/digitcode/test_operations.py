"""The client's table of endpoints agrees with the service's (the client cannot import it)."""

from digitcode._operations import OPERATIONS, OUTLIERS
from service.operations import NATIVE


def test_the_client_knows_every_native_endpoint_as_the_service_defines_it():
    assert {op.path for op in OPERATIONS.values()} == set(NATIVE)
    for name, op in OPERATIONS.items():
        service_op = NATIVE[op.path]
        assert op.path == f"/{name}"
        assert (op.input_key, op.input_width) == (
            service_op.signature.input.key,
            service_op.signature.input.width,
        )
        assert op.outputs == _outputs(service_op.npy_answer(1), service_op)
    # The .npy layout 2 of /reconstruct, with the outlier flags.
    reconstruct = NATIVE["/reconstruct"]
    assert OUTLIERS.path == reconstruct.path and OUTLIERS.npy_accept.endswith("version=2")
    assert OUTLIERS.outputs == _outputs(reconstruct.npy_answer(2), reconstruct)


def _outputs(answer, service_op):
    return tuple((key, service_op.signature.output(output).width) for key, output in answer)


def test_npy_columns_follow_the_outputs():
    reconstruct = OPERATIONS["reconstruct"]
    assert reconstruct.column_slices() == [slice(0, 64), 64]
    assert reconstruct.empty_shapes() == [(0, 64), (0,)]
    assert OPERATIONS["encode"].column_slices() == [slice(0, 2)]
