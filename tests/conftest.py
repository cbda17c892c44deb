"""Test-wide settings.

Hypothesis: no per-example deadline anywhere. CI machines are shared and slow
at random moments; a timing failure in a property test is noise, not a bug
(speed is measured in tests/bench/ instead).
"""

from hypothesis import settings

settings.register_profile("zhtp", deadline=None)
settings.load_profile("zhtp")
