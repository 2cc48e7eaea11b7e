"""LayoutLM with RoIAlign image embeddings: the LayoutLM paper's "+image" model (Xu et al., 2020, section 2.2).

A torchvision backbone cut at a stride-16 stage runs on the page; `torchvision.ops.roi_align` pools one feature per
token box, projected and added to `transformers.LayoutLMModel`'s last hidden states. This file holds the models;
their parts are in the relative siblings (`visual_`, `linking_`, `checks_`, `saving_`, `heads_layoutlm_roialign.py`),
copied with it into every checkpoint: they import only torch, torchvision, transformers and each other.
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from torchvision.ops import FrozenBatchNorm2d
from transformers import LayoutLMModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.models.layoutlm.modeling_layoutlm import LayoutLMLMPredictionHead, LayoutLMOnlyMLMHead
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging

from .checks_layoutlm_roialign import check_entities, check_inputs, check_labels, check_link_inputs, input_shape
from .configuration_layoutlm_roialign import LayoutLMRoIAlignConfig
from .linking_layoutlm_roialign import (
    LayoutLMRoIAlignBiaffine,
    ScaledLinear,
    candidate_mask,
    candidate_type_pairs,
    entity_box_features,
    entity_boxes,
    entity_states,
    init_scaled_linear,
    link_log_probs,
    link_loss,
)
from .saving_layoutlm_roialign import copy_checkpoint_code, prepare_config_for_saving, register_heads
from .visual_layoutlm_roialign import LayoutLMRoIAlignVisualEmbeddings, backbone_stages

logger = logging.get_logger(__name__)

__all__ = [
    "LayoutLMRoIAlignPreTrainedModel",
    "LayoutLMRoIAlignModel",
    "LayoutLMRoIAlignForTokenClassification",
    "LayoutLMRoIAlignForSequenceClassification",
    "LayoutLMRoIAlignForMaskedLM",
    "LayoutLMRoIAlignForRelationExtraction",
    "LayoutLMRoIAlignRelationExtractionOutput",
    "LayoutLMRoIAlignModelOutput",
    "PARAMETER_GROUPS",
]

# The parts of the model that training gives their own learning rates (`parameter_groups`), input side first.
PARAMETER_GROUPS = ("backbone", "visual", "text", "head")


@dataclass
class LayoutLMRoIAlignModelOutput(BaseModelOutputWithPooling):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
        LayoutLM's last hidden states plus each token's visual embedding.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        LayoutLM's pooler applied to the fused first token ([CLS], whose RoI is the whole page).
    visual_embeddings (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
        The visual term that was added (zeros on padding), or `None` when the visual branch is off.
    feature_map (`torch.FloatTensor` of shape `(num_images, channels, height, width)`, *optional*):
        The backbone's feature map, with `output_feature_map=True` (and the visual branch on).
    """

    visual_embeddings: torch.FloatTensor | None = None
    feature_map: torch.FloatTensor | None = None


class LayoutLMRoIAlignPreTrainedModel(PreTrainedModel):
    config: LayoutLMRoIAlignConfig
    config_class = LayoutLMRoIAlignConfig
    base_model_prefix = "layoutlm_roialign"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    # SDPA where the installed transformers' LayoutLM encoder has it (5.17's has none); eager attention otherwise.
    _supports_sdpa = LayoutLMModel._supports_sdpa
    _no_split_modules = ["LayoutLMLayer", "LayoutLMRoIAlignVisualEmbeddings"]

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, writing the checkpoint's whole `auto_map` (`checkpoint_auto_map`) and,
        for the heads that label tokens, the document pipeline and its code (`saving_layoutlm_roialign`), so that
        `pipeline(model=folder, trust_remote_code=True)` works where this package is not installed."""
        carries_pipeline = prepare_config_for_saving(self)
        super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is not None:  # the code every `auto_map` entry names, wherever the head is defined
            copy_checkpoint_code(save_directory, carries_pipeline)

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> PreTrainedModel:
        """`PreTrainedModel.from_pretrained`, after `register_heads`: when an Auto class calls it, that Auto class's
        next checkpoint with the same code loads as the class its `config.architectures` names."""
        register_heads(kwargs.get("config"), cls._auto_class, globals())
        return super().from_pretrained(*args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        # The backbone keeps torchvision's initialization (He init for convolutions): the generic N(0, 0.02) would
        # make a deep random ResNet's activations vanish.
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, FrozenBatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
        elif isinstance(module, LayoutLMRoIAlignVisualEmbeddings):
            # Start as the text model (config.visual_init): the fused representation equals LayoutLM's at init.
            if module.gate is not None:
                init.zeros_(module.gate)
        elif isinstance(module, nn.LayerNorm) and hasattr(module, "init_scale"):
            init.constant_(module.weight, module.init_scale)
            init.zeros_(module.bias)
        elif isinstance(module, ScaledLinear):
            init_scaled_linear(module, self.config.initializer_range)
        elif isinstance(module, LayoutLMLMPredictionHead):
            init.zeros_(module.bias)  # the masked-LM head's output bias, as LayoutLM's own `_init_weights` does
        elif isinstance(module, nn.Linear) and getattr(module, "zero_init", False):
            # The projection is zeroed here, on the Linear itself: for remote code, transformers skips
            # `_init_weights` on a module without direct parameters (the visual module when it has no gate).
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    @classmethod
    def from_pretrained_parts(
        cls,
        text_model_name_or_path: str | os.PathLike | None = None,
        backbone_weights: str | os.PathLike | None = None,
        **config_kwargs,
    ) -> "LayoutLMRoIAlignPreTrainedModel":
        """Build the model from a pretrained text encoder (LayoutLM, BERT or one of this package's checkpoints) and
        pretrained backbone weights, loaded after `post_init`: `layoutlm_roialign.assembly.from_pretrained_parts`
        documents the arguments. Needs the `layoutlm_roialign` package (a checkpoint's code does not carry it).
        """
        try:  # the package's, not a checkpoint's code: transformers' import check skips `try` blocks
            from layoutlm_roialign.assembly import from_pretrained_parts
        except ImportError as err:
            raise ImportError(
                "`from_pretrained_parts` builds a new model with the `layoutlm_roialign` package, which is not "
                "installed (a checkpoint's code only loads trained weights): `pip install layoutlm-roialign`."
            ) from err
        return from_pretrained_parts(cls, text_model_name_or_path, backbone_weights, **config_kwargs)

    def parameter_groups(self) -> dict[str, str]:
        """Each parameter's part of the model (`PARAMETER_GROUPS`), by name (as `named_parameters` gives it):
        `"backbone"`, `"visual"` (the rest of the visual branch: projection, norms, gate), `"text"` (the LayoutLM
        encoder) or `"head"` (everything else: the classifier). Training code gives each part its own learning rate
        from this."""
        backbone, visual, text, head = PARAMETER_GROUPS
        base = getattr(self, self.base_model_prefix, self)
        part = {id(p): text for p in base.layoutlm.parameters()}
        if base.visual_embeddings is not None:
            part.update({id(p): visual for p in base.visual_embeddings.parameters()})
            part.update({id(p): backbone for p in base.visual_embeddings.backbone.parameters()})
        return {name: part.get(id(p), head) for name, p in self.named_parameters()}

    def backbone_stages(self) -> dict[str, list[str]]:
        """The backbone's stages in input-to-output order (`visual_layoutlm_roialign.backbone_stages`), each with its
        parameters' names (as `named_parameters` gives them). Empty without the visual branch."""
        base = getattr(self, self.base_model_prefix, self)
        if base.visual_embeddings is None:
            return {}
        names = {id(p): n for n, p in self.named_parameters()}
        stages = {}
        for stage, block in backbone_stages(base.visual_embeddings.backbone).items():
            params = [names[id(p)] for p in block.parameters() if id(p) in names]
            if params:
                stages[stage] = params
        return stages


class NoPooler(nn.Module):
    """LayoutLM's pooler (which `LayoutLMModel` always builds and calls) in models that read token states only."""

    def forward(self, hidden_states: torch.Tensor) -> None:
        return None


class LayoutLMRoIAlignModel(LayoutLMRoIAlignPreTrainedModel):
    """LayoutLM whose token representations get each token box's RoIAlign-pooled image feature added; with
    `add_pooling_layer=False` (heads that read token states) it has no pooler and its `pooler_output` is `None`."""

    def __init__(self, config: LayoutLMRoIAlignConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.layoutlm = LayoutLMModel(config)
        if not add_pooling_layer:
            # An unused pooler never gets a gradient: parameters for nothing, and DDP's `find_unused_parameters`.
            # Checkpoints written with a pooler load quietly (the heads that hold this model inherit the pattern).
            self.layoutlm.pooler = NoPooler()
            self._keys_to_ignore_on_load_unexpected = [r"\.pooler\."]
        self.visual_embeddings = LayoutLMRoIAlignVisualEmbeddings(config) if config.use_visual_features else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.layoutlm.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.layoutlm.set_input_embeddings(value)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        image_index: torch.LongTensor | None = None,
        output_feature_map: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> LayoutLMRoIAlignModelOutput:
        r"""
        bbox (`torch.LongTensor` of shape `(batch_size, sequence_length, 4)`):
            Each token's box `(x0, y0, x1, y1)` normalized to 0..1000 (LayoutLM's convention); every sub-word token
            carries its word's box. The same boxes, scaled to the image, are the RoIs of the visual branch; the first
            token's RoI is the whole page (`config.visual_cls_is_page`).
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            The page images, ImageNet-normalized (see `LayoutLMRoIAlignImageProcessor`), one per sequence; or one
            per page `(num_images, 3, image_size, image_size)` with `image_index`.
        image_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            The image of `pixel_values` that each sequence reads, so that the windows of one long page share one
            image and one backbone run (e.g. `overflow_to_sample_mapping` with `pixel_values` per page). Default:
            image `b` for sequence `b`.
        output_feature_map (`bool`, *optional*, defaults to `False`):
            Also return the backbone's feature map (`feature_map`), for heads that pool other boxes from it.
        """
        check_inputs(self.config, input_ids, inputs_embeds, bbox, attention_mask, pixel_values, image_index)
        text_outputs = self.layoutlm(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        sequence_output = text_outputs.last_hidden_state  # (B, L, hidden)
        visual = feature_map = None
        if self.visual_embeddings is not None:
            visual = self.visual_embeddings(
                pixel_values.to(self.dtype), bbox, attention_mask, image_index, return_feature_map=output_feature_map
            )
            if output_feature_map:
                visual, feature_map = visual
            sequence_output = sequence_output + visual.to(sequence_output.dtype)
            pooled_output = self.layoutlm.pooler(sequence_output)
        else:
            pooled_output = text_outputs.pooler_output
        return LayoutLMRoIAlignModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=text_outputs.hidden_states,
            attentions=text_outputs.attentions,
            visual_embeddings=visual,
            feature_map=feature_map,
        )


class LayoutLMRoIAlignForTokenClassification(LayoutLMRoIAlignPreTrainedModel):
    """LayoutLM + RoIAlign image embeddings with a token classification head (e.g. FUNSD entity labelling)."""

    def __init__(self, config: LayoutLMRoIAlignConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.layoutlm_roialign = LayoutLMRoIAlignModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenClassifierOutput:
        r"""
        bbox (`torch.LongTensor` of shape `(batch_size, sequence_length, 4)`):
            Each token's box normalized to 0..1000; see [`LayoutLMRoIAlignModel.forward`].
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            The page images, ImageNet-normalized, one per sequence (or one per page with `image_index`).
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Token labels in `[0, num_labels - 1]`; -100 is ignored (padding, special and non-first sub-word tokens).
        image_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            The image of `pixel_values` each sequence reads; see [`LayoutLMRoIAlignModel.forward`].
        """
        if labels is not None:
            check_labels(labels, self.num_labels, input_shape(input_ids, inputs_embeds))
        outputs = self.layoutlm_roialign(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            image_index=image_index,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))  # (B, L, num_labels)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels).float(), labels.view(-1))
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class LayoutLMRoIAlignForSequenceClassification(LayoutLMRoIAlignPreTrainedModel):
    """LayoutLM + RoIAlign image embeddings with a document classification head (e.g. RVL-CDIP).

    The head reads the pooled first token, whose visual feature is the whole page.
    """

    def __init__(self, config: LayoutLMRoIAlignConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.layoutlm_roialign = LayoutLMRoIAlignModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        r"""
        bbox (`torch.LongTensor` of shape `(batch_size, sequence_length, 4)`):
            Each token's box normalized to 0..1000; see [`LayoutLMRoIAlignModel.forward`].
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            The page images, ImageNet-normalized, one per sequence (or one per page with `image_index`).
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Document labels in `[0, num_labels - 1]` (cross-entropy), or floats for regression (`num_labels == 1`)
            or multi-label classification (`config.problem_type`).
        image_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            The image of `pixel_values` each sequence reads; see [`LayoutLMRoIAlignModel.forward`].
        """
        outputs = self.layoutlm_roialign(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            image_index=image_index,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))  # (B, num_labels)
        loss = None if labels is None else self._loss(logits, labels)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of `config.problem_type`, which is decided from the first labels when unset (as
        transformers' sequence classifiers do)."""
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return MSELoss()(logits.squeeze(-1).float(), labels.float().view(-1))
        if self.config.problem_type == "single_label_classification":
            if not torch.compiler.is_compiling() and ((labels < 0) | (labels >= self.num_labels)).any():
                raise ValueError(f"`labels` must be in 0..{self.num_labels - 1}, got {labels.tolist()}.")
            return CrossEntropyLoss()(logits.view(-1, self.num_labels).float(), labels.view(-1))
        return BCEWithLogitsLoss()(logits.float(), labels.float())


class LayoutLMRoIAlignForMaskedLM(LayoutLMRoIAlignPreTrainedModel):
    """LayoutLM + RoIAlign image embeddings with a masked-language-model head: the masked visual-language model
    (MVLM) of the LayoutLM paper (section 2.3). Masked tokens keep their boxes, and the head predicts them from the
    fused states (text, layout and, with the visual branch on, each token's RoI feature).

    The head is LayoutLM's own (`LayoutLMOnlyMLMHead`: dense, activation, LayerNorm, then a decoder tied to the word
    embeddings, as BERT's is). The encoder sits under `layoutlm_roialign`, as in the task heads, so a checkpoint of
    this class loads into [`LayoutLMRoIAlignForTokenClassification`], [`LayoutLMRoIAlignForSequenceClassification`]
    and [`LayoutLMRoIAlignForRelationExtraction`] with only their heads newly initialized.

    A masked token's own RoI shows the word it hides; `layoutlm_roialign.pretraining` therefore blanks the boxes of
    the tokens to predict in the page image before the backbone sees it (as LayoutLMv2 does).
    """

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "layoutlm_roialign.layoutlm.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: LayoutLMRoIAlignConfig):
        super().__init__(config)
        self.layoutlm_roialign = LayoutLMRoIAlignModel(config, add_pooling_layer=False)
        self.cls = LayoutLMOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedLMOutput:
        r"""
        bbox (`torch.LongTensor` of shape `(batch_size, sequence_length, 4)`):
            Each token's box normalized to 0..1000, masked tokens included (they keep their word's box); see
            [`LayoutLMRoIAlignModel.forward`].
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            The page images, ImageNet-normalized, with the boxes of the tokens to predict blanked (see the class
            docstring); one per sequence (or one per page with `image_index`).
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            The original token ids at the positions to predict, in `[0, vocab_size - 1]`; -100 elsewhere. In
            training with `config.mlm_sparse_prediction`, `logits` are those positions' only.
        image_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            The image of `pixel_values` each sequence reads; see [`LayoutLMRoIAlignModel.forward`].
        """
        if labels is not None:
            vocab_size = self.config.vocab_size
            expected = f"token ids in 0..{vocab_size - 1} (the masked tokens' original ids) or -100 (not predicted)"
            shape = input_shape(input_ids, inputs_embeds)
            check_labels(labels, vocab_size, shape, expected, hint="is the tokenizer the model's?")
        outputs = self.layoutlm_roialign(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            image_index=image_index,
            **kwargs,
        )
        sequence_output = outputs.last_hidden_state
        if labels is not None and self.training and self.config.mlm_sparse_prediction:
            predicted = labels != -100
            sequence_output, labels = sequence_output[predicted], labels[predicted]  # (num_predicted, hidden)
        logits = self.cls(sequence_output)  # (B, L, vocab_size), or (num_predicted, vocab_size)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.vocab_size).float(), labels.reshape(-1))
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


@dataclass
class LayoutLMRoIAlignRelationExtractionOutput(TokenClassifierOutput):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*):
        The token cross-entropy (with `labels`) plus `config.link_loss_weight` times the link loss (with
        `link_labels`).
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_labels)`):
        Token classification scores, as [`LayoutLMRoIAlignForTokenClassification`] gives them.
    link_logits (`torch.FloatTensor` of shape `(batch_size, num_entities, num_entities)`, *optional*):
        `link_logits[b, k, v]`: log p(key `k` | value `v`), the log-softmax of the pair scores over the candidate
        keys of value `v` and one "no key" option (so `exp` sums to at most 1 over `k`, and 1 minus that sum is the
        probability that `v` has no key). `exp(link_logits) > config.link_threshold` predicts the pair. Pairs that
        are not candidates (types outside `config.link_types`, padding rows, an entity with itself) hold
        `NOT_A_CANDIDATE` (-10000). `None` without `entity_spans`.
    fused_states (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
        The token states the heads read (LayoutLM's last hidden states plus the visual term), with
        `output_link_states=True`: [`~LayoutLMRoIAlignForRelationExtraction.link_logits_from_states`] links any
        entities from them without another encoder pass.
    feature_map (`torch.FloatTensor` of shape `(num_images, channels, height, width)`, *optional*):
        The backbone's feature map, with `output_link_states=True` (and the visual branch).
    """

    link_logits: torch.FloatTensor | None = None
    fused_states: torch.FloatTensor | None = None
    feature_map: torch.FloatTensor | None = None


class LayoutLMRoIAlignForRelationExtraction(LayoutLMRoIAlignPreTrainedModel):
    """LayoutLM + RoIAlign image embeddings with two heads: the token classifier of
    [`LayoutLMRoIAlignForTokenClassification`] (same parameter names, so its checkpoints load into this class) and a
    key-value linking head (LayoutXLM-style relation extraction).

    One checkpoint does both tasks: label the words, group them into entities, then score (key, value) pairs among
    those entities (or among gold entities, given as `entity_spans`). Each entity is represented by the mean of its
    tokens' fused states, plus a learned embedding of its type (`entity_labels`), plus (`link_entity_box_feature`,
    with the visual branch) the RoIAlign feature of its whole box, pooled from the same backbone feature map as the
    token features; a biaffine layer scores every ordered pair, plus (`link_box_relation`) a small MLP of where the
    value's box sits relative to the key's. Candidates are the pairs whose types are in
    `config.link_types` (default question -> answer), within one window; the other pairs get `NOT_A_CANDIDATE`.
    Each value chooses among its candidate keys and a learned "no key" option (a softmax; the loss is its
    cross-entropy with the gold key, or "no key" for a value without one), and a pair is predicted when
    p(key | value) > `config.link_threshold`. "No answer" is a key that no value chose; a key may get several values,
    a value at most one key (`config.link_one_value_key`).
    """

    def __init__(self, config: LayoutLMRoIAlignConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.layoutlm_roialign = LayoutLMRoIAlignModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        num_types = len(config.resolved_entity_types)
        # Untyped entities (a config without entity types) have no type embedding to train.
        self.entity_type_embeddings = nn.Embedding(num_types, config.hidden_size) if num_types else None
        # Not a buffer: `from_pretrained` builds on the meta device and would leave a non-persistent buffer unset.
        self.candidate_type_pairs = candidate_type_pairs(config)
        self.use_box_feature = config.use_visual_features and config.link_entity_box_feature
        self.link_head = LayoutLMRoIAlignBiaffine(config)
        self.post_init()

    def candidate_mask(self, entity_spans: torch.Tensor, entity_labels: torch.Tensor | None) -> torch.Tensor:
        """`(B, E, E)` bool: which (key, value) pairs are scored: both rows real entities, not the same entity, and
        (with `entity_labels`) their types a pair of `config.link_types`; without labels every pair of real
        entities is a candidate."""
        num_types = len(self.config.resolved_entity_types)
        return candidate_mask(entity_spans, entity_labels, self.candidate_type_pairs, num_types)

    def entity_representations(
        self,
        sequence_output: torch.Tensor,
        bbox: torch.LongTensor | None,
        entity_spans: torch.LongTensor,
        entity_labels: torch.LongTensor | None,
        feature_map: torch.Tensor | None,
        image_index: torch.LongTensor | None,
        image_size: tuple[int, int] | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean of each entity's token states + its type embedding + its box's RoIAlign feature: `(B, E, hidden)`;
        and each entity's box (the union of its tokens' boxes, 0..1000): `(B, E, 4)`."""
        entities = entity_states(sequence_output, entity_spans, entity_labels, self.entity_type_embeddings)
        boxes = entity_boxes(bbox, entity_spans) if bbox is not None else None  # (B, E, 4)
        if self.use_box_feature and feature_map is not None and entity_spans.shape[1] > 0:
            visual = self.layoutlm_roialign.visual_embeddings
            features = entity_box_features(visual, feature_map, boxes, entity_spans, image_index, image_size)
            entities = entities + features.to(entities.dtype)
        return entities, boxes

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        entity_spans: torch.LongTensor | None = None,
        entity_labels: torch.LongTensor | None = None,
        link_labels: torch.LongTensor | None = None,
        output_link_states: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> LayoutLMRoIAlignRelationExtractionOutput:
        r"""
        bbox, pixel_values, labels, image_index: as in [`LayoutLMRoIAlignForTokenClassification.forward`].
        entity_spans (`torch.LongTensor` of shape `(batch_size, num_entities, 2)`, *optional*):
            Each entity's token positions `(first, last + 1)` in its sequence (the processor's `entities=` writes
            them); padding rows are `(0, 0)`. Without them only the token logits are computed.
        entity_labels (`torch.LongTensor` of shape `(batch_size, num_entities)`, *optional*):
            Each entity's type, an index into `config.resolved_entity_types` (-100: unknown or padding): gold types
            at training, predicted ones end to end. They decide the candidate pairs (`config.link_types`); without
            them every pair of entities is a candidate.
        link_labels (`torch.LongTensor` of shape `(batch_size, num_entities, num_entities)`, *optional*):
            1 where entity `v` is the value of key entity `k`, 0 where not, -100 to ignore. The link loss is, per
            value with a candidate key, the cross-entropy of the softmax over its candidate keys and "no key" with
            its gold key (or "no key"); gold pairs that are not candidates are ignored.
        output_link_states (`bool`, *optional*, defaults to `False`):
            Also return `fused_states` and `feature_map`, from which `link_logits_from_states` scores the pairs of
            entities decided after this pass (labels and pairs from one encoder and one backbone pass).
        """
        shape, num_types = input_shape(input_ids, inputs_embeds), len(self.config.resolved_entity_types)
        check_link_inputs(shape, self.num_labels, num_types, labels, entity_spans, entity_labels, link_labels)
        outputs = self.layoutlm_roialign(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            image_index=image_index,
            output_feature_map=(entity_spans is not None or output_link_states) and self.use_box_feature,
            **kwargs,
        )
        sequence_output = outputs.last_hidden_state
        logits = self.classifier(self.dropout(sequence_output))  # (B, L, num_labels)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels).float(), labels.view(-1))
        link_logits = None
        if entity_spans is not None:
            image_size = tuple(pixel_values.shape[-2:]) if pixel_values is not None else None
            link_logits, log_probs, candidates = self._link(
                sequence_output, bbox, entity_spans, entity_labels, outputs.feature_map, image_index, image_size
            )
            if link_labels is not None:
                weighted = self.config.link_loss_weight * link_loss(log_probs, candidates, link_labels)
                loss = weighted if loss is None else loss + weighted
        return LayoutLMRoIAlignRelationExtractionOutput(
            loss=loss,
            logits=logits,
            link_logits=link_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            fused_states=sequence_output if output_link_states else None,
            feature_map=outputs.feature_map if output_link_states else None,
        )

    def _link(
        self,
        sequence_output: torch.Tensor,
        bbox: torch.LongTensor | None,
        entity_spans: torch.LongTensor,
        entity_labels: torch.LongTensor | None,
        feature_map: torch.Tensor | None,
        image_index: torch.LongTensor | None,
        image_size: tuple[int, int] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(link_logits, log_probs, candidates)`: the link head on token states; `log_probs` `(B, E + 1, E)` is
        each value's log-softmax over its candidate keys and "no key" (the last row)."""
        entity_spans = entity_spans.long()
        entity_labels = entity_labels.long() if entity_labels is not None else None
        entities, boxes = self.entity_representations(
            sequence_output, bbox, entity_spans, entity_labels, feature_map, image_index, image_size
        )
        scores, no_key = self.link_head(self.dropout(entities), boxes)  # (B, E, E), (B, E)
        candidates = self.candidate_mask(entity_spans, entity_labels)
        link_logits, log_probs = link_log_probs(scores.float(), no_key.float(), candidates)
        return link_logits, log_probs, candidates

    def link_logits_from_states(
        self,
        fused_states: torch.Tensor,
        bbox: torch.LongTensor,
        entity_spans: torch.LongTensor,
        entity_labels: torch.LongTensor | None = None,
        feature_map: torch.Tensor | None = None,
        image_index: torch.LongTensor | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """The `link_logits` of `forward` from what an earlier `forward(..., output_link_states=True)` returned:
        its `fused_states` and `feature_map`, the same `bbox` and `image_index`, and the entities as `forward`
        takes them (decided after that pass, e.g. from its token labels). `image_size` is the `pixel_values`
        side `(height, width)` (default `config.image_size`)."""
        shape = tuple(fused_states.shape[:2])
        check_entities(entity_spans, entity_labels, None, shape, len(self.config.resolved_entity_types))
        if feature_map is not None and image_size is None:
            image_size = (self.config.image_size, self.config.image_size)
        return self._link(fused_states, bbox, entity_spans, entity_labels, feature_map, image_index, image_size)[0]
