"""The training objective of one step: each task's loss, weighted, with embedding preservation and
distillation's terms, in one module so that DDP keeps the model and the loss weights in sync."""

from __future__ import annotations

import torch
from torch import nn

from mtl.config import Distillation, EmbeddingPreservation
from mtl.model.distillation_losses import embedding_distance, layer_distance, soft_target_loss
from mtl.model.similarity import preservation_loss
from mtl.train.preservation import REFERENCE
from mtl.train.teacher import TEACHER_EMBEDDING, TEACHER_LAYERS, TEACHER_LOGITS
from mtl.train.weighting import LossWeighting


class TrainingModule(nn.Module):
    """The model and the loss weighting in one module, so that DDP keeps both in sync;
    ``preservation`` says how batches that carry a reference embedding keep to it."""

    def __init__(self, model: nn.Module, weighting: LossWeighting, preservation: EmbeddingPreservation | None = None,
                 distillation: Distillation | None = None):
        super().__init__()
        self.model = model
        self.weighting = weighting
        self.preservation = preservation
        self.distillation = distillation

    def forward(self, batches: dict[str, dict[str, torch.Tensor]], head_only: frozenset[str] = frozenset()
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One batch per task -> (each task's loss, each task's loss to back-propagate: weighted, with
        its batch's preservation loss, and the preservation loss of each batch that had a reference).
        The tasks in ``head_only`` train their heads only: no gradient and no preservation. A batch
        with the teacher's outputs (distillation) has a task loss of its labels and the soft
        targets, and adds the distances to the teacher's embedding and layers to its objective."""
        losses, objectives, preservations = {}, {}, {}
        for task, batch in batches.items():
            labels = batch.pop("labels", None)
            reference = batch.pop(REFERENCE, None)
            teacher = {name: batch.pop(name) for name in (TEACHER_LOGITS, TEACHER_EMBEDDING, TEACHER_LAYERS)
                       if name in batch}
            if self.model.task_specs[task].kind == "similarity":
                losses[task] = self.model.similarity_loss(batch, scores=labels)
                objectives[task] = self.weighting(task, losses[task])
                continue
            output = self.model(**batch, tasks=[task], labels={task: labels}, train_encoder=task not in head_only,
                                layer_states=TEACHER_LAYERS in teacher)
            if teacher:
                losses[task], objectives[task] = self._distilled(task, output, labels, batch["attention_mask"],
                                                                 teacher)
            else:
                losses[task] = output.losses[task]
                objectives[task] = self.weighting(task, losses[task])
            if reference is not None and task not in head_only:
                preservations[task] = preservation_loss(output.embeddings, reference, self.preservation.loss)
                objectives[task] = objectives[task] + self.preservation.weight * preservations[task]
        return losses, objectives, preservations

    def _distilled(self, task: str, output, labels: torch.Tensor, attention_mask: torch.Tensor,
                   teacher: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        settings = self.distillation
        soft = soft_target_loss(output.logits[task], teacher[TEACHER_LOGITS], settings.temperature, labels)
        loss = settings.label_weight * output.losses[task] + settings.soft_weight * soft
        objective = self.weighting(task, loss)
        objective = objective + settings.embedding_weight * embedding_distance(output.embeddings,
                                                                               teacher[TEACHER_EMBEDDING])
        if TEACHER_LAYERS in teacher:
            objective = objective + settings.layer_weight * layer_distance(output.layer_states,
                                                                           teacher[TEACHER_LAYERS], attention_mask)
        return loss, objective
