"""Shape rules of the code base that review found broken once: checked, not hoped for."""

import ast
import functools
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


# A test runs an entry point or a script as a user does when it calls one of
# these (directly, through a helper or a fixture of its module). A notebook's
# kernel (nbclient's NotebookClient) is a subprocess too.
SUBPROCESS_RUNNERS = re.compile(
    r"\b(run_script|run_bash|run_main|dry_run|only_call|loop_calls|train_and_eval|"
    r"subprocess\.run|subprocess\.Popen|mirrored_check|NotebookClient)\b"
)
# Fixtures (of conftest.py or a test file) that train a model or write a dataset;
# a fixture that takes one of them counts too.
TRAINING_FIXTURES = {"teacher", "tiny_data", "loop_run", "student_batch"}
# Dry runs of the shell scripts start only bash: e2e, but fast.
FAST_E2E_FILES = {"test_scripts.py"}


def _mark_names(node):
    """Names X of every pytest.mark.X inside `node`."""
    return {
        sub.attr
        for sub in ast.walk(node)
        if isinstance(sub, ast.Attribute)
        and isinstance(sub.value, ast.Attribute)
        and sub.value.attr == "mark"
    }


@functools.cache
def _conftest_functions():
    tree = ast.parse((ROOT / "tests" / "conftest.py").read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _fixture_closure(names, known):
    """`names` and every fixture they take, through the functions `known` by name."""
    closure, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            if name in known:
                todo.extend(a.arg for a in known[name].args.args)
    return closure


def _test_markers(path):
    """(test name, its markers, whether it starts a subprocess, its fixtures) per test."""
    text = path.read_text()
    tree = ast.parse(text)
    module_marks = set()
    functions = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            module_marks |= _mark_names(node.value)
        if isinstance(node, ast.FunctionDef):
            functions[node.name] = node

    def runs(node, depth=1):
        source = ast.get_source_segment(text, node)
        if SUBPROCESS_RUNNERS.search(source):
            return True
        called = {
            n.func.id
            for n in ast.walk(node)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        used = called | {a.arg for a in node.args.args}
        return depth > 0 and any(
            runs(functions[name], depth - 1) for name in used & functions.keys()
        )

    # A test file's fixtures shadow conftest.py's of the same name.
    known = {**_conftest_functions(), **functions}
    for name, node in functions.items():
        if name.startswith("test"):
            marks = module_marks | set().union(*map(_mark_names, node.decorator_list))
            fixtures = _fixture_closure({a.arg for a in node.args.args}, known)
            yield name, marks, runs(node), fixtures


def test_every_test_carries_the_markers_of_what_it_does():
    """Subprocess tests are e2e (and slow, but dry runs), training tests slow.

    The tiers of docs/contributing.md are explicit markers; this keeps them
    true as tests change.
    """
    wrong = []
    tests = sorted((ROOT / "tests").glob("test_*.py"))
    for path in tests:
        for name, marks, runs_subprocess, fixtures in _test_markers(path):
            need = set()
            if runs_subprocess:
                need |= {"e2e"} if path.name in FAST_E2E_FILES else {"e2e", "slow"}
            if fixtures & TRAINING_FIXTURES:
                need.add("slow")
            if need - marks:
                wrong.append(f"{path.name}::{name} needs {sorted(need - marks)}")
    assert len(tests) > 40
    assert not wrong, wrong


def test_the_longest_files_listed_for_the_workers_exist():
    """conftest.LONGEST_FILES start first; a renamed file would silently start last."""
    from conftest import LONGEST_FILES

    missing = [name for name in LONGEST_FILES if not (ROOT / "tests" / name).is_file()]
    assert not missing and len(set(LONGEST_FILES)) == len(LONGEST_FILES), missing
