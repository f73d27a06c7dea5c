"""Rendering user-authored templates in Jinja2's sandbox, bounded in time, memory and output size."""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.defaults import DEFAULT_FILTERS
from jinja2.environment import Template
from jinja2.runtime import Context, EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from webadmin.services import ServiceError

# Beyond the sandbox (no `_` attributes, no mutation): templates get only the context and `range`; only plain data
# (text, numbers, lists, dicts) can be printed, joined or passed to a filter, so no Python object's repr reaches the
# output; only the filters below exist; nothing but range() can be called (str methods could pad to any size); and
# every value built while rendering (operators, `~`, filters, loops, the output stream) is size-checked before it is
# built, so a template cannot exhaust the worker's memory or time.
MAX_OUTPUT = 4000  # characters: more than any push platform shows
MAX_SOURCE = 10_000
MAX_SECONDS = 0.5
MAX_RANGE = 1000
MAX_ITERATIONS = 10_000  # loop iterations per render, all loops together
MAX_VALUE = 20_000  # characters (or items) of any value built while rendering
MAX_CONTEXT = 100_000  # characters of context data
MAX_INT_BITS = 4096

# Filters a push text needs; anything that pads, formats or exposes objects (center, format, pprint, attr…) is out.
SAFE_FILTERS = (
    "abs capitalize count d default dictsort first float int items join last length list lower map max min reject "
    "rejectattr replace reverse round select selectattr sort string striptags sum title trim truncate unique upper "
    "urlencode wordcount"
).split()
REFUSED_TAGS: dict[type[nodes.Node], str] = {
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.Block: "block",
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from … import",
}
_OBJECT_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>|<(class|function|built-in|bound|module|generator)\b[^<>]*>")

_local = threading.local()


def _tick() -> None:
    """Refuse once the render has used up its time."""
    deadline = getattr(_local, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise SecurityError("the template took too long")


def _is_plain(value: Any) -> bool:
    """Text, numbers, booleans, None, and lists/dicts of them (undefined values fail on their own later)."""
    if value is None or isinstance(value, str | int | float | Undefined):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    return False


def _require_plain(value: Any) -> Any:
    """The value, when it is plain data; refused otherwise."""
    if not _is_plain(value):
        raise SecurityError("only text, numbers and lists of them can be used here")
    return value


def _size(value: Any) -> int:
    """About how many characters the value takes as text."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if isinstance(value, list | tuple):
        return len(value) + sum(_size(item) for item in value)
    if isinstance(value, dict):
        return len(value) + sum(_size(k) + _size(v) for k, v in value.items())
    return 24


def _check_size(size: int) -> None:
    """Refuse values that would be too large, before they are built."""
    if size > MAX_VALUE:
        raise SecurityError("the template builds a value that is too large")


def _product_size(operator: str, left: Any, right: Any) -> int:
    """How large `left * right` or `left ** right` would be."""
    if isinstance(left, int) and isinstance(right, int):
        if operator == "*":
            bits = left.bit_length() + right.bit_length()
        else:
            bits = 0 if abs(left) <= 1 or right < 0 else left.bit_length() * right
        if bits > MAX_INT_BITS:
            raise SecurityError("the number would be too large")
        return 0
    if operator == "*" and isinstance(right, int) and isinstance(left, str | list | tuple):
        return _size(left) * max(right, 0)
    if operator == "*" and isinstance(left, int) and isinstance(right, str | list | tuple):
        return _size(right) * max(left, 0)
    return 0


def _iterate(value: Any) -> Iterator[Any]:
    """Every for-loop goes through here: plain data only, and a budget of iterations and time."""
    _require_plain(value)
    for item in value:
        _local.iterations = getattr(_local, "iterations", 0) + 1
        if _local.iterations > MAX_ITERATIONS:
            raise SecurityError(f"loops ran more than {MAX_ITERATIONS:,} times")
        _tick()
        yield item


def _safe_range(*args: int) -> list[int]:
    """range() capped so a template cannot loop for ever; a list, so printing it shows numbers."""
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise SecurityError(f"range too large (max {MAX_RANGE})")
    return list(result)


def _replace_size(value: Any, old: Any = "", new: Any = "", *args: Any) -> int:
    """How large `value|replace(old, new)` would be."""
    text, old, new = str(value), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    return len(text) + hits * max(len(new) - len(old), 0)


def _join_size(value: Any, separator: Any = "", *args: Any, **kwargs: Any) -> int:
    """How large `value|join(separator)` would be."""
    items = list(value) if isinstance(value, list | tuple | dict | str) else []
    return sum(_size(item) for item in items) + len(str(separator)) * len(items)


_SIZE_BEFORE: dict[str, Callable[..., int]] = {"replace": _replace_size, "join": _join_size}


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter: plain arguments, a size check before (where it can grow) and after, lists not iterators."""
    size_before = _SIZE_BEFORE.get(name)

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja still passes the environment or eval context
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        data = [a for a in args if not isinstance(a, Context | EvalContext | ImmutableSandboxedEnvironment)]
        for value in (*data, *kwargs.values()):
            _require_plain(value)
        if size_before is not None:
            _check_size(size_before(*data, **kwargs))
        result = func(*args, **kwargs)
        if isinstance(result, Iterator):
            result = list(islice(result, MAX_VALUE + 1))
        _check_size(_size(_require_plain(result)))
        return result

    return bounded


class _BoundedCodeGenerator(CodeGenerator):
    """Routes `a ~ b` through the environment so concatenation is size-checked like the other operators."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802  (Jinja's visitor naming)
        """Emit `environment.bounded_concat((…))` instead of a bare join."""
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Budget(ImmutableSandboxedEnvironment):
    """The sandbox with the limits above."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
        """Only range() can be called: methods and other callables could pad strings to any size."""
        _tick()
        if __obj is not _safe_range:
            raise SecurityError("templates cannot call functions or methods; use filters such as |upper")
        for value in (*args, *kwargs.values()):
            _require_plain(value)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Operators on plain data only, refusing results that would be too large."""
        _tick()
        _require_plain(left)
        _require_plain(right)
        if operator == "%" and isinstance(left, str):
            raise SecurityError("%-formatting is not available; use ~ or filters")
        if operator in ("*", "**"):
            _check_size(_product_size(operator, left, right))
        elif operator == "+":
            _check_size(_size(left) + _size(right))
        return super().call_binop(context, operator, left, right)

    def bounded_concat(self, values: Iterable[Any]) -> str:
        """`a ~ b ~ c` on plain data, refused when the result would be too large."""
        values = [_require_plain(v) for v in values]
        _check_size(sum(_size(v) for v in values))
        return "".join(str(v) for v in values)

    @staticmethod
    def concat(chunks: Iterable[str]) -> str:  # type: ignore[override]
        """Join the output stream (and captured blocks), stopping as soon as it is too long or too slow."""
        parts: list[str] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise SecurityError(f"the output is longer than {MAX_OUTPUT:,} characters")
            _tick()
            parts.append(chunk)
        return "".join(parts)


def _finalize(value: Any) -> Any:
    """What `{{ … }}` prints: plain data only."""
    if not _is_plain(value):
        raise SecurityError("it tries to show something that is not text or a number")
    return value


_env = _Budget(undefined=StrictUndefined, autoescape=False, finalize=_finalize)
_env.globals = {"range": _safe_range}  # nothing else: no config, request, lipsum, cycler, joiner, namespace
_env.filters = {name: _bounded_filter(name, DEFAULT_FILTERS[name]) for name in SAFE_FILTERS}
_env.filters["_iterate"] = _iterate  # added to every for-loop below; templates cannot name it (not allowed)


def _checked_tree(source: str) -> nodes.Template:
    """Parse, refuse unavailable tags and filters, and put every loop on the iteration budget."""
    tree = _env.parse(source)
    for node in tree.find_all((nodes.Stmt, nodes.Filter)):
        if type(node) in REFUSED_TAGS:
            raise SecurityError(f"{{% {REFUSED_TAGS[type(node)]} %}} is not available in push templates")
        if isinstance(node, nodes.Filter) and node.name not in SAFE_FILTERS:
            raise SecurityError(f"the filter {node.name!r} is not available (allowed: {', '.join(SAFE_FILTERS)})")
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "_iterate", [], [], None, None, lineno=loop.lineno)
    tree.set_environment(_env)
    return tree


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> Template:
    """The compiled template (cached: sends render the same few templates many times)."""
    return _env.from_string(_checked_tree(source))


def render(source: str, context: dict[str, Any]) -> str:
    """Render `source` with only `context`; clear ServiceError for anything refused or broken."""
    if len(source) > MAX_SOURCE:
        raise ServiceError(f"The template is longer than {MAX_SOURCE:,} characters.", field="body")
    try:
        data = _plain(context)
        too_large = _size(data) > MAX_CONTEXT
    except RecursionError as exc:
        raise ServiceError("The context data is nested too deeply.", field="context") from exc
    if too_large:
        raise ServiceError(f"The context data is larger than {MAX_CONTEXT:,} characters.", field="context")
    _local.deadline, _local.iterations = time.monotonic() + MAX_SECONDS, 0
    try:
        output = _compile(source).render(**data)
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, AttributeError, RecursionError) as exc:
        raise _refusal(exc) from exc
    finally:
        _local.deadline = None
    if len(output) > MAX_OUTPUT:
        raise ServiceError(f"The rendered text is longer than {MAX_OUTPUT:,} characters.", field="body")
    return output


def _refusal(exc: Exception) -> ServiceError:
    """The error to show for a template that was refused or failed."""
    if isinstance(exc, SecurityError):
        return ServiceError(f"The template was refused: {_clean(exc)}.", field="body", code="template_refused")
    if isinstance(exc, RecursionError):
        return ServiceError("The template is nested too deeply.", field="body", code="template_refused")
    reason = "a number is too large" if isinstance(exc, OverflowError) else _clean(exc)
    return ServiceError(f"The template could not be rendered: {reason}.", field="body", code="template")


def _clean(exc: Exception) -> str:
    """The error message without trailing dots or any Python object's repr."""
    return _OBJECT_REPR.sub("an object", str(exc)).rstrip(".") or type(exc).__name__


def _plain(value: Any) -> Any:
    """Only JSON-like data reaches a template: dicts, lists, strings, numbers, booleans, None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
