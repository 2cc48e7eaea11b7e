"""transformers' own common model and config tests (`ModelTesterMixin`, `ConfigTester`) on every model of the package,
modelled on transformers' LayoutLM test (tests/models/layoutlm/test_modeling_layoutlm.py).

The tests are the installed transformers version's, from its source archive on PyPI (`transformers_test_suite` in
conftest downloads it once and caches its `tests/`); nothing of them is copied here. Without the archive (no network,
pip failing) the module skips, saying why. Every adjustment of the harness below says why it is there; no common
test is switched off (the one expected failure runs, marked with its cause).
"""

from __future__ import annotations

import sys
import types
import unittest
from unittest import mock

import pytest
import torch
from conftest import transformers_test_suite

# About 5 minutes on 2 CPU cores (the quick tier's budget is well under one), and the first run downloads the archive.
pytestmark = pytest.mark.slow

try:
    TRANSFORMERS_TESTS = transformers_test_suite()
except RuntimeError as err:
    pytest.skip(f"transformers' common tests are not available: {err}", allow_module_level=True)
# transformers' test modules use `parameterized` (a test dependency of transformers, in this project's [dev] extra).
pytest.importorskip(
    "parameterized", reason="transformers' common tests need `parameterized` (pip install parameterized)"
)
sys.path.insert(0, str(TRANSFORMERS_TESTS))


def _stand_in(name: str, **attributes) -> None:
    """Put a module `transformers_tests.<name>` holding `attributes` in `sys.modules`, unless the archive has it."""
    path = TRANSFORMERS_TESTS / "transformers_tests" / name.replace(".", "/")
    if path.is_dir() or path.with_suffix(".py").is_file():
        return
    module = types.ModuleType(f"transformers_tests.{name}")
    module.__dict__.update(attributes)
    sys.modules[module.__name__] = module


# The source archive ships tests/*.py but not the subfolders three of them import (the repository has them). Stand-ins:
# - `exporters.test_export.ExportTesterMixin`, a base class of `ModelTesterMixin` holding the `torch.export` tests:
#   empty, so those tests are not run (they are not in the archive).
# - `generation.test_utils.GenerationTesterMixin`: empty; `ModelTesterMixin` only checks that a model that cannot
#   `generate` (these cannot) is not tested with it.
# - `utils.test_configuration_utils.config_common_kwargs`: the `PreTrainedConfig` arguments that
#   `ConfigTester.check_config_arguments_init` sets and reads back; these are `PreTrainedConfig`'s own fields.
_stand_in("exporters")
_stand_in("exporters.test_export", ExportTesterMixin=type("ExportTesterMixin", (), {}))
_stand_in("generation")
_stand_in("generation.test_utils", GenerationTesterMixin=type("GenerationTesterMixin", (), {}))
_stand_in("utils")
_stand_in(
    "utils.test_configuration_utils",
    config_common_kwargs={
        "return_dict": False,
        "output_hidden_states": True,
        "dtype": "float16",
        "chunk_size_feed_forward": 5,
        "architectures": ["LayoutLMRoIAlignForTokenClassification"],
        "problem_type": "regression",
    },
)

from transformers import (  # noqa: E402
    MODEL_FOR_MASKED_LM_MAPPING,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING,
    MODEL_MAPPING,
)
from transformers.models.auto import modeling_auto  # noqa: E402
from transformers_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor  # noqa: E402

from layoutlm_roialign import (  # noqa: E402
    LayoutLMRoIAlignConfig,
    LayoutLMRoIAlignForMaskedLM,
    LayoutLMRoIAlignForRelationExtraction,
    LayoutLMRoIAlignForSequenceClassification,
    LayoutLMRoIAlignForTokenClassification,
    LayoutLMRoIAlignModel,
)

# The common tests tell a base model from a head, and which labels a head takes, by class name in transformers'
# `MODEL_*_MAPPING_NAMES` tables. `AutoModel*.register` (what the package does on import) reaches the Auto classes'
# mappings but not those tables, and transformers has no public way to add to them; so the harness adds the
# package's registrations, read from the Auto mappings, to the tables while these tests run.
_NAME_TABLES = {
    "MODEL_MAPPING_NAMES": MODEL_MAPPING,
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES": MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING,
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES": MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES": MODEL_FOR_MASKED_LM_MAPPING,
}


def _registered_names(mapping) -> str | tuple[str, ...]:
    classes = mapping[LayoutLMRoIAlignConfig]
    return tuple(c.__name__ for c in classes) if isinstance(classes, tuple) else classes.__name__


class LayoutLMRoIAlignModelTester:
    """Tiny configs and random inputs, as transformers' `LayoutLMModelTester` builds them, plus the page images."""

    def __init__(self, parent, batch_size=13, seq_length=7, image_size=64, num_labels=3, num_entities=3):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.image_size = image_size
        self.num_labels = num_labels
        self.num_entities = num_entities
        self.is_training = True
        self.vocab_size = 99
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.type_vocab_size = 16
        self.type_sequence_label_size = 2

    def get_config(self) -> LayoutLMRoIAlignConfig:
        return LayoutLMRoIAlignConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=37,
            max_position_embeddings=512,
            type_vocab_size=self.type_vocab_size,
            num_labels=self.num_labels,
            # ResNet-18 cut after `layer1` (stride 4): `test_model_is_small` wants the common tests' models under 1M
            # parameters, and the package's default cut (`layer3`) alone has 2.8M.
            backbone="resnet18",
            backbone_return_node="layer1",
            image_size=self.image_size,
        )

    def prepare_config_and_inputs_for_common(self) -> tuple[LayoutLMRoIAlignConfig, dict]:
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        # Legal boxes (x0 <= x1, y0 <= y1), as LayoutLM's tester makes them.
        corners = ids_tensor([self.batch_size, self.seq_length, 2, 2], 1000)
        bbox = torch.cat([corners.min(dim=2).values, corners.max(dim=2).values], dim=-1)  # (B, L, 4)
        inputs = {
            "input_ids": input_ids,
            "bbox": bbox,
            "token_type_ids": ids_tensor([self.batch_size, self.seq_length], self.type_vocab_size),
            "attention_mask": ids_tensor([self.batch_size, self.seq_length], vocab_size=2),
            "pixel_values": floats_tensor([self.batch_size, 3, self.image_size, self.image_size]),
        }
        return self.get_config(), inputs

    def entity_inputs(self, batch_size: int) -> dict:
        """Entities for the linking head (its `link_logits` are computed only with `entity_spans`): consecutive
        one-token spans after [CLS]."""
        starts = torch.arange(1, self.num_entities + 1)
        spans = torch.stack([starts, starts + 1], dim=-1).expand(batch_size, -1, -1).clone()
        return {"entity_spans": spans}


class LayoutLMRoIAlignModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (
        LayoutLMRoIAlignModel,
        LayoutLMRoIAlignForTokenClassification,
        LayoutLMRoIAlignForSequenceClassification,
        LayoutLMRoIAlignForMaskedLM,
        LayoutLMRoIAlignForRelationExtraction,
    )
    # The tests that rebuild the inputs from the main one (`input_ids`) take these from the tester's too: the models
    # refuse to run without the tokens' boxes and the page images.
    additional_model_inputs = ["bbox", "pixel_values"]
    # `test_can_init_all_missing_weights` (does `_init_weights` reach every weight) skips models whose config file
    # starts with a copyright year before 2023, or none, as ours does, unless they opt in; they are not excused.
    test_can_init_all_missing_weights_before_2023 = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._tables = [
            mock.patch.dict(getattr(modeling_auto, name), {LayoutLMRoIAlignConfig.model_type: _registered_names(m)})
            for name, m in _NAME_TABLES.items()
        ]
        for table in cls._tables:
            table.start()

    @classmethod
    def tearDownClass(cls):
        for table in cls._tables:
            table.stop()
        super().tearDownClass()

    def setUp(self):
        self.model_tester = LayoutLMRoIAlignModelTester(self)
        self.config_tester = ConfigTester(self, config_class=LayoutLMRoIAlignConfig, hidden_size=37)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if model_class is LayoutLMRoIAlignForRelationExtraction:
            # The linking head runs only with entities; its labels are link labels besides the token labels.
            # (Some tests cut the batch before this: the entities follow the batch of `input_ids`.)
            batch_size = inputs["input_ids"].shape[0]
            inputs.update(self.model_tester.entity_inputs(batch_size))
            if return_labels:
                num_entities = self.model_tester.num_entities
                links = torch.zeros(batch_size, num_entities, num_entities, dtype=torch.long)
                links[:, 0, 1] = 1  # entity 0 is the key of entity 1; the others have no key
                inputs["link_labels"] = links
        return inputs

    def test_config(self):
        self.config_tester.run_common_tests()

    # Not switched off: it runs, and only a ValueError counts as the expected failure (any other failure fails).
    # Its last step calls the reloaded base model with `input_ids` alone, and the test cannot be given other inputs
    # there; the model refuses a call without the tokens' boxes and the page images with a ValueError naming `bbox`,
    # by design (LayoutLM's default, all-zero boxes and no page, would give a layout model's outputs that mean
    # nothing, silently). Everything the test checks before that step (the size-mismatched heads reinitialized, the
    # log line) passes. Not strict: the failure is in a subtest, and pytest counts the test itself as passing.
    @pytest.mark.xfail(raises=ValueError, reason="the base model needs `bbox` and `pixel_values`")
    def test_load_with_mismatched_shapes(self):
        super().test_load_with_mismatched_shapes()
