"""Checks across every op's tester (camfast_testing.op_tester)."""

from camfast import reference
from camfast_testing.op_tester import all_op_testers


def test_every_op_has_a_collected_tester():
    """Each op with a reference is tested by a Test<Op> class in tests/test_<op>.py."""
    found = all_op_testers()
    assert [t.op for t in found] == list(reference.__all__)
    for tester in found:
        assert type(tester).__name__.startswith("Test"), f"pytest does not collect {type(tester).__name__}"
        assert type(tester).__module__ == f"test_{tester.op}"
