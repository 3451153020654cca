"""Test helpers shared by the test modules (fixtures live here, not in conftest).

Import them as ``from helpers.shell import run_bash`` (pytest puts tests/ on
sys.path because tests/ is not a package).
"""
