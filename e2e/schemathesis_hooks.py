"""Schemathesis hooks for crates/shoal/tests/api_schema.rs.

The fuzzer sends arbitrary strings as the `path` of a new share and the `output`
folder of a new transfer. Absolute ones would make the daemon under test index
the whole machine ("/") or create folders anywhere, so every absolute path is
moved inside a sandbox folder (SHOAL_FUZZ_SANDBOX) before it is sent: it is
normalised first, so ".." cannot climb out. Relative and malformed values are
sent untouched: the daemon must reject those with a 4xx, never a 5xx.
"""

import os
import posixpath

import schemathesis

SANDBOX = os.environ["SHOAL_FUZZ_SANDBOX"].rstrip("/")
CONFINED_FIELDS = ("path", "output")


def confine(value):
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    inside = posixpath.normpath(value)  # "/../../etc" -> "/etc"
    if inside == SANDBOX or inside.startswith(SANDBOX + "/"):
        return inside
    # normpath of an absolute path may keep a leading "//"; drop it.
    return SANDBOX + "/" + inside.lstrip("/")


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if isinstance(body, dict):
        for field in CONFINED_FIELDS:
            if field in body:
                body[field] = confine(body[field])
