"""The matrix runner: every scenario of a TOML file, headless and isolated, then the report.

    python -m keepalive_lab.matrix FILE [--only NAME ...] [--check] [--junit FILE]
                                        [--run-dir DIR] [--out DIR]

Three stages, one module each: :mod:`~keepalive_lab.matrix.spec` reads and checks the file,
:mod:`~keepalive_lab.matrix.runner` runs each scenario in its own process group (and private
network namespace when root), :mod:`~keepalive_lab.matrix.summary` prints the results and gates
them; :mod:`~keepalive_lab.matrix.__main__` is the command.
"""
