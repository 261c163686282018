"""Which model variant of params.yaml (`variants`) a benchmark measures: the one that reads what it measures.

Hand-landmark figures (predict, spell, the live page, personalisation) belong to the variant that reads hand
landmarks alone (`reader` by default); backbone figures (exp30, bf16, numeric_spread --backbone) to the one that
reads the backbone alone (`resnet50` by default). Variants are picked by what they read, not by name, so that a
renamed or added variant is measured all the same.
"""
from asl_pipeline.config import ProjectParams

LANDMARKS = ("hand_landmarks",)
BACKBONE = ("backbone",)


def _reads(project: ProjectParams, name: str) -> tuple:
    return project.variant(name).model.featurizers


def _readers(project: ProjectParams, featurizers: tuple) -> list:
    return [name for name in project.variants if _reads(project, name) == tuple(featurizers)]


def variant_reading(project: ProjectParams, featurizers, what: str) -> str:
    """The variant whose model.featurizers are exactly `featurizers`: the served one (serve.model) if it reads
    them, else the first in params.yaml's order that does. `what` names the figures, for the error: none reads
    them -> SystemExit naming every variant and what it reads."""
    featurizers = tuple(featurizers)
    if _reads(project, project.served) == featurizers:
        return project.served
    readers = _readers(project, featurizers)
    if readers:
        return readers[0]
    reads = ", ".join(f"{name}: {list(_reads(project, name))}" for name in project.variants)
    raise SystemExit(f"{what} need a variant in params.yaml whose model.featurizers are {list(featurizers)}; "
                     f"none is ({reads}): add one under 'variants'")


def served_reader(project: ProjectParams, name: str | None = None, what: str = "personalisation") -> str:
    """The variant that reads hand landmarks alone and is measured for `what`: `name` if given, else the served
    one (serve.model); SystemExit with what to do when that variant reads anything else."""
    chosen = project.served if name is None else name
    if name is not None and name not in project.variants:
        raise SystemExit(f"{what}: no variant {name!r} in params.yaml (it has {list(project.variants)})")
    if _reads(project, chosen) == LANDMARKS:
        return chosen
    source = f"serve.model is {chosen!r}" if name is None else f"variant {chosen!r}"
    readers = _readers(project, LANDMARKS)
    hint = (f"pass --variant {readers[0]} (it reads hand landmarks alone)" if readers else
            f"add a variant with model.featurizers: {list(LANDMARKS)} under 'variants'")
    raise SystemExit(f"{what} measures a variant that reads hand landmarks alone; {source}, which reads "
                     f"{list(_reads(project, chosen))}: {hint}")
