"""The re-training stage (SimFormer*): mixed pseudo labels, their optional refinement, the pipeline."""

# Pseudo-label refinements, for `pseudo-label --refine`, `pipeline --refine` and the sweep key
# `refine` (docs/gfsam.md). Kept here, free of heavy imports, so that the CLI and sweep parsing
# read it without loading the models.
REFINE_METHODS = ("none", "gfsam")
