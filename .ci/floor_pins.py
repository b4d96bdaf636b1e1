"""Print the pip requirements of the minimum-versions check: every lower bound in pyproject.toml
(runtime dependencies, the timm/tensorboard/evaluate extras, and transformers from dev) pinned with
`==`, plus the companions those pins need, each with its reason below."""

import re
import sys
from pathlib import Path

import tomllib

# Packages pyproject.toml does not name, pinned so that the floors install and import together.
COMPANIONS = {
    "torchvision": ("0.21.0", "timm imports torchvision; 0.21 is the release built for torch 2.6"),
    "pyarrow": ("21.0.0", "the floor datasets 4.1 declares; newer pyarrow refuses NumPy < 2 at import"),
}
EXTRAS = ("timm", "tensorboard", "evaluate")
DEV_RUNTIME = ("transformers",)  # test-only, but its floor is declared: the parity tests run on it


def floors(project: dict) -> dict[str, str]:
    specs = list(project["dependencies"])
    for extra in EXTRAS:
        specs += project["optional-dependencies"][extra]
    specs += [s for s in project["optional-dependencies"]["dev"] if s.split(">")[0] in DEV_RUNTIME]
    pins = {}
    for spec in specs:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)", spec.strip())
        if not match:
            sys.exit(f"pyproject.toml: {spec!r} has no plain >= lower bound to pin")
        pins[match[1]] = match[2]
    return pins


if __name__ == "__main__":
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    pins = floors(project) | {name: version for name, (version, _) in COMPANIONS.items()}
    print(" ".join(f"{name}=={version}" for name, version in pins.items()))
