"""Glue between the trust engine (evaluation, baseline, provenance, summaries) and the panels:
what a training stores beside its model, and what a model's file says about trusting it.
No decisions here: every number and sentence comes from the engine."""

from __future__ import annotations


def training_extras(result, dataset) -> dict:
    """Worker thread, after training: the kept model on its validation split (as `cellclf train`
    stores it, ModelMeta.extra["evaluation"]) with the attribution checks on those tiles
    (["evaluation"]["attribution"], as `cellclf report` computes them), the gallery of its most
    confidently right and wrong validation tiles with their field and position
    (ModelMeta.extra["gallery"], gallery.gallery_tiles) and the classical features on the same
    split (ModelMeta.extra["baseline"]). Empty when no epoch ended."""
    from ..attribution import attribution_checks
    from ..baseline import compare_on_training_split
    from ..evaluation import validation_metrics
    from ..gallery import gallery_tiles

    if not any(run.get("epochs_completed", 0) > 0 for run in result.history.runs):
        return {}
    evaluation = validation_metrics(result, dataset)
    if evaluation is None:
        return {"evaluation": None}
    metrics = evaluation.metrics.to_dict()
    metrics["attribution"] = attribution_checks(evaluation.classifier, evaluation.dataset.tiles).to_dict()
    gallery = gallery_tiles(
        evaluation.dataset, evaluation.truth, evaluation.probabilities, evaluation.metrics.class_names
    )
    return {
        "evaluation": metrics,
        "gallery": [tile.to_dict() for tile in gallery],
        "baseline": compare_on_training_split(dataset, result.config),
    }


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
