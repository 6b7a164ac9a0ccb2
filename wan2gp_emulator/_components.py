"""WanGP's two custom Gradio components, as the API sees them.

``/config`` and ``view_api`` name a component by its class (``Wangpimageeditor``, ``Hierarchyselector`` on the real
server), so the emulator defines classes of those names. Their Python side follows WanGP's
(``shared/gradio/wangp_image_editor``: an ``ImageEditor``; ``shared/gradio/hierarchy_selector``: an ordered
multi-selection with ``api_info`` ``array of string``). In the browser they are drawn by gradio's built-in
ImageEditor and multiselect Dropdown (``templates/*/component/index.js`` re-export gradio 5.29.0's bundles).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr
from gradio import component_meta
from gradio.components.base import FormComponent
from gradio.events import Events

# Gradio's component metaclass writes a ``.pyi`` stub beside the module that defines a component class. Not for
# these two: the package must not write into its own installation directory.
_write_stub = component_meta.create_or_modify_pyi
component_meta.create_or_modify_pyi = lambda *args, **kwargs: None


try:
    class WanGPImageEditor(gr.ImageEditor):
        TEMPLATE_DIR = "templates/wangpimageeditor/"
        FRONTEND_DIR = "frontend/"


    class HierarchySelector(FormComponent):
        """Ordered multi-selection over a folder/item hierarchy (WanGP's LoRA picker)."""

        EVENTS = [Events.change, Events.input, Events.select, Events.focus, Events.blur]
        TEMPLATE_DIR = "templates/hierarchyselector/"
        FRONTEND_DIR = "frontend/"

        def __init__(
            self,
            hierarchy: dict | None = None,
            *,
            value: Sequence[str] | str | None = None,
            height: int = 10,
            display_mode: str = "file",
            breadcrumb_separator: str = " ",
            sort_hierarchy: bool = True,
            search_empty_label: str = "",
            show_placeholder: bool = False,
            choices: list | None = None,
            multiselect: bool = True,
            label: str | None = None,
            info: str | None = None,
            show_label: bool | None = None,
            container: bool = True,
            scale: int | None = None,
            min_width: int = 160,
            interactive: bool | None = None,
            visible: bool = True,
            elem_id: str | None = None,
            elem_classes: list[str] | str | None = None,
            render: bool = True,
            key: int | str | None = None,
        ) -> None:
            self.hierarchy = hierarchy or {"folders": [], "items": []}
            self.height = int(height)
            self.display_mode = display_mode
            self.breadcrumb_separator = breadcrumb_separator
            self.sort_hierarchy = sort_hierarchy
            self.search_empty_label = search_empty_label
            self.show_placeholder = show_placeholder
            # For the built-in Dropdown that draws it in the browser; not part of the API.
            self.choices = list(choices or [])
            self.multiselect = multiselect
            super().__init__(label=label, info=info, show_label=show_label, container=container, scale=scale,
                             min_width=min_width, interactive=interactive, visible=visible, elem_id=elem_id,
                             elem_classes=elem_classes, render=render, key=key, value=value)

        def preprocess(self, payload: list[str] | str | None) -> list[str]:
            if payload is None:
                return []
            return payload if isinstance(payload, list) else [payload]

        def postprocess(self, value: Sequence[str] | str | None) -> list[str]:
            if value is None:
                return []
            return list(value) if isinstance(value, (list, tuple)) else [value]

        def example_payload(self) -> Any:
            return []

        def example_value(self) -> Any:
            return []

        def api_info(self) -> dict[str, Any]:
            return {"type": "array", "items": {"type": "string"}}
finally:
    component_meta.create_or_modify_pyi = _write_stub
