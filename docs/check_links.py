"""Checks the internal links of the built documentation site: every relative ``href``/``src`` of its pages names a
file of the site, and every ``#anchor`` an id in its page. External links (``http(s)://``, ``mailto:``) are not
followed.

Usage: ``python3 docs/check_links.py docs/_build/html``. Prints each broken link (page, link) and exits with 1 if
there is any, else prints the number of links checked and exits with 0.
"""

from __future__ import annotations

import html.parser
import pathlib
import sys
import urllib.parse


class _Page(html.parser.HTMLParser):
    """The ids and the link targets (``href``, ``src``) of one HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value and (name == "id" or tag == "a"):
                self.ids.add(value)
            elif name in ("href", "src") and value is not None:
                self.links.append(value)


def _parse(path: pathlib.Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def broken_links(root: pathlib.Path) -> tuple[list[tuple[str, str]], int]:
    """``([(page, link)] broken, number of internal links checked)`` over every ``.html`` file under ``root``."""
    root = root.resolve()
    # the site's pages; _static/ holds the theme's assets (its .html files are templates, not pages)
    pages = {
        path: _parse(path) for path in sorted(root.rglob("*.html")) if "_static" not in path.relative_to(root).parts
    }
    broken, checked = [], 0
    for path, page in pages.items():
        for link in page.links:
            parts = urllib.parse.urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("javascript:", "data:")):
                continue  # external: not checked (the build runs offline)
            checked += 1
            target = path if not parts.path else (path.parent / urllib.parse.unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or not target.is_relative_to(root):
                broken.append((str(path.relative_to(root)), link))
                continue
            fragment = urllib.parse.unquote(parts.fragment)
            if fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if fragment not in ids:
                    broken.append((str(path.relative_to(root)), link))
    return broken, checked


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not pathlib.Path(argv[0]).is_dir():
        print("usage: python3 docs/check_links.py BUILT_HTML_DIR (a folder, e.g. docs/_build/html)", file=sys.stderr)
        return 2
    broken, checked = broken_links(pathlib.Path(argv[0]))
    for page, link in broken:
        print(f"{page}: broken link {link}")
    print(f"{checked} internal links checked, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
