#!/usr/bin/env bash
# Run every test. Creates the environment if needed, then
#   1. builds the book strictly (warnings are errors) from the golden notebooks' outputs;
#   2. runs the unit tests of companion and replays every chapter with nbval, each in a fresh
#      kernel, comparing every output with the golden notebook book/NAME.ipynb.
# Each chapter executes once per run: in step 2.
source "$(dirname "$0")/env.sh"
status=0
python scripts/prime_cache.py && jupyter-book build . --all -W -n --keep-going && python scripts/check_site.py || status=1
python -m pytest tests book --nbval --nbval-current-env --nbval-sanitize-with tests/nbval-sanitize.cfg -p no:cacheprovider || status=1
exit $status
