import pytest

# The rig's consistency checks are plain asserts: show their values when they fail.
pytest.register_assert_rewrite("tests.faults.rig")
