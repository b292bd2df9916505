"""`make audit`: known vulnerabilities in the installed dependencies, via pip-audit.

Never a silent "no vulnerabilities": when PyPI's vulnerability data cannot be reached, or
knows none of the installed versions, this says that nothing was checked and exits 2; when it
knows only some, it names the rest and exits 3; a vulnerability exits 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from typing import Any

PROBE = "https://pypi.org/pypi/pip/json"


def main() -> int:
    try:
        with urllib.request.urlopen(PROBE, timeout=10) as answer:
            answer.read(1)
    except OSError as exc:
        print(f"audit NOT DONE: PyPI's vulnerability data is unreachable ({exc}).")
        print("Nothing was checked; run `make audit` where https://pypi.org can be reached.")
        return 2
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--local",
        "--progress-spinner",
        "off",
        "-f",
        "json",
    ]
    # pip-audit exits 1 when it finds something; its JSON says what, and what it skipped.
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        print("audit NOT DONE: pip-audit failed:", done.stderr.strip()[-500:])
        return 2
    return summarise(report["dependencies"])


def summarise(dependencies: list[dict[str, Any]]) -> int:
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if "skip_reason" in d]
    audited = len(dependencies) - len(skipped)
    for dep in vulnerable:
        ids = ", ".join(v["id"] for v in dep["vulns"])
        print(f"VULNERABLE {dep['name']} {dep['version']}: {ids}")
    print(
        f"{audited} of {len(dependencies)} installed packages audited, {len(vulnerable)} vulnerable."
    )
    if skipped:
        names = ", ".join(f"{d['name']} {d.get('version', '?')}" for d in skipped)
        print(f"NOT AUDITED ({len(skipped)}; the database does not know them): {names}")
    if vulnerable:
        return 1
    if audited == 0:
        print("audit NOT DONE: no package could be checked.")
        return 2
    return 3 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
