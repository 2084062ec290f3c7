"""A third-party module loaded when first used, not when billhive is imported.

For heavy libraries only some requests need (fpdf2 for invoice PDFs, stripe for sites that charge
through Stripe): importing them cost every billhive process ~0.35 s of CPU at start (``billhive
serve``, ``billhive worker``, each CLI command), whether it ever renders a PDF or calls Stripe.

    stripe = lazy_module("stripe")  # at module level, like ``import stripe``
    stripe.StripeClient(...)        # the first attribute read imports it

Only for top-level third-party packages (``importlib.util.LazyLoader``): billhive's own modules are
imported as usual, at the top of the module (tests/test_layers.py)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """The module ``name``, imported at the first read of one of its attributes (at once if some
    other code imported it already)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
