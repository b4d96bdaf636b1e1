"""Array kernels of the transforms."""

import numpy as np
import torch

from segaccel.data.transforms import resize_image


def test_resize_does_not_depend_on_the_thread_count():
    # DataLoader workers run torch with one thread, the main process with several: same pixels.
    img = np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        many = [resize_image(img, size) for size in ((200, 263), (48, 65))]
        torch.set_num_threads(1)
        one = [resize_image(img, size) for size in ((200, 263), (48, 65))]
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(a, b) for a, b in zip(many, one))
