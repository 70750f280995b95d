"""The AT-SPI accessibility tree as XML, in the shape OSWorld's Ubuntu guest produces.

Element tags are AT-SPI role names (``frame``, ``menu-bar``, ``push-button``), ``name`` holds the
accessible name, and namespaced attributes carry states (``st:showing="true"``), component geometry
(``cp:screencoord="(x, y)"``, ``cp:size="(w, h)"``) and object attributes, so OSWorld's tree
linearizers and a11y-based agents read it unchanged. Text content becomes the element's text.
"""

from __future__ import annotations

import sys
from typing import Any
from xml.etree import ElementTree as ET

NS = {
    "st": "https://accessibility.ubuntu.example.org/ns/state",
    "attr": "https://accessibility.ubuntu.example.org/ns/attributes",
    "cp": "https://accessibility.ubuntu.example.org/ns/component",
    "txt": "https://accessibility.ubuntu.example.org/ns/text",
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)

MAX_DEPTH = 50
MAX_CHILDREN = 500
MAX_TEXT = 2000


def _pyatspi() -> Any:
    """pyatspi is a Debian package (gi bindings); in a virtualenv borrow it from the system site."""
    try:
        import pyatspi
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        import pyatspi
    return pyatspi


def _tag(role: str) -> str:
    return role.replace(" ", "-") or "unknown"


def _node(accessible: Any, pyatspi: Any, depth: int) -> ET.Element:
    element = ET.Element(_tag(accessible.getRoleName()))
    element.set("name", accessible.name or "")
    states = accessible.getState().getStates()
    for state in states:
        element.set(f"{{{NS['st']}}}{pyatspi.stateToString(state).replace(' ', '-')}", "true")
    try:
        for pair in accessible.getAttributes():
            key, _, value = pair.partition(":")
            if key and key.replace("-", "").replace("_", "").isalnum():
                element.set(f"{{{NS['attr']}}}{key}", value)
    except Exception:
        pass
    try:
        component = accessible.queryComponent()
        x, y = component.getPosition(pyatspi.XY_SCREEN)
        w, h = component.getSize()
        element.set(f"{{{NS['cp']}}}screencoord", f"({x}, {y})")
        element.set(f"{{{NS['cp']}}}size", f"({w}, {h})")
    except NotImplementedError:
        pass
    try:
        text = accessible.queryText()
        element.text = text.getText(0, min(text.characterCount, MAX_TEXT))
    except NotImplementedError:
        pass
    if depth < MAX_DEPTH:
        for index in range(min(accessible.childCount, MAX_CHILDREN)):
            child = accessible.getChildAtIndex(index)
            if child is not None:
                element.append(_node(child, pyatspi, depth + 1))
    return element


def accessibility_tree() -> str:
    """The whole desktop's tree as an XML string (``<desktop-frame>`` root, one child per application)."""
    pyatspi = _pyatspi()
    root = ET.Element("desktop-frame", {f"{{{NS['attr']}}}role": "desktop-frame"})
    desktop = pyatspi.Registry.getDesktop(0)
    for index in range(desktop.childCount):
        application = desktop.getChildAtIndex(index)
        if application is None:
            continue
        try:
            root.append(_node(application, pyatspi, 1))
        except Exception:  # an application that quits mid-walk must not break the whole tree
            continue
    return ET.tostring(root, encoding="unicode")


def terminal_text() -> str | None:
    """Text of the first terminal widget on screen, as OSWorld's ``/terminal`` returns."""
    tree = ET.fromstring(accessibility_tree())
    for element in tree.iter("terminal"):
        return element.text or ""
    return None
