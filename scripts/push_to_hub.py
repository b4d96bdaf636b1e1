#!/usr/bin/env python
"""Push a trained model to the Hugging Face Hub as a segaccel repo (weights, config, model card).

    python scripts/push_to_hub.py work_dirs/quickstart my-org/segformer-quickstart
    python scripts/push_to_hub.py work_dirs/quickstart/best_model my-org/x --private --revision v1

WORK_DIR_OR_MODEL_DIR is a saved model folder (`config.json` + `model.safetensors`) or a training
work dir (its final `model/` is pushed). The repo gets `config.json`, `model.safetensors`, the
training config `config.yaml`, `metrics.json` and a model card with the evaluation results. Log in
first (`hf auth login`) or pass `--token`/set `HF_TOKEN`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from segaccel.hub import push_model_dir  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Push a segaccel model to the Hugging Face Hub.")
    parser.add_argument("path", metavar="WORK_DIR_OR_MODEL_DIR", help="a model folder or a work dir")
    parser.add_argument("repo_id", metavar="REPO_ID", help="the Hub repo, e.g. my-org/segformer-ade")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", help="branch to push to (created from main if missing)")
    parser.add_argument("--commit-message", "--commit_message", dest="commit_message")
    parser.add_argument("--token", help="Hub token (default: the logged-in token or HF_TOKEN)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    url = push_model_dir(
        args.path,
        args.repo_id,
        private=True if args.private else None,
        revision=args.revision,
        commit_message=args.commit_message,
        token=args.token,
    )
    print(f"pushed {args.path} to {args.repo_id}: {url}")
    return url


if __name__ == "__main__":
    main()
