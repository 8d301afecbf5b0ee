"""docs/reproduction.md: linked from the README, its links resolve, its tables quote the
published ones."""

import os
import re

import pytest

from jaxdev import errors
from jaxdev.report import page as page_lib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PAGE = os.path.join(REPO, "docs", "reproduction.md")


def test_reproduction_page_is_linked_and_its_links_resolve():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    assert "(docs/reproduction.md)" in f.read()
  with open(PAGE, encoding="utf-8") as f:
    page = f.read()
  links = re.findall(r"\]\(([^)#\s]+)\)", page)
  local = [link for link in links if "://" not in link]
  assert any(link.endswith(".png") for link in local)
  for link in local:
    assert os.path.exists(os.path.join(os.path.dirname(PAGE), link)), link


def test_reproduction_page_quotes_the_published_tables_whole_and_current():
  with open(PAGE, encoding="utf-8") as f:
    page = f.read()
  quotes = page_lib.QUOTE.findall(page)
  assert len(quotes) >= 8 and all(block.strip() for _, _, _, block, _ in quotes)
  assert page.count("<!-- quoted from") == len(quotes)  # no marker the pattern misses
  assert page_lib.requoted_page(PAGE) == (page, page)


_COMPARISON = "### LLC\n\n| step | llc |\n|---|---|\n| 0 | 4.1 |\n\n### Stage boundaries\n\n| a |\n"


def _page(llc_block):
  return ("# A page\n\nProse stays.\n"
          '<!-- quoted from run/comparison.md, section "LLC" -->\n'
          f"{llc_block}<!-- end of quote -->\nMore prose.\n"
          '<!-- quoted from run/comparison.md, section "Stage boundaries" -->\n'
          "| a |\n<!-- end of quote -->\n")


def test_requote_refills_each_block_from_its_named_section_and_keeps_the_prose():
  assert page_lib.sections(_COMPARISON) == {"LLC": "| step | llc |\n|---|---|\n| 0 | 4.1 |",
                                           "Stage boundaries": "| a |"}
  stale = _page("| step | llc |\n|---|---|\n| 0 | 3.9 |\n")
  fresh = page_lib.requote(stale, lambda path: _COMPARISON)
  assert fresh == _page("| step | llc |\n|---|---|\n| 0 | 4.1 |\n")
  assert page_lib.requote(fresh, lambda path: _COMPARISON) == fresh
  with pytest.raises(errors.UserError, match='no section "LLC"'):
    page_lib.requote(stale, lambda path: "### Hessian\n\n| x |\n")
  reads = []
  page_lib.requote(stale, lambda path: reads.append(path) or _COMPARISON)
  assert reads == ["run/comparison.md"]  # two blocks, one file: read once


def test_requote_page_rewrites_the_page_or_leaves_it_whole(tmp_path):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "comparison.md").write_text(_COMPARISON)
  page = tmp_path / "page.md"
  page.write_text(_page("| stale |\n"))
  assert page_lib.requote_page(str(page)) is True
  assert page.read_text() == _page("| step | llc |\n|---|---|\n| 0 | 4.1 |\n")
  assert page_lib.requote_page(str(page)) is False
  (tmp_path / "run" / "comparison.md").unlink()
  with pytest.raises(errors.UserError, match="quotes run/comparison.md, which does not exist"):
    page_lib.requote_page(str(page))
  assert page.read_text() == _page("| step | llc |\n|---|---|\n| 0 | 4.1 |\n")
