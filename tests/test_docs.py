"""The README stays a short page for users, and the docs' relative links lead somewhere."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_README_LINES = 150
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def _markdown_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _links(path):
    """The link targets of a Markdown file, outside code blocks and code spans."""
    return LINK.findall(CODE.sub("", path.read_text()))


def test_readme_is_at_most_150_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, len(lines)


def test_relative_links_point_to_existing_files():
    broken = []
    for path in _markdown_files():
        for target in _links(path):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL (http:, mailto:, ...) or an anchor on the same page
            resolved = (path.parent / target.split("#")[0]).resolve()
            if not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_link_check_sees_the_readmes_links():
    targets = _links(ROOT / "README.md")
    assert "docs/results.md" in targets and "docs/reference.md" in targets


# A link followed by a quoted section name: [results.md](results.md), "XLA".
SECTION_LINK = re.compile(r"\]\(([^)\s#]+\.md)\),? \"([^\"]+)\"")


def test_quoted_sections_of_linked_pages_exist():
    """A section cited by name after a link begins a heading of the linked page."""
    cited, missing = 0, []
    for path in _markdown_files():
        for target, section in SECTION_LINK.findall(path.read_text()):
            page = path.parent / target
            if not page.exists():
                continue  # test_relative_links_point_to_existing_files names it
            headings = {
                line.lstrip("#").strip()
                for line in page.read_text().splitlines()
                if line.startswith("#")
            }
            cited += 1
            if not any(heading.startswith(section) for heading in headings):
                missing.append(f"{path.relative_to(ROOT)}: {target}, {section!r}")
    assert cited > 3
    assert not missing, missing
