"""Prompt templates: Jinja in a sandbox, strict about undefined variables.

Templates are files under the project (normally `prompts/`), named in routes.yaml by a
path relative to the project root. They are compiled once when the graph loads, and
their variables are checked then (`variables()`), not per request.

User-supplied text is only ever passed *as a value* to `render()`. It is never compiled,
so `{{ 7*7 }}` typed by a user comes out literally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from engine.errors import TemplateRenderError


class TemplateSet:
    """Compiles and caches the prompt templates of one project directory."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(self.root)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._compiled: dict[str, jinja2.Template] = {}

    def check_path(self, relpath: str) -> str | None:
        """Return a problem message if `relpath` is not a readable file inside the project."""
        candidate = (self.root / relpath).resolve()
        if not candidate.is_relative_to(self.root):
            return f"{relpath!r} points outside the project directory {self.root}"
        if not candidate.is_file():
            return f"prompt file {relpath!r} does not exist"
        return None

    def source(self, relpath: str) -> str:
        return (self.root / relpath).read_text(encoding="utf-8")

    def variables(self, relpath: str) -> set[str]:
        """Names the template reads from its context (raises jinja2.TemplateSyntaxError)."""
        parsed = self.env.parse(self.source(relpath))
        return set(meta.find_undeclared_variables(parsed))

    def compile(self, relpath: str) -> jinja2.Template:
        template = self._compiled.get(relpath)
        if template is None:
            template = self.env.get_template(relpath)
            self._compiled[relpath] = template
        return template

    def render(self, relpath: str, values: dict[str, Any]) -> str:
        try:
            return self.compile(relpath).render(values).strip()
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(f"prompt {relpath}: {exc}") from None
