"""Reading a cell: the names it needs from the notebook, what it binds, its last expression."""
from __future__ import annotations

import ast
import symtable
from dataclasses import dataclass

from ..errors import BundleError


# -- reading the cell ------------------------------------------------------------------------
@dataclass
class CellAnalysis:
    reads: list[str]            # names the cell needs from outside, in first-use order
    assigned: set[str]          # names the cell binds at its top level
    imported_modules: set[str]  # top-level modules of the cell's own import statements
    last_expr: bool


class _Reads(ast.NodeVisitor):
    """Module-level loads in execution order; nested scopes are left to ``symtable``."""

    def __init__(self):
        self.stored: set[str] = set()
        self.reads: list[str] = []
        self.local: list[set[str]] = []
        self.modules: set[str] = set()

    def load(self, name: str) -> None:
        if any(name in scope for scope in self.local):
            return
        if name not in self.stored and name not in self.reads:
            self.reads.append(name)

    def store(self, name: str) -> None:
        (self.local[-1] if self.local else self.stored).add(name)

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Store):
            self.store(node.id)
        else:
            self.load(node.id)

    def visit_Assign(self, node):
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)
            self.visit(node.target)

    def visit_AugAssign(self, node):
        if isinstance(node.target, ast.Name):
            self.load(node.target.id)
        self.visit(node.value)
        self.visit(node.target)

    def visit_NamedExpr(self, node):
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node):
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_withitem(self, node):
        self.visit(node.context_expr)
        if node.optional_vars is not None:
            self.visit(node.optional_vars)

    def visit_ExceptHandler(self, node):
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.store(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_Import(self, node):
        for alias in node.names:
            self.modules.add(alias.name.split(".")[0])
            self.store(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node):
        if node.level == 0 and node.module:
            self.modules.add(node.module.split(".")[0])
        for alias in node.names:
            if alias.name != "*":
                self.store(alias.asname or alias.name)

    def _def(self, node):
        for d in node.decorator_list:
            self.visit(d)
        args = node.args
        for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(default)
        self.store(node.name)

    visit_FunctionDef = visit_AsyncFunctionDef = _def

    def visit_ClassDef(self, node):
        for item in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(item)
        self.store(node.name)

    def visit_Lambda(self, node):
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)

    def _comprehension(self, node):
        self.local.append(set())
        for gen in node.generators:
            self.visit(gen.iter)
            self.visit(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        for name in ("elt", "key", "value"):
            if getattr(node, name, None) is not None:
                self.visit(getattr(node, name))
        self.local.pop()

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    def visit_Delete(self, node):
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.load(target.id)
            else:
                self.visit(target)


def _nested_globals(table: symtable.SymbolTable) -> set[str]:
    """Global names that functions, classes and lambdas of the cell refer to."""
    out: set[str] = set()
    for child in table.get_children():
        for sym in child.get_symbols():
            if sym.is_referenced() and (sym.is_global() or
                                        (child.get_type() == "class" and not sym.is_assigned()
                                         and not sym.is_local())):
                out.add(sym.get_name())
        out |= _nested_globals(child)
    return out


def parse_cell(source: str, first_line: int = 1) -> ast.Module:
    """The cell's syntax tree, or a BundleError naming the line as the notebook numbers it."""
    try:
        return ast.parse(source)
    except SyntaxError as e:
        line = (e.lineno or 1) + first_line - 1
        text = (e.text or "").strip()
        hint = ""
        if text.startswith(("%", "!")):
            hint = (" IPython magics and shell commands (%... and !...) cannot run in the "
                    "container: put them in another cell.")
        raise BundleError(f"the cell does not parse: {e.msg} at line {line}"
                          + (f": {text}" if text else "") + f".{hint} Nothing was started.") \
            from None


def analyse(source: str, first_line: int = 1) -> CellAnalysis:
    tree = parse_cell(source, first_line)
    visitor = _Reads()
    for stmt in tree.body:
        visitor.visit(stmt)
    top = symtable.symtable(source, "<cell>", "exec")
    assigned = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    reads = list(visitor.reads)
    for name in sorted(_nested_globals(top)):
        if name not in assigned and name not in reads:
            reads.append(name)
    last = bool(tree.body) and isinstance(tree.body[-1], ast.Expr) and \
        not source.rstrip().endswith(";")   # as in IPython, a trailing ; hides the value
    return CellAnalysis(reads, assigned | visitor.stored, visitor.modules, last)


def split_last_expression(source: str, first_line: int, last_expr: bool
                          ) -> tuple[str, str | None]:
    """The cell as (statements, last expression), padded so line numbers match the cell.

    Done here, not in the run, so the runner needs no ``ast`` (its import is a third of a
    trivial run's start-up).
    """
    pad = "\n" * (first_line - 1)
    if not last_expr:
        return pad + source, None
    node = ast.parse(source).body[-1]
    lines = source.splitlines(keepends=True)
    head = lines[node.lineno - 1].encode()[:node.col_offset].decode()
    body = "".join(lines[:node.lineno - 1]) + head
    expression = ast.get_source_segment(source, node)
    return pad + body, "\n" * (first_line - 1 + node.lineno - 1) + expression
