"""docs/reproduction.md: linked from the README, its links resolve, its tables quote the
published ones."""

import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PAGE = os.path.join(REPO, "docs", "reproduction.md")
QUOTE = re.compile(r"<!-- quoted from (\S+) -->\n(.*?)<!-- end of quote -->", re.S)


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


def test_reproduction_page_quotes_the_published_tables_verbatim():
  with open(PAGE, encoding="utf-8") as f:
    page = f.read()
  quotes = QUOTE.findall(page)
  assert quotes
  for source, block in quotes:
    with open(os.path.join(os.path.dirname(PAGE), source), encoding="utf-8") as f:
      published = f.read()
    assert block.strip() and block.strip() in published, source
