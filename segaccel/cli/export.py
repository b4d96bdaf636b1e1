"""Export a model out of PyTorch: `segaccel export` (also `segaccel-export`, `scripts/export.py`).

    segaccel export work_dirs/quickstart/model exported/quickstart
    segaccel export org/segformer-b0-ade exported/b0 --format exported-program
    segaccel export CONFIG.yaml exported/x --checkpoint work_dirs/x/checkpoints/iter_2000
    segaccel export MODEL exported/x-fp16 --dtype float16

The command itself is `segaccel.export.command` (ONNX or a torch.export ExportedProgram, checked
against PyTorch before it is put in place).
"""

from __future__ import annotations

import sys

from segaccel.export.command import main


def run() -> int:
    """The installed command's entry point."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(run())
