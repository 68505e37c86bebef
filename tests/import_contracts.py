"""A custom import-linter contract: pure modules may use slack_sdk's Block Kit models only.

import-linter sees an external package as one node (`slack_sdk`), so a forbidden contract
cannot tell `slack_sdk.models` (pure data classes, fine in pure code) from `slack_sdk.web`
(the HTTP client). This contract reads each direct import of `slack_sdk` from the source
modules and accepts it only when it names `slack_sdk.models`. Imports of our own impure
modules (which could reach the Web client indirectly) are caught by the forbidden contracts
next to it in pyproject.toml.
"""

from __future__ import annotations

from typing import Any

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


class ExternalSubmodulesContract(Contract):
    """Source modules may import `package` only through the allowed submodules."""

    type_name = "external_submodules"

    source_modules = fields.ListField(subfield=fields.ModuleField())
    package = fields.StringField()
    allowed = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        package = str(self.package)
        allowed = tuple(str(a) for a in self.allowed)  # type: ignore[attr-defined]
        sources: set[str] = set()
        for module in self.source_modules:  # type: ignore[attr-defined]
            sources |= {module.name} | graph.find_descendants(module.name)
        broken: list[dict[str, Any]] = []
        for importer in sorted(sources):
            if package not in graph.find_modules_directly_imported_by(importer):
                continue
            for detail in graph.get_import_details(importer=importer, imported=package):
                line = str(detail["line_contents"])
                if not any(f"{name}." in line or line.endswith(name) for name in allowed):
                    broken.append(
                        {"importer": importer, "line": detail["line_number"], "contents": line}
                    )
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        allowed = ", ".join(str(a) for a in self.allowed)  # type: ignore[attr-defined]
        for item in check.metadata["broken"]:
            output.print_error(
                f"{item['importer']}:{item['line']} imports {self.package} outside {allowed}: "
                f"{item['contents']}"
            )
            output.new_line()
