"""The AT-SPI accessibility tree as XML, in the shape OSWorld's Ubuntu guest produces.

Element tags are AT-SPI role names with ``-`` for spaces (``frame``, ``menu-bar``, ``push-button``),
``name`` holds the accessible name, the element's text is the node's whole text, and namespaced
attributes carry what OSWorld's tree linearizers, a11y-based agents and the accessibility-tree
metrics read: states with ``_`` for spaces (``st:selectable_text="true"``), object attributes
(``attr:``), on-screen geometry of visible, showing nodes (``cp:screencoord="(x, y)"``,
``cp:size="(w, h)"``), value (``val:value/min/max/step``), actions (``act:<name>_desc``/``_kb``),
document facts (``doc:``, ``docattr:``), and ``image``/``selection`` flags.

Limits are OSWorld's: 50 levels, 1024 children per node. A spreadsheet's table claims millions of
cells; only the cells on screen are listed, as OSWorld's server does.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterator
from xml.etree import ElementTree as ET

_BASE = "https://accessibility.ubuntu.example.org/ns"
NS = {"st": f"{_BASE}/state", "attr": f"{_BASE}/attributes", "cp": f"{_BASE}/component", "doc": f"{_BASE}/document",
      "docattr": f"{_BASE}/document/attributes", "txt": f"{_BASE}/text", "val": f"{_BASE}/value",
      "act": f"{_BASE}/action"}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)

MAX_DEPTH = 50
MAX_CHILDREN = 1024
#: Application names of the terminals ``/terminal`` reads (VTE-based terminals expose their text).
TERMINAL_APPS = ("gnome-terminal-server", "xfce4-terminal", "xterm", "XTerm")
#: Names an application's node carries in the tree instead of the one it registers with AT-SPI, from
#: ``GUEST_APP_NAMES`` (``registered=shown`` pairs, ``;``-separated). The osworld profile sets
#: ``Chromium=Google Chrome``: Chromium's AT-SPI name is its product name, compiled in, and desktop-env's
#: ``active_url_from_accessTree`` getter looks for ``application[name=Google Chrome]``, as on OSWorld's image.
APP_NAMES = dict(pair.split("=", 1) for pair in os.environ.get("GUEST_APP_NAMES", "").split(";") if "=" in pair)
#: Text characters that stand for embedded objects or undecodable input, dropped from element text.
_PLACEHOLDERS = str.maketrans("", "", "\ufffc\ufffd")


def _pyatspi() -> Any:
    """pyatspi is a Debian package (gi bindings); in a virtualenv borrow it from the system site."""
    try:
        import pyatspi
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        import pyatspi
    return pyatspi


def _key(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def _xml_name(name: str) -> bool:
    """Whether ``name`` can be an XML attribute name (apps' attribute names are free text)."""
    return bool(name) and not name[0].isdigit() and name.replace("-", "").replace("_", "").replace(".", "").isalnum()


def _pairs(raw: Any) -> Iterator[tuple[str, str]]:
    """``name:value`` strings (or a dict) as pairs whose names are valid XML names."""
    items = raw.items() if isinstance(raw, dict) else (pair.partition(":")[::2] for pair in raw)
    return ((key, value) for key, value in items if _xml_name(key))


def _states(accessible: Any, pyatspi: Any) -> dict[str, str]:
    return {_key("st", pyatspi.stateToString(state).replace(" ", "_")): "true"
            for state in accessible.getState().getStates()}


def _interface_facts(accessible: Any, pyatspi: Any, attributes: dict[str, str]) -> None:
    """Add what the node's optional interfaces say (geometry, value, actions, document, image, selection)."""
    if attributes.get(_key("st", "visible")) == "true" and attributes.get(_key("st", "showing")) == "true":
        try:
            box = accessible.queryComponent().getExtents(pyatspi.XY_SCREEN)
            attributes[_key("cp", "screencoord")] = str((box.x, box.y))
            attributes[_key("cp", "size")] = str((box.width, box.height))
        except NotImplementedError:
            pass
    try:
        value = accessible.queryValue()
        for name, read in (("value", lambda: value.currentValue), ("min", lambda: value.minimumValue),
                           ("max", lambda: value.maximumValue), ("step", lambda: value.minimumIncrement)):
            try:
                attributes[_key("val", name)] = str(read())
            except Exception:  # noqa: BLE001 - an app may implement only part of the interface
                pass
    except NotImplementedError:
        pass
    try:
        action = accessible.queryAction()
        for index in range(action.nActions):
            name = action.getName(index).replace(" ", "-")
            if _xml_name(name):
                attributes[_key("act", f"{name}_desc")] = action.getDescription(index)
                attributes[_key("act", f"{name}_kb")] = action.getKeyBinding(index)
    except NotImplementedError:
        pass
    try:
        document = accessible.queryDocument()
        attributes[_key("doc", "locale")] = document.getLocale()
        attributes[_key("doc", "pagecount")] = str(document.getPageCount())
        attributes[_key("doc", "currentpage")] = str(document.getCurrentPageNumber())
        attributes.update({_key("docattr", key): value for key, value in _pairs(document.getAttributes())})
    except (NotImplementedError, AttributeError):  # AttributeError: an older pyatspi without page counts
        pass
    for flag, query in (("image", "queryImage"), ("selection", "querySelection")):
        try:
            getattr(accessible, query)()
            attributes[flag] = "true"
        except NotImplementedError:
            pass


def _text(accessible: Any) -> str:
    try:
        text = accessible.queryText()
    except NotImplementedError:
        return ""
    return text.getText(0, text.characterCount).translate(_PLACEHOLDERS)


def _showing(accessible: Any, pyatspi: Any) -> bool:
    return accessible is not None and accessible.getState().contains(pyatspi.STATE_SHOWING)


def _cells_on_screen(table_node: Any, pyatspi: Any) -> list[Any]:
    """The cells of a spreadsheet's table that are on screen, row by row, from the top-left visible cell."""
    table = table_node.queryTable()
    box = table_node.queryComponent().getExtents(pyatspi.XY_SCREEN)
    corner = table_node.queryComponent().getAccessibleAtPoint(box.x + 1, box.y + 1, pyatspi.XY_SCREEN)
    index = corner.getIndexInParent() if corner is not None else 0
    first_row, first_column = table.getRowAtIndex(index), table.getColumnAtIndex(index)
    cells = []
    for row in range(first_row, table.nRows):
        row_cells = []
        for column in range(first_column, table.nColumns):
            cell = table.getAccessibleAt(row, column)
            if not _showing(cell, pyatspi):
                break
            row_cells.append(cell)
        if not row_cells:
            break
        cells.extend(row_cells)
    return cells


def _children(accessible: Any, pyatspi: Any, in_spreadsheet: bool) -> list[Any]:
    if in_spreadsheet and accessible.getRoleName() == "table":
        try:
            return _cells_on_screen(accessible, pyatspi)
        except Exception:  # noqa: BLE001 - no table interface after all: list children as any node's
            pass
    return [accessible.getChildAtIndex(index) for index in range(min(accessible.childCount, MAX_CHILDREN))]


def _node(accessible: Any, pyatspi: Any, depth: int, in_spreadsheet: bool = False) -> ET.Element:
    role = accessible.getRoleName().strip()
    attributes = {"name": accessible.name or "", **_states(accessible, pyatspi)}
    try:
        attributes.update({_key("attr", key): value for key, value in _pairs(accessible.getAttributes())})
    except Exception:  # noqa: BLE001 - an app that answers attributes badly still gets its node
        pass
    _interface_facts(accessible, pyatspi, attributes)
    element = ET.Element(role.replace(" ", "-") or "unknown", attributes)
    element.text = _text(accessible) or None
    if depth < MAX_DEPTH:
        in_spreadsheet = in_spreadsheet or role == "document spreadsheet"
        for child in _children(accessible, pyatspi, in_spreadsheet):
            if child is not None:
                try:
                    element.append(_node(child, pyatspi, depth + 1, in_spreadsheet))
                except Exception:  # noqa: BLE001 - a node that vanished mid-walk is left out, not the tree
                    continue
    return element


def accessibility_tree() -> str:
    """The whole desktop's tree as an XML string (``<desktop-frame>`` root, one child per application)."""
    pyatspi = _pyatspi()
    desktop = pyatspi.Registry.getDesktop(0)
    root = ET.Element("desktop-frame")
    for index in range(desktop.childCount):
        application = desktop.getChildAtIndex(index)
        if application is None:
            continue
        try:
            node = _node(application, pyatspi, 1)
            node.set("name", APP_NAMES.get(node.get("name", ""), node.get("name", "")))
            root.append(node)
        except Exception:  # noqa: BLE001 - an application that quits mid-walk must not break the whole tree
            continue
    return ET.tostring(root, encoding="unicode")


def _descendants(accessible: Any, depth: int = 0) -> Iterator[Any]:
    yield accessible
    if depth < MAX_DEPTH:
        for index in range(min(accessible.childCount, MAX_CHILDREN)):
            child = accessible.getChildAtIndex(index)
            if child is not None:
                yield from _descendants(child, depth + 1)


def terminal_text() -> str | None:
    """The text of the terminal the user is looking at, as OSWorld's ``/terminal`` returns it, or None.

    Only while a terminal app's window is active: its focused terminal; failing a single one, the one
    focused terminal of any terminal app, or the one terminal of the active window. Trailing
    whitespace (the empty screen below the prompt) is dropped.
    """
    pyatspi = _pyatspi()
    desktop = pyatspi.Registry.getDesktop(0)
    apps = [app for app in (desktop.getChildAtIndex(i) for i in range(desktop.childCount))
            if app is not None and app.getRoleName() == "application" and (app.name or "") in TERMINAL_APPS]
    active_frames = [frame for app in apps for frame in (app.getChildAtIndex(i) for i in range(app.childCount))
                     if frame is not None and frame.getRoleName() == "frame"
                     and frame.getState().contains(pyatspi.STATE_ACTIVE)]
    if not active_frames:
        return None

    def terminals(roots: list[Any], focused: bool) -> list[Any]:
        return [node for root in roots for node in _descendants(root) if node.getRoleName() == "terminal"
                and (not focused or node.getState().contains(pyatspi.STATE_FOCUSED))]

    for candidates in (terminals(active_frames, True), terminals(apps, True), terminals(active_frames, False)):
        if len(candidates) == 1:
            return _text(candidates[0]).rstrip()
    return None
