"""The current trace and component, carried through `contextvars`: asyncio tasks inherit
them, and `bind` carries them into a thread or an executor."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import uuid
from typing import Any, Callable, Iterator, Optional, TypeVar

_trace: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "witness_trace", default=None
)
_component: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "witness_component", default=None
)

F = TypeVar("F", bound=Callable[..., Any])


def current_trace() -> Optional[str]:
    """The trace id entries get when they name none."""
    return _trace.get()


def current_component() -> Optional[str]:
    """The component entries get when they name none."""
    return _component.get()


def new_trace_id() -> str:
    """A fresh random trace id (32 hex digits, as W3C trace context writes them)."""
    return uuid.uuid4().hex


@contextlib.contextmanager
def trace(trace_id: Optional[str] = None, *, component: Optional[str] = None) -> Iterator[str]:
    """Within the block, entries that name no trace id get `trace_id` (a fresh one if
    `None`), and entries that name no component get `component` (if given)."""
    trace_id = trace_id or new_trace_id()
    trace_token = _trace.set(trace_id)
    component_token = _component.set(component) if component is not None else None
    try:
        yield trace_id
    finally:
        if component_token is not None:
            _component.reset(component_token)
        _trace.reset(trace_token)


def traced(component: Optional[str] = None, *, trace_id: Optional[str] = None) -> Callable[[F], F]:
    """Runs the function (plain or `async`) inside `trace`: in the caller's trace if there is
    one, else a fresh one, with `component` for its entries."""

    def decorate(function: F) -> F:
        def scope() -> contextlib.AbstractContextManager[str]:
            return trace(trace_id or current_trace(), component=component)

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with scope():
                    return await function(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with scope():
                return function(*args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate


def bind(function: F) -> F:
    """`function`, to be run in another thread (or an executor) with the caller's current
    trace and component, which threads do not inherit by themselves."""
    context = contextvars.copy_context()

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        return context.copy().run(function, *args, **kwargs)

    return run  # type: ignore[return-value]
