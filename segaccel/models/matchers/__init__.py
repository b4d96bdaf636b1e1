"""Matchers: which prediction answers which ground truth (set prediction)."""

from segaccel.models.matchers.hungarian import HungarianMatcher, linear_assignment

__all__ = ["HungarianMatcher", "linear_assignment"]
