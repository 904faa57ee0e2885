"""Bounds on a parsed YAML / JSON / TOML document, so that a hostile file is refused by name.

PyYAML's safe loader shares the object an alias (``*name``) refers to instead of copying it, so a
"billion laughs" file parses in microseconds into a structure that expands to 10^9 values the first
time something walks it (pydantic, ``json.dumps``, a digest), and an alias inside its own anchor
makes a cycle that never ends. ``check_structure`` walks the document once, as those consumers
would, and stops early: at a cycle, past ``MAX_DEPTH`` levels or past ``MAX_VALUES`` values.
"""

from __future__ import annotations

from typing import Any

#: more nesting than any spec or run config needs (both are a few levels deep)
MAX_DEPTH = 64
#: values counted with every alias expanded; a large inline spec has a few hundred
MAX_VALUES = 100_000


def check_structure(data: Any, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> str | None:
    """What is wrong with ``data`` (a parsed document of dicts, lists and scalars), or None.

    The answer names the place as a dotted key path: ``"tasks.0.options.me: refers to itself
    (a recursive YAML alias)"``. Cost: at most ``max_values`` steps, whatever the input.
    """
    count = 0
    ancestors: set[int] = set()

    def walk(value: Any, path: str, depth: int) -> str | None:
        nonlocal count
        count += 1
        if count > max_values:
            return (f"{path or 'the document'}: over {max_values:,} values once its aliases are expanded "
                    "(a 'billion laughs' file?)")
        if not isinstance(value, (dict, list, tuple)):
            return None
        if id(value) in ancestors:
            return f"{path or 'the document'}: refers to itself (a recursive YAML alias)"
        if depth >= max_depth:
            return f"{path or 'the document'}: nested over {max_depth} levels deep"
        ancestors.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            problem = walk(child, f"{path}.{key}" if path else str(key), depth + 1)
            if problem:
                return problem
        ancestors.discard(id(value))
        return None

    return walk(data, "", 0)
