"""The report: one profile's results (results.py) as the paper's tables (tables.py) and
figures (figures.py, sample grids in grids.py), the reviewer's paper check (check.py, against
the paper's numbers in paper/), and the files they are written to (outputs.py)."""
