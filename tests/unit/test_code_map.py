"""The README's map of the code names every module and folder of the package."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_map_names_every_module_and_folder():
    readme = (REPO / "README.md").read_text()
    start = readme.index("## The code\n")
    section = readme[start:readme.index("\n## ", start + 1)]
    package = REPO / "src" / "variant"
    entries = [p for p in package.iterdir() if not p.name.startswith("_")
               and (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))]
    assert len(entries) > 10
    missing = [p.name for p in entries
               if f"`src/variant/{p.name}{'/' if p.is_dir() else ''}`" not in section]
    assert not missing, f"README.md's 'The code' does not name: {', '.join(sorted(missing))}"
