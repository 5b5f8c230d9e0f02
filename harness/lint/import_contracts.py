"""An import-linter contract type for what the stock ones cannot say: a package imports nothing outside
the standard library but the packages it names (the tracer: prometheus_client, and each framework
integration its own framework)."""

from __future__ import annotations

import sys
from typing import Any

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class StandardLibraryOnlyContract(Contract):
    """Options: `package` (a root package), `allowed` (top-level packages any of its modules may import),
    `allowed_for` (`module -> package`: one module may import one more package)."""

    type_name = "standard_library_only"

    package = fields.StringField()
    allowed = fields.SetField(subfield=fields.StringField(), required=False)
    allowed_for = fields.SetField(subfield=fields.StringField(), required=False)

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        # The fields are replaced by the parsed option values on the instance (None when not given).
        package = str(vars(self)["package"])
        allowed = {str(name) for name in vars(self)["allowed"] or ()}
        allowed_for: dict[str, set[str]] = {}
        for rule in vars(self)["allowed_for"] or ():
            module, _, extra = str(rule).partition("->")
            allowed_for.setdefault(module.strip(), set()).add(extra.strip())
        broken: list[tuple[str, str, list[int]]] = []
        for module in sorted(graph.find_descendants(package) | {package}):
            for imported in sorted(graph.find_modules_directly_imported_by(module)):
                top = imported.split(".")[0]
                if top == package or top in sys.stdlib_module_names or top in allowed \
                        or top in allowed_for.get(module, set()):
                    continue
                lines = sorted(int(detail["line_number"])
                               for detail in graph.get_import_details(importer=module, imported=imported))
                broken.append((module, imported, lines))
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        broken: list[Any] = check.metadata["broken"]
        for module, imported, lines in broken:
            output.print_error(f"{module} imports {imported} (line {', '.join(map(str, lines))})", bold=False)
            output.new_line()
