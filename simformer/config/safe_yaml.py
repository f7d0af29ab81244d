"""Read detectron2-style YAML without running code.

detectron2 / MaskFormer configs write the training sizes as
``MIN_SIZE_TRAIN: !!python/object/apply:eval ["[int(x * 0.1 * 512) for x in range(5, 21)]"]``,
which fvcore reads with ``yaml.unsafe_load`` (any Python expression runs). ``read_yaml`` accepts
that tag only for a pure arithmetic expression or list comprehension, checked node by node
against a whitelist before it is evaluated by our own small interpreter (never ``eval``):

- number literals, tuples and lists of them;
- ``+ - * / // % **`` (``**`` with an exponent of at most 64), unary ``-`` / ``+``;
- calls of ``range``, ``int``, ``float``, ``round``, ``min``, ``max`` with plain arguments;
- list comprehensions ``[EXPR for NAME in ITERABLE if COND]`` where the only names are
  those bound by the comprehension (comparisons allowed in ``if``).

Anything else (attribute access, other names or calls, strings, lambdas, any other tag) is
refused with a ``ConfigError`` naming the file, the tag and the offending piece.
"""
from __future__ import annotations

import ast
import operator

import yaml

EVAL_TAG = "tag:yaml.org,2002:python/object/apply:eval"
_MAX_ITEMS = 100_000  # a config list is short; refuse a range that would allocate without bound

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}


def _range(*args):
    r = range(*[int(a) if float(a).is_integer() else _bad(f"range() of a non-integer {a!r}") for a in args])
    if len(r) > _MAX_ITEMS:
        _bad(f"range() of {len(r)} items (at most {_MAX_ITEMS})")
    return r


_FUNCS = {"range": _range, "int": int, "float": float, "round": round, "min": min, "max": max}


class UnsafeExpression(ValueError):
    """An ``eval`` expression outside the whitelist."""


def _bad(what: str):
    raise UnsafeExpression(what)


class _Evaluator:
    def __init__(self):
        self.scope: dict = {}

    def run(self, node):
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            _bad(f"{type(node).__name__} is not allowed")
        return method(node)

    def _Expression(self, node):
        return self.run(node.body)

    def _Constant(self, node):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            _bad(f"the constant {node.value!r} is not a number")
        return node.value

    def _List(self, node):
        return [self.run(e) for e in node.elts]

    def _Tuple(self, node):
        return tuple(self.run(e) for e in node.elts)

    def _Name(self, node):
        if node.id not in self.scope:
            _bad(f"the name '{node.id}' is not bound by a comprehension")
        return self.scope[node.id]

    def _BinOp(self, node):
        op = _BINOPS.get(type(node.op))
        if op is None:
            _bad(f"the operator {type(node.op).__name__} is not allowed")
        a, b = self.run(node.left), self.run(node.right)
        if op is operator.pow and (not isinstance(b, (int, float)) or abs(b) > 64):
            _bad(f"the exponent {b!r} is too large")
        if op is operator.mul and (isinstance(a, (list, tuple)) or isinstance(b, (list, tuple))):
            _bad("repeating a list with * is not allowed")
        return op(a, b)

    def _UnaryOp(self, node):
        op = _UNARY.get(type(node.op))
        if op is None:
            _bad(f"the operator {type(node.op).__name__} is not allowed")
        return op(self.run(node.operand))

    def _Compare(self, node):
        left = self.run(node.left)
        for op_node, right_node in zip(node.ops, node.comparators):
            op = _CMP.get(type(op_node))
            if op is None:
                _bad(f"the comparison {type(op_node).__name__} is not allowed")
            right = self.run(right_node)
            if not op(left, right):
                return False
            left = right
        return True

    def _Call(self, node):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
            _bad(f"calling {ast.unparse(node.func)} is not allowed (only {', '.join(sorted(_FUNCS))})")
        if node.keywords:
            _bad("keyword arguments are not allowed")
        return _FUNCS[node.func.id](*[self.run(a) for a in node.args])

    def _ListComp(self, node):
        return self._comprehend(node.elt, list(node.generators))

    def _comprehend(self, elt, generators):
        if not generators:
            return [self.run(elt)]
        gen, rest = generators[0], generators[1:]
        if gen.is_async or not isinstance(gen.target, ast.Name):
            _bad("a comprehension must bind one plain name")
        out = []
        saved = dict(self.scope)
        try:
            for value in self.run(gen.iter):
                self.scope[gen.target.id] = value
                if all(self.run(cond) for cond in gen.ifs):
                    out.extend(self._comprehend(elt, rest))
                if len(out) > _MAX_ITEMS:
                    _bad(f"more than {_MAX_ITEMS} items")
        finally:
            self.scope = saved
        return out


def safe_eval(expression: str):
    """Value of a whitelisted arithmetic / list-comprehension expression; UnsafeExpression otherwise."""
    if not isinstance(expression, str) or len(expression) > 1000:
        _bad("the expression must be one string of at most 1000 characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise UnsafeExpression(f"not a Python expression ({e.msg})") from None
    try:
        return _Evaluator().run(tree)
    except (TypeError, ZeroDivisionError, OverflowError) as e:
        raise UnsafeExpression(f"cannot be evaluated ({e})") from None


class _Loader(yaml.SafeLoader):
    """SafeLoader plus the restricted eval tag; any other python/ tag is refused."""


def _construct_eval(loader, node):
    args = loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode) else None
    if not args or len(args) != 1 or not isinstance(args[0], str):
        raise yaml.constructor.ConstructorError(
            None, None, "!!python/object/apply:eval needs exactly one string argument", node.start_mark)
    try:
        return safe_eval(args[0])
    except UnsafeExpression as e:
        raise yaml.constructor.ConstructorError(
            None, None, f"!!python/object/apply:eval {args[0]!r} refused: {e}. Only arithmetic on numbers, "
            "range/int/float/round/min/max and list comprehensions are evaluated", node.start_mark) from None


def _refuse_tag(loader, tag_suffix, node):
    raise yaml.constructor.ConstructorError(
        None, None, f"the tag '{node.tag}' is refused: configs may only use plain YAML values and "
        "!!python/object/apply:eval with an arithmetic / list-comprehension expression", node.start_mark)


_Loader.add_constructor(EVAL_TAG, _construct_eval)
_Loader.add_multi_constructor("tag:yaml.org,2002:python/", _refuse_tag)
_Loader.add_multi_constructor("!", _refuse_tag)


def load_yaml_text(text: str):
    """Parse YAML text with the restricted loader (yaml.YAMLError on a refused tag)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
