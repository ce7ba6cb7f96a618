"""Every training family satisfies the Family protocol that train() is written against."""

from __future__ import annotations

import pytest

from convert.families.backbone import BackboneFamily
from convert.families.base import Family
from convert.families.cnn import CnnFamily
from convert.options import TrainOptions
from convert.train import FAMILY_CLASSES

pytestmark = pytest.mark.train


@pytest.mark.parametrize("cls", [BackboneFamily, CnnFamily])
def test_each_family_is_a_family(cls):
    family = cls(TrainOptions(data="unused", out="unused"))
    assert isinstance(family, Family)
    assert family.name in FAMILY_CLASSES and FAMILY_CLASSES[family.name] is cls


def test_a_class_missing_part_of_the_protocol_is_not_a_family():
    family = CnnFamily(TrainOptions(data="unused", out="unused"))

    class Partial:
        name, params, parity_reference = family.name, family.params, family.parity_reference
        estimate_seconds = prepare = cross_validate = fit = to_tflite = family.fit  # no int8_block_scores etc.

    assert not isinstance(Partial(), Family)
