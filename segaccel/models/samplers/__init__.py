"""Pixel samplers: which pixels a decode head's losses train on."""

from segaccel.models.samplers.ohem_pixel_sampler import OHEMPixelSampler

__all__ = ["OHEMPixelSampler"]
