#!/usr/bin/env bash
# Build the book into _build/html. Creates the environment if needed and executes every chapter
# whose code changed since the last build (all of them the first time); warnings are errors.
source "$(dirname "$0")/env.sh"
jupyter-book build . -W -n --keep-going && echo "The book is in _build/html/index.html"
