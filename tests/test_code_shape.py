"""Shape rules of the code base that review found broken once: checked, not hoped for."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 100


def _python_files():
    for folder in (ROOT, ROOT / "tests", ROOT / "bench"):
        yield from sorted(folder.glob("*.py"))


def test_no_function_is_longer_than_100_lines():
    long = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, long


def test_facts_are_cited_from_the_projects_docs():
    """Citations name docs/ files that exist, never a SPEC outside the repository."""
    cited = set()
    for path in [*_python_files(), *sorted((ROOT / "local_scripts").rglob("*.sh"))]:
        text = path.read_text()
        assert not re.search(r"SPEC \u00a7", text), path
        cited.update(re.findall(r"docs/([a-z_]+\.md)", text))
    assert {"method.md", "pseudo_labels.md"} <= cited
    for name in cited:
        assert (ROOT / "docs" / name).is_file(), name
