"""No blocking database access inside `async def` (STYLE: "Synchronous SQL ... inside
`async def`" is a smell we have had).

The check reads the package's source (AST, no import). Inside each `async def` it flags:
- `<db>.read()`, `<db>.write()` or any other `Database` method on a database
  expression (a name `db`, or an attribute `.db` / `._db`, e.g. `runtime(request).db`);
- `<conn>.execute(...)` on a connection (a name or attribute `conn`);
- a call that is handed the database (`f(db, ...)`) and is not awaited, i.e. a
  synchronous helper that will query it.
Code in a nested `def` or `lambda` is not checked here: it is what gets handed to a
thread (`run_in_threadpool`, `asyncio.to_thread`, the dashboard's `in_thread`); so is a
call whose function is one of those.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

from mailbeacon.storage.db import Database

PACKAGE = Path(__file__).resolve().parents[1] / "mailbeacon"
DATABASE_METHODS = frozenset(name for name, _ in inspect.getmembers(Database)
                             if not name.startswith("_"))
THREAD_HANDOFFS = frozenset({"run_in_threadpool", "to_thread", "in_thread", "run_in_executor",
                             "run_sync"})
# Called with the database inside `async def` and known not to touch it there: they keep
# it for later use in threads (constructors).
NOT_BLOCKING = frozenset({"SmtpHandler"})


def _is_db(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id == "db"
    return isinstance(node, ast.Attribute) and node.attr in ("db", "_db")


def _is_conn(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id == "conn"
    return isinstance(node, ast.Attribute) and node.attr in ("conn", "_conn")


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else ""


def _own_nodes(function: ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """The nodes of `function`'s body, not those of nested functions or lambdas."""
    todo: list[ast.AST] = list(function.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def blocking_calls(source: str, filename: str = "<source>") -> list[str]:
    """`file:line: call` for every blocking database call made directly in an async def."""
    tree = ast.parse(source, filename)
    awaited = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Await)}
    found: list[str] = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.AsyncFunctionDef):
            continue
        for node in _own_nodes(function):
            if not isinstance(node, ast.Call) or _name(node.func) in THREAD_HANDOFFS:
                continue
            func = node.func
            blocking = (
                isinstance(func, ast.Attribute) and (
                    (func.attr in DATABASE_METHODS and _is_db(func.value))
                    or (func.attr == "execute" and _is_conn(func.value))))
            blocking |= (id(node) not in awaited and _name(func) not in NOT_BLOCKING
                         and any(_is_db(arg) for arg in [*node.args,
                                                         *(k.value for k in node.keywords)]))
            if blocking:
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)[:80]} "
                             f"(in async def {function.name})")
    return sorted(found)


def test_no_blocking_database_calls_inside_async_def() -> None:
    found = [call for path in sorted(PACKAGE.rglob("*.py"))
             for call in blocking_calls(path.read_text(), str(path.relative_to(PACKAGE)))]
    assert found == []


def test_the_check_finds_blocking_calls() -> None:
    source = '''
async def handler(request, db):
    with db.read() as conn:                          # 1: Database method
        conn.execute(select(domains))                # 2: a connection
    runtime(request).db.write()                      # 3: the runtime's database
    get_domain(db, "example.com")                    # 4: a sync helper given the database
    helper(self._db, key=1)                          # 5: the same, held by an object
    await run_in_threadpool(get_domain, db, "x")     # handed to a thread
    await asyncio.to_thread(lambda: db.read())       # a lambda run in a thread
    await send_test(db, "url")                       # an async function: checked on its own

    def inner():
        with db.write() as conn:                     # a nested def, run in a thread
            conn.execute(x)
    return await in_thread(inner)

def sync(db):
    db.read()                                        # not async: fine
'''
    found = blocking_calls(source)
    assert [line.split(":")[1] for line in found] == ["3", "4", "5", "6", "7"], found
