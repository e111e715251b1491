import pytest

from mathforge.markdown import table

# (headers, rows, align, lines)
TABLES = [
    (("a", "b"), [(1, 2)], "", ["| a | b |", "|---|---|", "| 1 | 2 |"]),
    (("name", "n", "%"), [("x", 3, "1.0")], "lr", ["| name | n | % |", "|---|---:|---|", "| x | 3 | 1.0 |"]),
    (("size",), [], "r", ["| size |", "|---:|"]),
    (("gold",), [("1|2\nx",)], "", ["| gold |", "|---|", "| 1\\|2 x |"]),  # a pipe or a line break would end the cell
    (("v",), [(None,)], "", ["| v |", "|---|", "| None |"]),
]


@pytest.mark.parametrize(("headers", "rows", "align", "lines"), TABLES)
def test_table(headers: tuple, rows: list, align: str, lines: list[str]) -> None:
    assert table(headers, rows, align) == lines
