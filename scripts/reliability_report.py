"""The reliability table: run the reliability, security and conformance tests, write docs/.

`invoke reliability-report` (or `python -m scripts.reliability_report`) runs pytest on
the test files below with --junitxml and turns the result into docs/reliability.md: one
row per case, totals, the date, and the summary the OCI conformance test leaves in
docs/oci-conformance/. The module is also loaded into that pytest run as a plugin, so
cases left out by -k or -m are listed as not run instead of silently missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "reliability.md"
CONFORMANCE_SUMMARY = REPO / "docs" / "oci-conformance" / "summary.json"
# Each file with the section its tests belong to; `# --- auth ---` style headers inside a
# file that name another section (test_security.py) override it from there on.
TEST_FILES = {
    "tests/cluster/test_bad_input.py": "bad input",
    "tests/cluster/test_preflight.py": "bad input",
    "tests/cluster/test_security.py": "auth",
    "tests/cluster/test_docker_client.py": "auth",  # README's docker lines, login to logout
    "tests/cluster/test_tls_modes.py": "TLS",
    "tests/cluster/test_faults.py": "faults",
    "tests/cluster/test_oci_conformance.py": "conformance",
    "tests/cluster/test_gc.py": "gc",  # only if it exists
    "tests/cluster/test_shared_cluster.py": "shared cluster",
    "tests/cluster/test_interruptions.py": "shared cluster",
    "tests/cluster/test_node_trust.py": "node trust and network",
    "tests/cluster/test_pull_only_access.py": "node trust and network",
    "tests/cluster/test_network_policy.py": "node trust and network",
    "tests/cluster/test_pod_security.py": "node trust and network",
}
SECTIONS = (
    "bad input",
    "auth",
    "TLS",
    "node trust and network",
    "durability",
    "faults",
    "conformance",
    "gc",
    "shared cluster",
)
RESULTS = ("passed", "failed", "error", "xfailed", "skipped", "not run")
DESELECTED_ENV = "RELIABILITY_REPORT_DESELECTED"
_HEADER = re.compile(r"#\s*-+\s*(.+?)\s*-+\s*$")
_TEST_DEF = re.compile(r"(?:async\s+)?def\s+(test_\w+)")


def pytest_deselected(items: list[Any]) -> None:
    """pytest hook, active when pytest loads this module: note what -k or -m left out."""
    target = os.environ.get(DESELECTED_ENV)
    if target:
        with open(target, "a") as out:
            out.writelines(f"{item.nodeid}\n" for item in items)


@dataclass(frozen=True)
class Case:
    file: str
    test: str  # the test function with its parameters, as pytest names it
    section: str
    result: str
    seconds: float
    note: str

    @property
    def readable(self) -> str:
        """test_plain_http_serves_no_content[x] -> 'plain http serves no content (x)'."""
        function, _, params = self.test.partition("[")
        words = function.removeprefix("test_").replace("_", " ")
        return f"{words} ({params.removesuffix(']')})" if params else words


def sections_of(path: Path, default: str) -> dict[str, tuple[str, int]]:
    """Test function -> (section, line): the file's default or the last header above it."""
    known = {section.lower(): section for section in SECTIONS}
    current, found = default, {}
    for number, line in enumerate(path.read_text().splitlines()):
        header = _HEADER.fullmatch(line.strip())
        if header and header.group(1).lower() in known:
            current = known[header.group(1).lower()]
        elif test := _TEST_DEF.match(line):
            found[test.group(1)] = (current, number)
    return found


def _note(element: ET.Element) -> str:
    """Skip and xfail reasons are the tests' own words; of a failure only its type.

    A failed assertion can quote what it compared, a password included, and this file
    is committed: the details stay in the pytest output.
    """
    message = (element.get("message") or "").strip().splitlines()
    if element.tag == "skipped":
        text = message[0] if message else ""
        return text.removeprefix("Skipped: ").removeprefix("XFailed: ")
    kind = (message[0].split(":", 1)[0] if message else "").strip()
    where = "in setup or teardown" if element.tag == "error" else ""
    return " ".join(part for part in (kind[:60], where, "(details in the pytest output)") if part)


def _result(testcase: ET.Element) -> tuple[str, str]:
    for tag, result in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        element = testcase.find(tag)
        if element is None:
            continue
        if tag == "skipped" and element.get("type") == "pytest.xfail":
            result = "xfailed"
        return result, _note(element)
    return "passed", ""


def parse_cases(
    junit: Path, deselected: list[str], sections: dict[str, dict[str, tuple[str, int]]]
) -> list[Case]:
    """Every case pytest ran (from junit) and every case it was told to leave out.

    Sorted by section, then file, then where the test is defined, as a reader looks for it.
    """
    found: list[tuple[str, str, str, float, str]] = []
    for testcase in ET.parse(junit).getroot().iter("testcase"):
        file = testcase.get("classname", "").replace(".", "/") + ".py"
        result, note = _result(testcase)
        seconds = float(testcase.get("time") or 0)
        found.append((file, testcase.get("name", ""), result, seconds, note))
    for nodeid in deselected:
        file, _, test = nodeid.partition("::")
        found.append((file, test, "not run", 0.0, "deselected (-k/-m)"))
    files = list(TEST_FILES)
    keyed = []
    for seq, (file, test, result, seconds, note) in enumerate(found):
        default = (TEST_FILES.get(file, "?"), 0)
        section, line = sections.get(file, {}).get(test.partition("[")[0], default)
        rank = SECTIONS.index(section) if section in SECTIONS else len(SECTIONS)
        where = files.index(file) if file in files else len(files)
        keyed.append(((rank, where, line, seq), Case(file, test, section, result, seconds, note)))
    return [case for _, case in sorted(keyed, key=lambda pair: pair[0])]


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _time(case: Case) -> str:
    return "-" if case.result == "not run" else _duration(case.seconds)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(str(c)) for c in row) + " |" for row in rows]


def conformance_section(summary_file: Path, started: float) -> list[str]:
    """The conformance run the test recorded: totals, workflows, and every toggle's reason."""
    lines = ["## OCI distribution-spec conformance", ""]
    if not summary_file.is_file():
        return [
            *lines,
            "No conformance run recorded yet (tests/cluster/test_oci_conformance.py).",
            "",
        ]
    summary = json.loads(summary_file.read_text())
    stale = summary_file.stat().st_mtime < started
    suite, registry = summary["suite"], summary["registry"]
    lines += [
        f"The suite `{suite['module']}` at `{suite['version']}` (spec {suite['spec_version']})"
        f" against `{registry['image']}` at `{registry['address']}`: {registry['access']}."
        f" Run {summary['date']}"
        + (" (an earlier run: this report did not run the conformance test)." if stale else ".")
        + " The raw results are in [oci-conformance/](oci-conformance/): `results.yaml` as"
        " the suite wrote it, and `junit.xml` with the request dumps of passing cases left out.",
        "",
        "The suite's tally of checks:",
        "",
    ]
    counts = summary["counts"]
    keys = ["Pass", "FAIL", "Error", "Skip", "Disabled", "Total"]
    lines += _table(keys, [[counts.get(key, 0) for key in keys]])
    cases = summary["cases"]
    lines += [
        "",
        f"Its junit.xml has {sum(cases.values())} cases: {cases['passed']} passed,"
        f" {cases['failure']} failed, {cases['error']} errors, {cases['skipped']} skipped"
        " (disabled ones included).",
        "",
        "### The four workflows",
        "",
    ]
    rows = [
        [workflow, api, status]
        for workflow, apis in summary["workflows"].items()
        for api, status in apis.items()
    ]
    lines += _table(["workflow", "API", "status"], rows)
    lines += ["", "### Switched off, because distribution v3.1.2 does not implement it", ""]
    lines += _table(
        ["toggle (= false)", "why"], [[f"`{k}`", v] for k, v in summary["disabled_toggles"].items()]
    )
    lines += ["", "### Off by the suite's own defaults for spec 1.1", ""]
    lines += _table(
        ["toggle", "what it tests"],
        [[f"`{k}`", v] for k, v in summary["suite_defaults_off"].items()],
    )
    lines += [
        "",
        "### Skipped by the suite: optional APIs distribution answers with a fallback",
        "",
    ]
    lines += _table(["case", "why"], [[k, v] for k, v in summary["expected_skips"].items()])
    return [*lines, ""]


def render(
    cases: list[Case], *, args: list[str], exit_code: int, started: float, wall: float
) -> str:
    """The whole of docs/reliability.md."""
    date = dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    totals = Counter(case.result for case in cases)
    lines = [
        "# Reliability, security and conformance results",
        "",
        f"Generated by `invoke reliability-report` on {date}; do not edit by hand.",
        f"pytest arguments: `{shlex.join(args) or '(none)'}`; pytest exit code {exit_code};"
        f" wall time {_duration(wall)}.",
        "",
        "## Totals",
        "",
    ]
    lines += _table(
        ["result", "cases"],
        [[r, totals[r]] for r in RESULTS if totals[r]]
        + [["**all**", len(cases)], ["test time", _duration(sum(c.seconds for c in cases))]],
    )
    lines += ["", "By section:", ""]
    per_section = {s: Counter(c.result for c in cases if c.section == s) for s in SECTIONS}
    shown = [r for r in RESULTS if totals[r]]
    lines += _table(
        ["section", *shown],
        [[s, *(per_section[s][r] for r in shown)] for s in SECTIONS if per_section[s]],
    )
    lines += ["", "## Every case", ""]
    rows = [
        [i, c.readable, c.section, c.result, _time(c), f"`{c.file}`", c.note]
        for i, c in enumerate(cases, 1)
    ]
    lines += _table(["#", "case", "section", "result", "duration", "file", "note"], rows)
    lines += [""]
    lines += conformance_section(CONFORMANCE_SUMMARY, started)
    return "\n".join(lines)


def run(pytest_args: list[str], out: Path = OUT) -> int:
    """Run the tests, write the report (failures are results too); return pytest's code."""
    files = [name for name in TEST_FILES if (REPO / name).is_file()]
    sections = {name: sections_of(REPO / name, TEST_FILES[name]) for name in files}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        junit, deselected = Path(tmp) / "junit.xml", Path(tmp) / "deselected.txt"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "scripts.reliability_report",
            "-ra",
            f"--junitxml={junit}",
            *files,
            *pytest_args,
        ]
        env = {**os.environ, DESELECTED_ENV: str(deselected)}
        exit_code = subprocess.run(command, cwd=REPO, env=env, check=False).returncode
        if not junit.is_file():
            print(f"pytest wrote no results (exit code {exit_code}); report not written")
            return exit_code or 1
        left_out = deselected.read_text().splitlines() if deselected.is_file() else []
        cases = parse_cases(junit, left_out, sections)
    text = render(
        cases, args=pytest_args, exit_code=exit_code, started=started, wall=time.time() - started
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}: {len(cases)} cases")
    return exit_code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, one string")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the table")
    options = parser.parse_args()
    return run(shlex.split(options.pytest_args), options.out)


if __name__ == "__main__":
    sys.exit(main())
