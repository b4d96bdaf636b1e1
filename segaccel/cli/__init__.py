"""The installed commands: `segaccel train|test|infer|export|benchmark|...` (`segaccel.cli.main`), also
`segaccel-train`, `segaccel-test`, `segaccel-infer`, `segaccel-export`, `segaccel-benchmark`.

One module per command, each with `main(argv)` (returns what the command computed, for code and
tests) and `run()` (the entry point, returns the exit status); `scripts/<module>.py` in a clone are
thin wrappers over them. Several processes: `accelerate launch -m segaccel.cli.train CONFIG ...`.
Every command that reads a config takes `key=value` overrides anywhere on the line, and finds the
shipped configs by name (`configs/quickstart.yaml`) without a clone.
"""
