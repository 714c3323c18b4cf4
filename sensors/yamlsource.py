"""YAML files checked like code: every error names the file, the line and the field path.

Shared by the registry, the rule catalogue and the routing file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

Loc = tuple[str | int, ...]
# libyaml parses large registries several times faster (10k sensors: seconds → a fraction);
# its nodes carry the same marks, so line numbers are unchanged.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Issue:
    """One problem in a registry file."""

    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


def read_yaml(text: str, source: str, expected: str = "a mapping") -> tuple[Any, dict[Loc, int], list[Issue]]:
    """Parse YAML, keeping the line of every key and list item (1-based) for error messages."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Loc, int] = {}
        issues: list[Issue] = []
        if node is not None:
            _record_lines(node, (), lines, issues, source)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        return None, {}, [Issue(source, line, "", f"not valid YAML: {getattr(exc, 'problem', None) or exc}")]
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        return None, lines, [Issue(source, 1, "", f"expected {expected}")]
    return data, lines, issues


def _record_lines(node: yaml.Node, path: Loc, lines: dict[Loc, int], issues: list[Issue], source: str) -> None:
    """Walk the node tree, recording lines; PyYAML silently keeps the last of duplicate keys, we don't."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue  # merge keys and complex keys: errors fall back to the mapping's line
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                issues.append(Issue(source, line, dotted(path + (key,)), "duplicate key"))
            seen.add(key)
            lines[path + (key,)] = line
            _record_lines(value_node, path + (key,), lines, issues, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _record_lines(item, path + (i,), lines, issues, source)


def line_of(loc: Loc, lines: dict[Loc, int]) -> int | None:
    """The line of the deepest part of `loc` that exists in the file (a missing key: its parent)."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1 if lines else None


def dotted(loc: Loc) -> str:
    """`('enterprises', 1, 'sites', 0, 'id')` → `enterprises[1].sites[0].id`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def issue_from_pydantic(err: Any, lines: dict[Loc, int], source: str) -> Issue:
    """Turn one pydantic error into an Issue with a plain message."""
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        msg = f"unknown key {loc[-1]!r}"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "value_error":
        msg = str(err["ctx"]["error"])
    else:
        msg = err["msg"]
        if "input" in err and not isinstance(err["input"], dict | list):
            msg += f", got {err['input']!r}"
    return Issue(source, line_of(loc, lines), dotted(loc), msg)
