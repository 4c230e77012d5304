"""Build the student edition: the whole book with every exercise's solution removed.

    python scripts/student_edition.py [--out _build/student]

The book's configuration is used as it is, with `student_edition` switched on
(book/_ext/student_edition.py), so the exercises keep their numbers and labels and only the
solutions (their text, code and outputs) are dropped. The pages offer no source, download or
launch links, since the chapters' sources and notebooks hold the solutions. Chapter outputs come from the same execution cache as the full build
(`python scripts/prime_cache.py` fills it from the golden notebooks). The site is written to
OUT/_build/html; tests/test_student_edition.py checks that no solution reaches it.
"""

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def student_config(out, solutions=False):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["title"] += " (student edition)"
    config["sphinx"]["config"]["student_edition"] = not solutions  # book/_ext/student_edition.py
    # The chapters' sources and notebooks hold the solutions: no source links, downloads or
    # launch buttons (they open the repository's notebooks).
    config["sphinx"]["config"]["html_copy_source"] = False
    config["sphinx"]["config"]["html_show_sourcelink"] = False
    config["sphinx"]["config"]["html_theme_options"] = {"use_download_button": False}
    config["sphinx"]["recursive_update"] = True  # merge these theme options into the book's
    config["launch_buttons"] = {"notebook_interface": "classic"}
    # The configuration file lives in OUT, so paths that Jupyter Book resolves against the
    # configuration's folder are made absolute.
    config["sphinx"]["local_extensions"] = {
        name: str(ROOT / path) for name, path in config["sphinx"]["local_extensions"].items()}
    config["bibtex_bibfiles"] = [str(ROOT / path) for path in config["bibtex_bibfiles"]]
    config["html"]["favicon"] = str(ROOT / config["html"]["favicon"])
    # Share the full build's execution cache, so no chapter runs twice.
    config["execute"]["cache"] = str(ROOT / "_build" / ".jupyter_cache")
    path = out / "_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "student")
    parser.add_argument("--keep-solutions", action="store_true",
                        help="the same build with the solutions kept (the tests' control)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = student_config(out, solutions=args.keep_solutions)
    command = ["jupyter-book", "build", str(ROOT), "--all", "-W", "-n", "--keep-going",
               "--config", str(config), "--path-output", str(out)]
    sys.exit(subprocess.call(command))


if __name__ == "__main__":
    main()
