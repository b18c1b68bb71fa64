"""Helpers shared by the tests and the benchmarks (throwaway model folders); not part of the deepwml package.

Lives beside ``deepwml/`` at the top of the repository and is not installed: pytest finds it through
``pythonpath = .`` in setup.cfg, the benchmarks put the repository root on ``sys.path`` themselves.
"""
