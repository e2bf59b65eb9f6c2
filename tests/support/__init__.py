"""What the tests share, by responsibility (fixtures themselves stay in ``tests/conftest.py``).

- :mod:`tests.support.databases`: PostgreSQL test databases and SQLite files, settings for
  them, table snapshots and fingerprints, the fault suite's template tables.
- :mod:`tests.support.locks`: the cleanup lock seen from outside, and writes held back.
- :mod:`tests.support.processes`: the CLI and the real server as subprocesses.
- :mod:`tests.support.writer`: the concurrent writer, run in its own process.
- :mod:`tests.support.invariants`: the no-row-lost checks.
- :mod:`tests.support.trials`: the kill lab (templates, run-time model, trial planning).
- :mod:`tests.support.report`: the fault suite's numbers.

Imported as ``tests.support.<module>``: pytest puts the repository root on ``sys.path``
(``pythonpath = ["."]`` in pyproject.toml).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root."""
