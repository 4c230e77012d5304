#!/usr/bin/env bash
# Run every test. Creates the environment if needed, then
#   1. builds the book strictly (warnings are errors) from the golden notebooks' outputs, checks
#      the built pages, and renders every page in headless Chromium (scripts/browser_check.py;
#      needs the system's chromium: on Debian or Ubuntu, apt-get install chromium);
#   2. runs the unit tests of companion (which include building the student edition) and replays
#      every chapter and the example assignment in course/ with nbval, each in a fresh kernel,
#      comparing every output with the stored one.
# Each chapter executes once per run: in step 2.
source "$(dirname "$0")/env.sh"
status=0
python scripts/prime_cache.py && jupyter-book build . --all -W -n --keep-going && python scripts/check_site.py \
  && python scripts/browser_check.py || status=1
python -m pytest tests book course --nbval --nbval-current-env --nbval-sanitize-with tests/nbval-sanitize.cfg \
  -p no:cacheprovider || status=1
exit $status
