"""The registry: names, clear errors for unknown names and arguments, recorded build arguments."""

import pytest

import targets
from targets.registry import info


def test_names_list_the_synthetic_targets():
    assert {"funnel", "gmm40", "mos"} <= set(targets.names())


def test_unknown_name_lists_what_exists():
    with pytest.raises(targets.TargetError, match=r"unknown target 'nope'.*funnel.*gmm40"):
        targets.make("nope")


def test_unknown_argument_lists_accepted_ones():
    with pytest.raises(targets.TargetError, match=r"no argument\(s\) dims; it accepts: dim, scale"):
        targets.make("funnel", dims=3)


def test_bad_value_is_a_target_error_naming_the_target():
    with pytest.raises(targets.TargetError, match="target 'funnel': dim must be >= 2"):
        targets.make("funnel", dim=1)


def test_make_records_its_arguments_and_info_needs_no_data():
    gmm = targets.make("gmm40", dim=3)
    assert gmm.make_args == {"name": "gmm40", "kwargs": {"dim": 3}}
    assert gmm.dim == 3
    facts = info("gmm40")
    assert facts.log_Z and facts.samples and facts.modes
