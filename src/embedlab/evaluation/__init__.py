"""Evaluating a model: which items are queries and gallery items during training
(:class:`EvalRoles`), and the protocols that ``embedlab evaluate`` runs on a checkpoint
(:mod:`.checkpoint`: retrieval on the run's test split; :mod:`.verification`: LFW / YouTube
Faces pairs; :mod:`.person_search`: CUHK-SYSU galleries). The metrics they compute live in
:mod:`embedlab.metrics`."""

from embedlab.evaluation.roles import EvalRoles

__all__ = ["EvalRoles"]
