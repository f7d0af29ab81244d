"""Few-shot segmentation over the suite's proposals: the episode protocol and its methods
(docs/fewshot.md). ``base`` holds the contract every method and proposal source meets."""
