"""OHEMPixelSampler when `thresh` lies below the `min_kept`-th smallest true-class probability.

MMSegmentation's rule: the threshold is `max(thresh, p[k])`, `p` the sorted probabilities of the valid
pixels and `k = min_kept * N`, and pixels with a probability strictly below it are kept. So when
`thresh` is low, exactly the `k` hardest pixels are kept: an off-by-one in that comparison (`p[k - 1]`,
or `<=`) keeps one pixel fewer or one more, which a `thresh` between `p[k - 1]` and `p[k]` never shows.
"""

from __future__ import annotations

import pytest
import torch

from segaccel.models import OHEMPixelSampler
from segaccel.models.heads.decode_head import BaseDecodeHead


class IdentityHead(BaseDecodeHead):
    def forward(self, inputs):
        return inputs[self.in_index]


# true-class (class 0) probabilities of a 1 x 8 image; the last pixel is ignored (its 0.05 never counts)
P_TRUE = [0.9, 0.2, 0.6, 0.4, 0.8, 0.3, 0.7, 0.05]
LABEL = torch.tensor([[[0, 0, 0, 0, 0, 0, 0, 255]]])  # (N, H, W)
# valid probabilities sorted: 0.2 0.3 0.4 0.6 0.7 0.8 0.9


def logits() -> torch.Tensor:
    """(1, 2, 1, 8) logits whose softmax gives class 0 the probabilities P_TRUE."""
    p = torch.tensor(P_TRUE, dtype=torch.float64)
    return torch.stack([p.log(), (1 - p).log()]).reshape(1, 2, 1, 8).float()


@pytest.mark.parametrize(
    ("min_kept", "thresh", "kept"),
    [
        (3, 0.01, [0.2, 0.3, 0.4]),  # threshold p[3] = 0.6: exactly the 3 hardest
        (2, 0.01, [0.2, 0.3]),  # p[2] = 0.4
        (5, 0.1, [0.2, 0.3, 0.4, 0.6, 0.7]),  # p[5] = 0.8
        (3, 0.65, [0.2, 0.3, 0.4, 0.6]),  # thresh above p[3]: everything under 0.65
        (10, 0.01, [0.2, 0.3, 0.4, 0.6, 0.7, 0.8]),  # fewer valid pixels than min_kept: p[last] = 0.9
    ],
)
def test_a_low_thresh_keeps_exactly_the_min_kept_hardest_pixels(min_kept, thresh, kept):
    head = IdentityHead(2, 2, num_classes=2, in_index=0, dropout_ratio=0.0)
    weight = OHEMPixelSampler(head, thresh=thresh, min_kept=min_kept).sample(logits(), LABEL)
    expected = [1.0 if p in kept else 0.0 for p in P_TRUE[:-1]] + [0.0]
    assert weight.shape == (1, 1, 8)
    assert weight[0, 0].tolist() == expected
