"""`scripts/benchmark.py metric` on tiny inputs: both methods agree, and the padding measurement runs."""

import argparse

from evaluation_helpers import pointwise_segmentor, tiny_segformer

from segaccel.benchmark import metric as bench


def test_metric_benchmark_rows(capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    rows = bench.run(
        parser.parse_args(["--num-images", "3", "--size", "16", "24", "--num-classes", "5", "--repeats", "1"])
    )
    assert [row["method"].split()[0] for row in rows] == ["numpy", "IoUMetric"]
    assert rows[0]["median_ms"] > 0 and rows[1]["median_ms"] > 0
    assert "mIoU" in capsys.readouterr().out


def test_padding_effect_is_zero_for_a_pointwise_model_and_measured_for_attention():
    pointwise_model = pointwise_segmentor()
    pointwise = bench.padding_effect(pointwise_model, side=40, min_size=10, num_images=6, batch_size=3)
    assert pointwise["padded_further_in_batch"] > 0
    assert pointwise["changed_pixels"] == 0.0 and pointwise["alone"] == pointwise["batched"]
    attention = bench.padding_effect(tiny_segformer(), side=40, min_size=10, num_images=6, batch_size=3)
    assert 0.0 <= attention["changed_pixels"] <= 1.0 and attention["max_prob_diff"] > 0
