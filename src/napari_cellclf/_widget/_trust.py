"""Glue between the trust engine (evaluation, baseline, provenance, summaries) and the panels:
what a training stores beside its model, and what a model's file says about trusting it.
No decisions here: every number and sentence comes from the engine."""

from __future__ import annotations


def training_extras(result, dataset) -> dict:
    """Worker thread, after training: the kept model on its validation split (as `cellclf train`
    stores it, ModelMeta.extra["evaluation"]) and the classical features on the same split
    (ModelMeta.extra["baseline"]). Empty when no epoch ended."""
    from ..baseline import compare_on_training_split
    from ..evaluation import validation_metrics

    if not any(run.get("epochs_completed", 0) > 0 for run in result.history.runs):
        return {}
    evaluation = validation_metrics(result, dataset)
    extras: dict = {"evaluation": None if evaluation is None else evaluation.metrics.to_dict()}
    if evaluation is not None:
        extras["baseline"] = compare_on_training_split(dataset, result.config)
    return extras


def model_verdict(meta) -> str | None:
    """The stored verdict, or the evaluation's warnings (a model better than chance that still
    misleads), as one text; None when the model file says nothing against it."""
    from ..evaluation import stored_verdict

    verdict = stored_verdict(meta)
    if verdict:
        return verdict
    evaluation = (getattr(meta, "extra", None) or {}).get("evaluation") or {}
    warnings = evaluation.get("warnings") if isinstance(evaluation, dict) else None
    return " ".join(str(w) for w in warnings) if warnings else None


def baseline_sentence(meta) -> str:
    """'CNN vs classical features on the same validation split' from what the model stores."""
    from ..baseline import comparison_sentence

    extra = getattr(meta, "extra", None) or {}
    comparison, evaluation = extra.get("baseline"), extra.get("evaluation") or {}
    if not comparison:
        return ""
    return comparison_sentence(evaluation.get("accuracy"), evaluation.get("balanced_accuracy"), comparison)
