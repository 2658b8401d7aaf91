"""The tests' waits: ``wait_until`` (a plain condition) and ``until`` (under a Textual pilot).

They live in screenshots/wait.py, because the wizard scenes there (run by the screenshots script
without the test package) wait the same way; the tests import them from here.
"""

from screenshots.wait import until, wait_until

__all__ = ["until", "wait_until"]
