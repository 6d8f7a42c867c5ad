"""The paper's numbers as data (numbers.csv) and a check of the paper against itself."""
from variant.report.paper.consistency import check_paper
from variant.report.paper.numbers import load_paper_numbers, paper_table, paper_value, validate_numbers

__all__ = ["check_paper", "load_paper_numbers", "paper_table", "paper_value", "validate_numbers"]
