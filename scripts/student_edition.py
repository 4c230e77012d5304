"""Build the student edition: the whole book with every exercise's solution removed.

    python scripts/student_edition.py [--out _build/student]

The book's configuration is used as it is, with sphinx-exercise's `hide_solutions` switched on,
so the exercises keep their numbers and labels and only the solutions (their text, code and
outputs) are dropped. Chapter outputs come from the same execution cache as the full build
(`python scripts/prime_cache.py` fills it from the golden notebooks). The site is written to
OUT/_build/html; tests/test_student_edition.py checks that no solution reaches it.
"""

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def student_config(out):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["title"] += " (student edition)"
    config["sphinx"]["config"]["hide_solutions"] = True
    # Share the full build's execution cache, so no chapter runs twice.
    config["execute"]["cache"] = str(ROOT / "_build" / ".jupyter_cache")
    path = out / "_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "student")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = student_config(out)
    command = ["jupyter-book", "build", str(ROOT), "--all", "-W", "-n", "--keep-going",
               "--config", str(config), "--path-output", str(out)]
    sys.exit(subprocess.call(command))


if __name__ == "__main__":
    main()
