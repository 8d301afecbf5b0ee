"""A Markdown page that quotes sections of comparison files, refilled from them.

A page quotes a section of a comparison file (:func:`jaxdev.report.compare.comparison_markdown`)
between two markers::

  <!-- quoted from reproduction/lr-seed0/comparison.md, section "Stage boundaries" -->
  | the section's table, as the file has it |
  <!-- end of quote -->

Everything outside the markers is the page author's and is never rewritten.
"""

from __future__ import annotations

import os
import re

from jaxdev import errors
from jaxdev import rundir

QUOTE = re.compile(r'(<!-- quoted from (\S+), section "([^"]+)" -->\n)(.*?)(<!-- end of quote -->)',
                   re.S)


def sections(markdown: str) -> dict:
  """The ``### title`` sections of a comparison file: {title: body}, bodies stripped of the blank
  lines around them."""
  out = {}
  for part in re.split(r"^### ", markdown, flags=re.M)[1:]:
    title, _, body = part.partition("\n")
    out[title.strip()] = body.strip("\n")
  return out


def requote(page: str, read) -> str:
  """``page`` (Markdown) with every quoted block refilled from the section it names.

  A quoted block runs from ``<!-- quoted from PATH, section "TITLE" -->`` to
  ``<!-- end of quote -->``; ``read(PATH)`` returns the text of the comparison file it quotes.
  Text outside the blocks is kept as it is. Raises a UserError naming the first block whose
  section does not exist.
  """
  parsed = {}  # path -> its sections: each file is read once however many blocks quote it

  def refill(match):
    head, path, title, _, tail = match.groups()
    if path not in parsed:
      parsed[path] = sections(read(path))
    found = parsed[path]
    if title not in found:
      raise errors.UserError(f'{path} has no section "{title}" (it has: {", ".join(found)})')
    return f"{head}{found[title]}\n{tail}"
  return QUOTE.sub(refill, page)


def requoted_page(page_path: str) -> tuple[str, str]:
  """(the Markdown page at ``page_path``, the same with its quoted blocks refilled from the
  comparison files they name, paths relative to the page; :func:`requote`). A UserError if a
  quoted file or section is missing."""
  with open(page_path, encoding="utf-8") as f:
    page = f.read()

  def read(path):
    full = os.path.join(os.path.dirname(page_path), path)
    if not os.path.isfile(full):
      raise errors.RunDirError(f"{page_path} quotes {path}, which does not exist")
    with open(full, encoding="utf-8") as f:
      return f.read()

  return page, requote(page, read)


def requote_page(page_path: str) -> bool:
  """Refills the quoted blocks of the page at ``page_path`` (:func:`requoted_page`), rewriting it
  atomically if anything changed. Returns whether it changed; on a UserError the page is left as
  it was."""
  page, new = requoted_page(page_path)
  if new != page:
    rundir.atomic_write_text(page_path, new)
  return new != page
