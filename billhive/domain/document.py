"""The type of the documents pure domain functions take and return: a resource as a JSON object
(Chargebee v1 field names), as stored and served; and ``clone``, a decision's copy of one."""
import copy
from typing import Any, TypeVar

Doc = dict[str, Any]
T = TypeVar("T")
_ATOMS = frozenset({str, int, float, bool, type(None)})


def clone(value: T) -> T:
    """``copy.deepcopy(value)`` for documents, several times faster (it is on the collect path):
    dicts and lists are copied, immutable scalars shared, anything else goes to ``copy.deepcopy``.
    Unlike deepcopy, an object that appears twice in ``value`` becomes two copies (documents,
    parsed from JSON or built for it, have no such sharing)."""
    t = type(value)
    if t is dict:
        return {k: clone(v) for k, v in value.items()}  # type: ignore[attr-defined,return-value]
    if t is list:
        return [clone(v) for v in value]  # type: ignore[attr-defined,return-value]
    if t in _ATOMS:
        return value
    return copy.deepcopy(value)
