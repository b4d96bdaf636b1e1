"""Every public name of `segaccel` resolves (they are imported lazily)."""

import segaccel


def test_public_names_resolve_to_their_objects():
    from segaccel.models.segmentor import Segmentor
    from segaccel.structures import SegDataSample

    for name in segaccel.__all__:
        assert getattr(segaccel, name) is not None, name
    assert segaccel.Segmentor is Segmentor and segaccel.SegDataSample is SegDataSample
    assert "inference_model" in dir(segaccel)
