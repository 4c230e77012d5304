"""ipywidgets controls used by the chapters.

Each function builds its controls and returns the widget; a chapter displays it in one call.
The website cannot run them (there is no kernel behind a static page), so every chapter shows a
static figure of a few settings beside each control.
"""
