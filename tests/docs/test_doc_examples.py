"""The documentation's examples run, and the README's set-up commands are the ones CI runs.

Every ```python block marked with a `<!-- doc-test -->` line before it, in `docs/**/*.md` and
`README.md`, is executed: the marked blocks of one page in order, in one namespace, as a reader
pasting them one after the other would. Unmarked blocks are illustrations (a Hub repo, a GPU, a
long run) and are not run.

A page runs in a fresh folder laid out like a checkout after the quickstart: `configs/` (the
repository's), `work_dirs/quickstart/model` (the quickstart's model saved as training exports it,
untrained: the examples show how the API is used, not what a model learned) and `image.png` (a
synthetic validation image). The Hugging Face Hub is offline.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- doc-test -->"


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def marked_blocks(page: Path) -> list[tuple[int, str]]:
    """`(first line number, code)` of every marked python block of `page`, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j == len(lines) or lines[j].strip() != "```python":
            raise AssertionError(f"{page}:{i + 1}: {MARKER} must be followed by a ```python block")
        end = next((k for k in range(j + 1, len(lines)) if lines[k].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"{page}:{j + 1}: the ```python block is never closed")
        blocks.append((j + 2, "\n".join(lines[j + 1 : end])))
    return blocks


PAGES = [page for page in doc_pages() if marked_blocks(page)]


def test_the_docs_hold_runnable_examples():
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    for page in ("README.md", "docs/getting-started.md", "docs/dataflow.md", "docs/guides/evaluation.md"):
        assert page in names


@pytest.fixture
def checkout_after_quickstart(tmp_path, monkeypatch, offline_cache):
    import segaccel.models  # noqa: F401  (registers the model parts)
    from segaccel import load_config, load_synthetic_dataset
    from segaccel.data import synthetic_id2label
    from segaccel.registry import MODELS

    (tmp_path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    torch.manual_seed(0)
    model = MODELS.build({**cfg["model"], "id2label": synthetic_id2label()})
    model.save_pretrained(tmp_path / "work_dirs" / "quickstart" / "model")
    image = load_synthetic_dataset(num_train=1, num_val=1)["validation"][0]["image"]
    image.save(tmp_path / "image.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_page_examples_run(page, checkout_after_quickstart):
    namespace: dict = {"__name__": "__doc_example__"}
    torch.manual_seed(0)
    for line, code in marked_blocks(page):
        # padded so that a traceback names the page and the line in it
        exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)


def _commands(text: str) -> list[str]:
    """The shell commands of a ```bash block, one per `&&` part, with `python -m pip` and pip's `-q`
    written as a reader types them."""
    parts = []
    for line in text.replace("\\\n", " ").splitlines():  # continued lines joined
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split("&&"):
            words = shlex.split(part)
            if words[:3] == ["python", "-m", "pip"]:
                words = words[2:]
            if words[:1] == ["python"] and words[1:3] == ["-m", "pytest"]:
                words = words[2:]
            parts.append(" ".join(w for w in words if w != "-q" or words[0] != "pip"))
    return parts


def _setup_commands(page: Path) -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    return [_commands(b) for b in blocks if "pip install torch==" in b]


def test_the_set_up_commands_are_the_ones_ci_runs():
    readme = _setup_commands(ROOT / "README.md")
    assert len(readme) == 2, "the README gives two set-up commands: train the quickstart, run the tests"
    assert readme == _setup_commands(ROOT / "docs" / "getting-started.md")
    train, test = readme
    assert train[-1].startswith("accelerate launch") and "configs/quickstart.yaml" in train[-1]
    # .ci/run runs the second command part by part, in order (other steps may come between them)
    ci = iter(_commands((ROOT / ".ci" / "run").read_text()))
    missing = [part for part in test if part not in ci]  # `in` consumes the iterator: order counts
    assert not missing, f".ci/run does not run {missing} (in the README's order)"
