"""Give every page each script once.

sphinx-thebe registers its inline configuration script (`const THEBE_JS_URL = ...`) twice in a
Jupyter Book 1 build; the second copy throws "Identifier 'THEBE_JS_URL' has already been
declared" in the reader's browser (scripts/browser_check.py finds it). This extension drops
duplicates (same file or inline body, same attributes) from each page's script list, keeping the first.
"""


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    scripts, seen = [], set()
    for script in context.get("script_files", []):
        # One copy of an inline script has filename None, the other "": compare what the browser gets.
        key = (str(script.filename or ""), tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            scripts.append(script)
    context["script_files"] = scripts


def setup(app):
    app.connect("html-page-context", _drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
