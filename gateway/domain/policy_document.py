"""Policy documents: YAML or JSON text to a checked document and a :class:`Policy`.

Three layers, in order, and the first refusal wins:

1. the text is read into plain data, remembering where every entry is written;
2. the data is validated against the published JSON Schema (``policies/schema.json``, shipped
   as ``gateway/domain/policy_schema.json``), the contract partners' tools check against;
3. :func:`~gateway.domain.policy.parse_policy` checks what a schema cannot express (``lo <= hi``,
   bins within bounds, joins name described datasets, the owner matches the dataset's name).

Every refusal is an :class:`InvalidPolicy` whose ``path`` is the dotted path of the offending
entry (``datasets.bigmart.loyalty.columns.email.use``, ``joins[0]``) and whose message names the
rule and where the entry is written (``line 14, column 7``). Messages name keys, never values.

YAML is read as ``yaml.safe_load`` reads it (YAML 1.1: write ``1.0e-7``, not ``1e-7``), with
three refusals PyYAML does not make: a key repeated in one mapping (PyYAML keeps the last one
silently), a key that is not text (``yes:``, ``1:``), and a number that is not finite. Anchors,
aliases and merge keys (``<<: *base``) work, within a size limit that stops alias bombs.

Example:
    >>> document, policy = load_policy_document(Path("policies/acme-bigmart-cx.yaml").read_text())
    >>> policy.dataset("bigmart.loyalty").column("region").keys
    ('north', 'south', 'east', 'west')
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from bisect import bisect_right
from importlib import resources
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators

from gateway.domain.errors import InvalidPolicy
from gateway.domain.policy import Policy, parse_policy

__all__ = ["load_policy_document", "policy_schema"]

EntryPath = tuple[str | int, ...]
Mark = tuple[int, int]  # 1-based line and column

_MAX_ENTRIES = 200_000  # values read, aliases counted again: stops alias bombs
_MAX_DEPTH = 64  # a policy nests 7 deep
_MAX_MESSAGE = 160
_MAX_KEY = 48
_MERGE_TAG = "tag:yaml.org,2002:merge"
_YAML_QUOTED = re.compile(r"'([^']*)'")
_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def load_policy_document(
    text: str, media_type: str = "application/yaml"
) -> tuple[dict[str, Any], Policy]:
    """Read, validate and parse a policy document.

    Args:
        text: the document, YAML or JSON.
        media_type: ``application/json`` (or any ``+json`` type) reads JSON; anything else YAML.

    Returns:
        The document as plain data (mappings, lists, text, numbers) and the parsed policy.

    Raises:
        InvalidPolicy: naming the dotted path of the first offending entry, the rule it breaks
            and its line and column in ``text``.

    Example:
        >>> doc, policy = load_policy_document('{"collaboration": "c", "datasets": {}}',
        ...                                    "application/json")
        Traceback (most recent call last):
        InvalidPolicy: datasets: must describe at least one dataset (line 1, column 24)
    """
    base = media_type.split(";", 1)[0].strip().lower()
    reader: _JsonReader | _YamlReader
    if base == "application/json" or base.endswith("+json"):
        reader = _JsonReader(text)
    else:
        reader = _YamlReader(text)
    document = reader.read()
    marks = reader.marks
    if not isinstance(document, dict):
        raise _refuse((), "the document must be a mapping of sections", marks)

    errors = sorted(_validator().iter_errors(document), key=lambda e: _mark(_where(e), marks))
    if errors:
        path, rule = _describe(errors[0])
        if errors[0].validator == "additionalProperties":
            # Located at the unknown key, named by the mapping that holds it: a key may be
            # anything a caller typed, so it is not repeated back (nor logged or audited).
            raise _refuse_at(path[:-1], rule, _mark(path, marks))
        raise _refuse(path, rule, marks)
    try:
        policy = parse_policy(document)
    except InvalidPolicy as exc:
        rule = exc.message[len(exc.path) + 2 :] if exc.path else exc.message
        where = _at(_dotted_mark(exc.path, marks))
        raise InvalidPolicy(exc.path, f"{_short(rule)} ({where})") from None
    return document, policy


def policy_schema() -> dict[str, Any]:
    """The published JSON Schema of policy documents (draft 2020-12), as served to partners."""
    return copy.deepcopy(_schema())


@functools.cache
def _schema() -> dict[str, Any]:
    text = resources.files("gateway.domain").joinpath("policy_schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> Draft202012Validator:
    # An integer is a Python int, as parse_policy has it: 25.0 is not a group size.
    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    strict = validators.extend(Draft202012Validator, type_checker=checker)
    validator: Draft202012Validator = strict(_schema())
    return validator


# -- reading text, keeping marks ---------------------------------------------------------------


class _Reader:
    """Shared by both formats: the marks of every entry and the limits on size and depth."""

    def __init__(self) -> None:
        self.marks: dict[EntryPath, Mark] = {}
        self.entries = 0

    def enter(self, path: EntryPath, depth: int, mark: Mark) -> None:
        self.entries += 1
        if self.entries > _MAX_ENTRIES:
            raise InvalidPolicy("", f"the document holds more than {_MAX_ENTRIES} values")
        if depth > _MAX_DEPTH:
            raise _refuse_at(path, f"nested more than {_MAX_DEPTH} levels deep", mark)

    def scalar(self, value: Any, path: EntryPath, mark: Mark) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise _refuse_at(path, "must be a finite number", mark)
        return value


class _YamlReader(_Reader):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.loader = yaml.SafeLoader(text)

    def read(self) -> Any:
        try:
            root = self.loader.get_single_node()
            if root is None:
                raise InvalidPolicy("", "the document is empty")
            self.marks[()] = _yaml_mark(root)
            return self.value(root, (), 0)
        except yaml.MarkedYAMLError as exc:
            where = f" ({_at(_yaml_mark(exc))})" if exc.problem_mark is not None else ""
            problem = _short(_unquoted(str(exc.problem)))
            raise InvalidPolicy("", f"not valid YAML: {problem}{where}") from None
        except yaml.YAMLError:
            raise InvalidPolicy("", "not valid YAML") from None
        except RecursionError:
            raise InvalidPolicy("", "not valid YAML: nested too deeply") from None
        finally:
            self.loader.dispose()

    def value(self, node: yaml.Node, path: EntryPath, depth: int) -> Any:
        mark = self.marks.get(path, _yaml_mark(node))
        self.enter(path, depth, mark)
        if isinstance(node, yaml.ScalarNode):
            try:
                value = self.loader.construct_object(node)
            except ValueError:  # e.g. a timestamp with month 13
                raise _refuse_at(path, "is not a valid YAML value", mark) from None
            return self.scalar(value, path, mark)
        if node.tag not in _COLLECTION_TAGS:
            raise _refuse_at(path, "uses a YAML tag that policies do not support", mark)
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                self.marks[(*path, i)] = _yaml_mark(item)
                items.append(self.value(item, (*path, i), depth + 1))
            return items
        raise _refuse_at(path, "is not a YAML value policies support", mark)

    def mapping(self, node: yaml.MappingNode, path: EntryPath, depth: int) -> dict[str, Any]:
        own: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self.key(key_node, path)
            if key in own:
                first = _at(_yaml_mark(own[key][0]))
                here = _yaml_mark(key_node)
                raise _refuse_at((*path, key), f"duplicate key, first written at {first}", here)
            own[key] = (key_node, value_node)
        result: dict[str, Any] = {}
        for merge in merges:  # YAML merge keys: earlier sources win, the mapping's own keys last
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in reversed(sources):
                if not isinstance(source, yaml.MappingNode):
                    raise _refuse_at(path, "a merge (<<) takes mappings", _yaml_mark(source))
                self.enter(path, depth + 1, _yaml_mark(source))
                result.update(self.mapping(source, path, depth + 1))
        for key, (key_node, value_node) in own.items():
            self.marks[(*path, key)] = _yaml_mark(key_node)
            result[key] = self.value(value_node, (*path, key), depth + 1)
        return result

    def key(self, node: yaml.Node, path: EntryPath) -> str:
        key = self.loader.construct_object(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(key, str):
            where = (*path, str(key)) if key is not None else path
            raise _refuse_at(where, "a key must be text (quote it)", _yaml_mark(node))
        return key


class _JsonReader(_Reader):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.decoder = json.JSONDecoder()
        self.line_starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def read(self) -> Any:
        start = self.skip(0)
        if start == len(self.text):
            raise InvalidPolicy("", "the document is empty")
        self.marks[()] = self.mark(start)
        document, end = self.value(start, (), 0)
        if self.skip(end) != len(self.text):
            raise self.invalid(self.skip(end), "extra data after the document")
        return document

    def mark(self, index: int) -> Mark:
        line = bisect_right(self.line_starts, index)
        return line, index - self.line_starts[line - 1] + 1

    def skip(self, index: int) -> int:
        found = _JSON_SPACE.match(self.text, index)
        return found.end() if found else index

    def invalid(self, index: int, problem: str) -> InvalidPolicy:
        return InvalidPolicy("", f"not valid JSON: {problem} ({_at(self.mark(index))})")

    def decode(self, index: int) -> tuple[Any, int]:
        try:
            return self.decoder.raw_decode(self.text, index)
        except json.JSONDecodeError as exc:
            raise self.invalid(exc.pos, exc.msg) from None

    def value(self, index: int, path: EntryPath, depth: int) -> tuple[Any, int]:
        self.enter(path, depth, self.mark(index))
        if self.text.startswith("{", index):
            return self.mapping(index, path, depth)
        if self.text.startswith("[", index):
            items: list[Any] = []
            index = self.skip(index + 1)
            if self.text.startswith("]", index):
                return items, index + 1
            while True:
                self.marks[(*path, len(items))] = self.mark(index)
                item, index = self.value(index, (*path, len(items)), depth + 1)
                items.append(item)
                index, closed = self.after_item(index, "]")
                if closed:
                    return items, index
        value, end = self.decode(index)
        return self.scalar(value, path, self.mark(index)), end

    def mapping(self, index: int, path: EntryPath, depth: int) -> tuple[dict[str, Any], int]:
        result: dict[str, Any] = {}
        index = self.skip(index + 1)
        if self.text.startswith("}", index):
            return result, index + 1
        while True:
            if not self.text.startswith('"', index):
                raise self.invalid(index, "expecting a key in double quotes")
            key, end = self.decode(index)
            if key in result:
                first = _at(self.marks[(*path, key)])
                here = self.mark(index)
                raise _refuse_at((*path, key), f"duplicate key, first written at {first}", here)
            self.marks[(*path, key)] = self.mark(index)
            index = self.skip(end)
            if not self.text.startswith(":", index):
                raise self.invalid(index, "expecting ':' after a key")
            result[key], index = self.value(self.skip(index + 1), (*path, key), depth + 1)
            index, closed = self.after_item(index, "}")
            if closed:
                return result, index

    def after_item(self, index: int, close: str) -> tuple[int, bool]:
        """After an item: where the next one starts, or where the collection ends (closed)."""
        index = self.skip(index)
        if self.text.startswith(",", index):
            return self.skip(index + 1), False
        if self.text.startswith(close, index):
            return index + 1, True
        raise self.invalid(index, f"expecting ',' or '{close}'")


def _yaml_mark(item: yaml.Node | yaml.MarkedYAMLError) -> Mark:
    mark = item.problem_mark if isinstance(item, yaml.MarkedYAMLError) else item.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


# -- refusals ------------------------------------------------------------------------------------

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "number": "a number",
    "integer": "an integer",
    "string": "text",
    "boolean": "true or false",
}
_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


def _where(error: ValidationError) -> EntryPath:
    """The path a schema error is about: the key itself for errors on keys."""
    path: EntryPath = tuple(error.absolute_path)
    if "propertyNames" in error.relative_schema_path:
        return (*path, str(error.instance))
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        unknown = sorted(str(k) for k in error.instance if k not in allowed)
        return (*path, unknown[0]) if unknown else path
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        return (*path, missing[0]) if missing else path
    return path


def _describe(error: ValidationError) -> tuple[EntryPath, str]:
    """The path and the rule of a schema error, in the gateway's words, without values."""
    path = _where(error)
    keyword = str(error.validator)
    schema = error.schema if isinstance(error.schema, dict) else {}
    custom = schema.get("errorMessage")
    if isinstance(custom, dict):
        custom = custom.get(keyword)
    if isinstance(custom, str):
        return path, custom
    value = error.validator_value
    if keyword == "additionalProperties":
        return path, f"unknown field (allowed: {', '.join(sorted(schema.get('properties', {})))})"
    if keyword == "required":
        return path, "required field is missing"
    if keyword == "type":
        wanted = [value] if isinstance(value, str) else list(value)
        names = [_TYPE_NAMES[t] for t in wanted if t in _TYPE_NAMES]
        rule = f"must be {' or '.join(names) or 'null'}"
        if "number" in wanted and _numeric_text(error.instance):
            rule += " (YAML 1.1 reads 1e-7 as text: write 1.0e-7)"
        return path, rule
    if keyword == "enum":
        return path, f"must be one of {list(value)}"
    if keyword in _BOUNDS:
        return path, f"must be {_BOUNDS[keyword]} {value}"
    messages = {
        "minItems": f"must have at least {value} items",
        "maxItems": f"must have at most {value} items",
        "uniqueItems": "must not repeat an item",
        "minProperties": "must not be empty",
        "minLength": "must not be empty",
        "pattern": f"must match {value}",
    }
    return path, messages.get(keyword, f"breaks the schema rule {keyword!r}")


def _numeric_text(value: object) -> bool:
    try:
        return isinstance(value, str) and len(value) < 64 and math.isfinite(float(value))
    except ValueError:
        return False


def _mark(path: EntryPath, marks: dict[EntryPath, Mark]) -> Mark:
    """Where ``path`` is written, or its nearest written ancestor (a missing key's parent)."""
    for end in range(len(path), 0, -1):
        if path[:end] in marks:
            return marks[path[:end]]
    return marks.get((), (1, 1))


def _dotted_mark(dotted: str, marks: dict[EntryPath, Mark]) -> Mark:
    """Where a parse_policy path (dotted; dataset ids hold a dot themselves) is written."""
    written = {_dotted(path, short=False): mark for path, mark in reversed(marks.items())}
    while dotted:
        if dotted in written:
            return written[dotted]
        parent = re.sub(r"(\[\d+\]|\.?[^.\[]*)$", "", dotted, count=1)
        if parent == dotted:
            break
        dotted = parent
    return marks.get((), (1, 1))


def _refuse(path: EntryPath, rule: str, marks: dict[EntryPath, Mark]) -> InvalidPolicy:
    return _refuse_at(path, rule, _mark(path, marks))


def _refuse_at(path: EntryPath, rule: str, mark: Mark) -> InvalidPolicy:
    return InvalidPolicy(_short(_dotted(path)), f"{rule} ({_at(mark)})")


def _dotted(path: EntryPath, short: bool = True) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if not short or len(part) <= _MAX_KEY else part[: _MAX_KEY - 1] + "…"
            text += f".{name}" if text else name
    return text


def _at(mark: Mark) -> str:
    return f"line {mark[0]}, column {mark[1]}"


def _unquoted(problem: str) -> str:
    """PyYAML's problem with what it quotes from the text masked (an alias, a tag, a word may be
    data); its own token names (``'<block end>'``) and single characters (``'\\t'``) stay."""
    return _YAML_QUOTED.sub(
        lambda m: m.group(0) if m.group(1).startswith("<") or len(m.group(1)) <= 2 else "'…'",
        problem,
    )


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"
