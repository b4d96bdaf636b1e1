#!/usr/bin/env python
"""Export a model out of PyTorch: ONNX (onnxruntime) or a torch.export ExportedProgram.

    python scripts/export.py work_dirs/quickstart/model exported/quickstart
    python scripts/export.py org/segformer-b0-ade exported/b0 --format exported-program
    python scripts/export.py CONFIG.yaml exported/x --checkpoint work_dirs/x/checkpoints/iter_2000
    python scripts/export.py MODEL exported/x-fp16 --dtype float16

The graph takes uint8 images `(N, 3, H, W)` (any batch, height and width; normalisation inside) and a
padding mask, and returns logits. OUT_DIR gets the graph, the `config.json` the runtime needs
(`segaccel.deploy`) and the model's `config.yaml`/`metrics.json`; it is checked against PyTorch (the
max difference is printed) before it is put in place. Run it with
`python scripts/test.py OUT_DIR`, `python scripts/infer.py IMAGES --model OUT_DIR` or
`python scripts/demo.py OUT_DIR`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from segaccel.export.command import main  # noqa: E402

if __name__ == "__main__":
    main()
