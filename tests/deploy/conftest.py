"""Exported tiny models shared by the runtime, script and demo tests (exporting takes seconds each)."""

import pytest
from export_testing import tiny_model  # on pytest's pythonpath

from segaccel.export import export_model

PALETTE = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [145, 30, 180]]


@pytest.fixture(scope="session")
def fcn_model():
    """A tiny random FCN (ResNetV1c-D8) with class names and a palette."""
    return tiny_model("fcn", palette=PALETTE)


@pytest.fixture(scope="session")
def fcn_onnx(fcn_model, tmp_path_factory):
    """`fcn_model` exported to ONNX (float32): the folder."""
    folder = tmp_path_factory.mktemp("exported") / "fcn-onnx"
    export_model(fcn_model, folder, format="onnx")
    return folder


@pytest.fixture(scope="session")
def segformer_model():
    """A tiny random SegFormer whose preprocessor pads test batches to a multiple of 32."""
    return tiny_model("segformer", data_preprocessor={"test_cfg": {"size_divisor": 32}})


@pytest.fixture(scope="session")
def segformer_onnx(segformer_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported") / "segformer-onnx"
    export_model(segformer_model, folder, format="onnx")
    return folder


@pytest.fixture(scope="session")
def segformer_pt2(segformer_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported") / "segformer-pt2"
    export_model(segformer_model, folder, format="exported-program")
    return folder
