"""Sphinx extension: each page loads every script once.

Under Sphinx 7.4, scripts that an extension adds while the documents are read (sphinx-thebe's
configuration, sphinx-togglebutton's selector) end up twice in every page, and the second copy
of sphinx-thebe's ``const THEBE_JS_URL = ...`` is a JavaScript error ("Identifier has already been
declared") on every page. This drops the repeats before the page is written.
"""


def _drop_repeated_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        filename = getattr(script, "filename", script) or ""  # inline scripts: None or ""
        key = (str(filename), tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
