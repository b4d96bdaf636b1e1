"""Push a trained model to the Hugging Face Hub as a segaccel repo (weights, config, model card).

    python scripts/push_to_hub.py work_dirs/quickstart my-org/segformer-quickstart
    python scripts/push_to_hub.py work_dirs/quickstart/best_model my-org/x --private --revision v1

WORK_DIR_OR_MODEL_DIR is a saved model folder (`config.json` + `model.safetensors`) or a training
work dir (its final `model/` is pushed). The repo gets `config.json`, `model.safetensors`, the
training config `config.yaml`, `metrics.json` and a model card with the evaluation results. Log in
first (`hf auth login`) or pass `--token`/set `HF_TOKEN`.

With `--space`, REPO_ID is a Gradio Space serving the model instead (`app.py`, `requirements.txt`,
README front-matter `sdk: gradio`, the model exported to ONNX and run by onnxruntime, `--examples`):

    python scripts/push_to_hub.py work_dirs/quickstart my-org/quickstart-demo --space --examples imgs/
    python scripts/push_to_hub.py exported/quickstart my-org/x --space --space-dir space/ --no-push
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segaccel.hub import push_model_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Push a segaccel model to the Hugging Face Hub.")
    parser.add_argument("path", metavar="WORK_DIR_OR_MODEL_DIR", help="a model folder or a work dir")
    parser.add_argument("repo_id", metavar="REPO_ID", help="the Hub repo, e.g. my-org/segformer-ade")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", help="branch to push to (created from main if missing)")
    parser.add_argument("--commit-message", "--commit_message", dest="commit_message")
    parser.add_argument("--token", help="Hub token (default: the logged-in token or HF_TOKEN)")
    space = parser.add_argument_group("a Gradio Space serving the model (--space)")
    space.add_argument("--space", action="store_true", help="REPO_ID is a Space: build and push a demo")
    space.add_argument("--space-dir", help="write the Space folder here (default: a temporary folder)")
    space.add_argument("--no-push", dest="push", action="store_false", help="only write --space-dir")
    space.add_argument("--examples", nargs="*", default=(), help="example images (files or folders)")
    space.add_argument("--title", help="the Space's title")
    space.add_argument("--model-repo-id", help="the model's Hub repo, linked in the Space's metadata")
    space.add_argument(
        "--segaccel-requirement", help="pip spec of segaccel for requirements.txt (default: bundled source)"
    )
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if args.space or args.space_dir:
        return push_space_command(args)
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


def push_space_command(args: argparse.Namespace) -> str:
    """Build the Space folder (`segaccel.hub.space.build_space`) and push it (unless --no-push)."""
    import tempfile

    from segaccel.hub.space import build_space, push_space

    if not args.push and not args.space_dir:
        raise SystemExit("--no-push needs --space-dir (where to write the Space folder)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_space(
            args.path,
            args.space_dir or Path(tmp) / "space",
            title=args.title,
            examples=args.examples,
            model_repo_id=args.model_repo_id,
            segaccel_requirement=args.segaccel_requirement,
        )
        print(f"wrote the Space folder {folder}")
        if not args.push:
            return str(folder)
        private = True if args.private else None
        message = args.commit_message
        url = push_space(folder, args.repo_id, private=private, token=args.token, commit_message=message)
    print(f"pushed the Space {args.repo_id}: {url}")
    return url


def run() -> int:
    """The installed command's entry point."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(run())
