"""No class of the gateway overrides another library's private method (STYLE.md: any
release may rename or drop it, and the override then silently stops being called).
upstream/tunnelled.py overrode aiohttp-socks' `_connect_via_proxy` to give aiohttp an
HTTP proxy's tunnel (pinned to aiohttp-socks <0.13 for that); session 28 moved HTTP
proxies to FastTransport, through asyncio's public `create_connection(sock=)`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import azure_openai_proxy

_OURS = "azure_openai_proxy"


def _our_classes() -> list[type]:
    classes: dict[str, type] = {}
    for module in pkgutil.walk_packages(azure_openai_proxy.__path__, _OURS + "."):
        if module.name.startswith(f"{_OURS}.emulator") or module.name.endswith("__main__"):
            continue  # the Azure emulator is a sibling, not the gateway; __main__ runs it
        loaded = importlib.import_module(module.name)
        for _, value in inspect.getmembers(loaded, inspect.isclass):
            if value.__module__.startswith(_OURS):
                classes[f"{value.__module__}.{value.__qualname__}"] = value
    return list(classes.values())


def _private_overrides(cls: type) -> list[str]:
    """`cls`'s own `_methods` (not dunders; not the flags `typing.Protocol` and `abc` set
    on every class, which are not methods) that a foreign base class defines too."""
    foreign = [base for base in cls.__mro__[1:]
               if not base.__module__.startswith(_OURS) and base is not object]
    return [f"{cls.__qualname__}.{name} (of {base.__module__}.{base.__qualname__})"
            for name, value in vars(cls).items()
            if name.startswith("_") and not name.startswith("__") and _a_method(value)
            for base in foreign if name in vars(base)]


def _a_method(value: object) -> bool:
    return callable(value) or isinstance(value, staticmethod | classmethod | property)


def test_the_gateway_overrides_no_private_method_of_another_library() -> None:
    classes = _our_classes()
    assert len(classes) > 100  # the walk found the package's classes
    overrides = [found for cls in classes for found in _private_overrides(cls)]
    assert overrides == []


def test_the_check_sees_an_override() -> None:
    """The check itself: a subclass overriding a private method of the standard
    library's is found (it would pass vacuously if `_private_overrides` saw nothing)."""
    import asyncio

    class Leaky(asyncio.Protocol):
        def _private(self) -> None: ...

    assert _private_overrides(Leaky) == []  # a name of its own: allowed

    class Overriding(asyncio.StreamReaderProtocol):
        def _get_close_waiter(self, stream: asyncio.StreamWriter) -> asyncio.Future[None]:
            raise NotImplementedError

    found = _private_overrides(Overriding)
    assert found and all("._get_close_waiter (of asyncio." in one for one in found), found
