"""Show an object in a notebook, or print it where there is none (tests, plain Python)."""

from __future__ import annotations

from typing import Any


def _display(obj: Any) -> None:
    """Show ``obj`` in a notebook; print it elsewhere (tests, plain Python)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        print(obj)
        return
    if get_ipython() is None:
        print(getattr(obj, "data", obj))
    else:
        display(obj)


def _html(markup: str) -> Any:
    try:
        from IPython.display import HTML
    except ImportError:
        return markup
    return HTML(markup)
