"""FLOP counting counts attention on the CPU (PyTorch's counter has no formula for its CPU kernel)."""

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from segaccel.benchmark.flops import register_cpu_attention_flops


def test_cpu_attention_is_counted_as_pytorch_counts_the_cuda_kernels():
    register_cpu_attention_flops()
    register_cpu_attention_flops()  # once is enough; twice is harmless
    q, k = torch.randn(2, 3, 70, 16), torch.randn(2, 3, 50, 16)
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, k, k)
    assert counter.get_total_flops() == 2 * (2 * 2 * 3 * 70 * 50 * 16)  # Q K^T and A V, 2 FLOPs a MAC
    with FlopCounterMode(display=False) as counter:
        torch.softmax(q @ k.transpose(-1, -2) / 4, -1) @ k  # the same attention written as matmuls
    assert counter.get_total_flops() == 2 * (2 * 2 * 3 * 70 * 50 * 16)
