"""The repository speaks of the software: its documents link to files that exist, and no document, test or
source file narrates how the package was made (work periods, assessments, tracker numbers, which machine was
available when). Technical words that merely look alike are allowed explicitly."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT = (".md", ".py", ".yaml", ".toml", ".sh", ".ipynb")
# what narrates development, and what each names; one letter of each key word sits in a character class, so this
# file does not itself read as the narration it forbids
HISTORY = [
    (r"\bsessio[n]s?\s+\d", "a numbered work period"),
    (r"\b(this|the|last|previous|next|earlier) sessio[n]\b", "a work period"),
    (r"\bsessio[n]'?s\b", "a work period's"),
    (r"\brevie[w] pass\b|\bthe revie[w]\b|\bfinal revie[w]\b", "an assessment of the work"),
    (r"\biss[u]e\s*#?\d+|\bthe iss[u]e (found|asked|feared|expected)", "a tracker entry"),
    (r"\bta[s]k\s*#?\d+|\bthis ta[s]k\b", "a tracker entry"),
    (r"\bwas le[n]t\b|\bno GPU wa[s]\b|\ble[n]t to\b", "which machine was available when"),
    (r"\bduring developmen[t]\b|\bdevelopmen[t] (run|machine|container)\b", "the making of the package"),
]
# technical uses that share a word with the patterns above
ALLOWED = [r"ray_session", r"runtime session", r"Ray session"]


def _files():
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / f for f in out if f.endswith(TEXT) and (ROOT / f).is_file()]


def test_no_document_test_or_source_narrates_how_the_package_was_developed():
    found = []
    allowed = re.compile("|".join(ALLOWED), re.I)
    for path in _files():
        if path == Path(__file__).resolve():
            continue
        for no, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
            clean = allowed.sub("", line)
            for pattern, what in HISTORY:
                if re.search(pattern, clean, re.I):
                    found.append(f"{path.relative_to(ROOT)}:{no}: {what}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("doc", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_every_relative_link_of_a_document_resolves(doc):
    text = (ROOT / doc).read_text()
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|#|mailto:", target):
            continue
        path = (ROOT / doc).parent / target.split("#")[0]
        if not path.exists():
            missing.append(target)
    assert not missing, f"{doc}: links to missing files {missing}"
    assert "../shared" not in text  # nothing outside the repository


def test_the_cli_reference_lists_every_command_and_option_of_the_parser():
    """docs/cli.md is generated from the parser (scaling.cli.cli_reference); a command or option added to the
    parser and not to the page fails here (the check is on names, not argparse's version-dependent layout)."""
    import argparse

    from scaling.cli import build_parser

    page = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in subs.choices.items():
        if f"## scaling {name}" not in page:
            missing.append(name)
        for action in sub._actions:
            missing += [f"{name} {opt}" for opt in action.option_strings if opt not in page]
    assert not missing, f"regenerate docs/cli.md from scaling.cli.cli_reference(): {missing}"


def test_the_configuration_reference_shows_every_typed_key_with_its_default():
    """docs/configuration.md carries the tables runners.config.section_reference() generates from the typed
    sections: a key or default changed in the type and not on the page fails here."""
    from runners.config import section_reference

    page = (ROOT / "docs" / "configuration.md").read_text()
    assert section_reference() in page, "regenerate the typed-section tables of docs/configuration.md"


def test_the_method_text_of_docs_report_summary_and_docstring_is_generated_from_the_running_constants(tmp_path):
    """Every place that describes the default method states it from the objects that run it: change a constant
    (STACKING_SHRINK, EVIDENCE_SE, BASE_CELL_SHARE, the laws) and the report, summary and docstring follow, while
    docs/statistics.md and the README, written by hand, fail this test until they are updated."""
    import scaling
    from analysis import equivalence, laws
    from scaling.report import write_report

    texts = [laws.reference_mixture_text(), equivalence.equivalence_weights_text(), equivalence.gain_base_text()]
    assert f"shrunk {laws.STACKING_SHRINK:.0%}" in texts[0] and f"over {laws.EVIDENCE_SE:g})" in texts[0]
    assert f"{equivalence.BASE_CELL_SHARE:.0%} the same seeds' base classifier" in texts[2]
    docs = " ".join((ROOT / "docs" / "statistics.md").read_text().split())
    assert all(t in docs for t in texts), [t for t in texts if t not in docs]
    share = equivalence.BASE_CELL_SHARE
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"({share:.0%} the same seeds' base classifier, {1 - share:.0%} the reference curve)" in readme
    doc = " ".join(scaling.fit_equivalence.__doc__.split())
    assert texts[0] in doc and texts[1] in doc
    cube = scaling.simulate_cube(seeds=3, random_state=4)
    report = " ".join(
        write_report(scaling.save_cube(cube, tmp_path / "c.nc"), tmp_path / "r", n_boot=50).read_text().split()
    )
    assert texts[0] in report and texts[1] in report and "exp(-SS/2) of their held-out extrapolation" not in report
    summary = " ".join(str(scaling.fit_equivalence(cube, "closed_set").summary()).split())
    assert texts[2] in summary
