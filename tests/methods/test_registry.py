"""Method registry: registration, lookup, clear errors."""

import pytest
from torch import nn

from benchmark.methods import SegmentationMethod, register_method
from benchmark.methods.catalog import create_method, list_methods


def test_muss_is_registered_and_builds():
    assert "muss" in list_methods()
    method = create_method("muss", modalities={"rgb": 3, "dsm": 1}, num_classes=4)
    assert isinstance(method, SegmentationMethod)
    assert method.method_name == "muss"


def test_unknown_method_names_the_registered_ones():
    with pytest.raises(KeyError, match="muss"):
        create_method("no-such-method", modalities={"rgb": 3}, num_classes=2)


def test_bad_parameters_name_the_method():
    with pytest.raises(TypeError, match="muss"):
        create_method("muss", modalities={"rgb": 3}, num_classes=2, not_a_param=1)


def test_register_rejects_bad_names_and_conflicts():
    with pytest.raises(ValueError):
        register_method("Bad Name")

    @register_method("test-registry-dummy")
    class Dummy(nn.Module):
        pass

    with pytest.raises(ValueError, match="already registered"):

        @register_method("test-registry-dummy")
        class Other(nn.Module):
            pass
