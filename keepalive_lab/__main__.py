"""``python -m keepalive_lab``: the suite's Locust options and its commands.

Locust prints ``locust --help`` before it imports the locustfile, so options added by a plugin
never appear there; this page lists them instead.
"""

from __future__ import annotations

import sys
import textwrap

from keepalive_lab.options import NOT_FOR_OWN_CLIENT, OPTIONS, SERVER_OPTIONS, default_for

COMMANDS = (
    ("locust -f locustfiles/<scenario>.py [options]", "run a scenario (web UI, or --headless)"),
    (
        "locust -f mine.py,locustfiles/measure.py [options]",
        "measure your own locustfile's HttpUser and FastHttpUser classes, as written",
    ),
    ("python -m keepalive_lab.matrix matrices/seed.toml [--check]", "every seed scenario headless, then the report"),
    ("python -m keepalive_lab.lab [--port-range LO-HI] -- COMMAND", "run COMMAND in a private namespace (root)"),
    ("python -m keepalive_lab.sidecar --port PORT --out FILE [-- COMMAND]", "sample sockets to a CSV"),
    ("python -m keepalive_lab.target --port 0 --mode MODE", "the embedded target on its own"),
    ("python -m analysis report|check ...", "HTML report; gate rules"),
)


def main() -> int:
    print("keepalive-lab: Locust scenarios for HTTP connection reuse, TIME_WAIT and port exhaustion\n")
    print("Commands:")
    for cmd, what in COMMANDS:
        print(f"  {cmd}\n      {what}")
    print("\nOptions added to locust (defaults: the scenario's user class attributes, else these):")
    for opt in OPTIONS:
        default = default_for(opt, None)
        lab_only = "; LabUser scenarios only" if opt.attr in NOT_FOR_OWN_CLIENT else ""
        print(f"  {opt.flag} {opt.value_name}   [class attribute {opt.attr}; env {opt.env_var}{lab_only}]")
        text = opt.help + (f"; default {default}" if default is not None and not opt.switch else "")
        print(textwrap.fill(text, width=96, initial_indent="      ", subsequent_indent="      "))
    print("\nWhere the suite serves Prometheus metrics:")
    for flag, metavar, _, _, help_text in SERVER_OPTIONS:
        print(f"  {flag} {metavar}\n" + textwrap.fill(help_text, width=96, initial_indent="      ",
                                                     subsequent_indent="      "))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
