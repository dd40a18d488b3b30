"""Knowledge distillation losses: a student's heads and sentence embedding made to match a teacher's.

- Soft targets (Hinton, Vinyals and Dean, 2015): the KL divergence from the teacher's to the
  student's label distribution, both softened at temperature T, times T^2 so that its gradients
  keep their scale as T changes. Per sentence for classification, per word (the positions the task's
  own loss uses) for tagging.
- The embedding: the squared distance between the student's and the teacher's sentence embeddings
  (sentence-transformers' ``MSELoss`` summed over dimensions; for normalized embeddings it is
  ``2 * (1 - cos)``), as in Reimers and Gurevych (2020).
- The layers (TinyBERT, Jiao et al., 2020): each student layer's output made to match one teacher
  layer's, by their mean squared difference over the real tokens. Student layer j of S learns
  teacher layer (j + 1) * T / S of T (TinyBERT's uniform mapping, counting from 1), so the top
  learns the top; for a student of every other teacher layer, those are the layers it kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORED = -100   # the label of positions no loss looks at (mtl.model.heads)


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                     labels: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher || student) at ``temperature``, times its square; logits ``(batch, labels)``, or
    ``(batch, seq, labels)`` with ``labels`` marking the positions that count (not ``IGNORED``)."""
    if student.dim() == 3:
        positions = labels != IGNORED
        student, teacher = student[positions], teacher[positions]
    if not len(student):
        return student.sum() * 0.0
    log_student = F.log_softmax(student.float() / temperature, dim=-1)
    teacher_probabilities = F.softmax(teacher.float() / temperature, dim=-1)
    return F.kl_div(log_student, teacher_probabilities, reduction="batchmean") * temperature ** 2


def embedding_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The mean over sentences of the squared distance between the two embeddings."""
    return ((student.float() - teacher.float()) ** 2).sum(dim=-1).mean()


def teacher_layers(student_depth: int, teacher_depth: int) -> list[int]:
    """The teacher layer (0-based) that each student layer learns, lowest first."""
    if not 0 < student_depth <= teacher_depth:
        raise ValueError(f"a student of {student_depth} layers cannot learn layer by layer from a teacher of "
                         f"{teacher_depth}: it needs at least one layer and at most the teacher's")
    return [(layer + 1) * teacher_depth // student_depth - 1 for layer in range(student_depth)]


def layer_distance(student: tuple[torch.Tensor, ...] | torch.Tensor, teacher: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean over layers of the mean squared difference between the student's and the teacher's
    outputs ``(layers, batch, seq, hidden)`` at the real tokens of ``attention_mask``."""
    difference = (torch.stack(tuple(student)).float() - teacher.float()) ** 2
    real = attention_mask.bool()
    return difference[:, real].mean()
