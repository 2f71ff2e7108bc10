"""One command from a YAML study config to a servable repository: `python -m export pipeline CONFIG`.

Public API: `load_config` (validate the YAML), `run_pipeline` (run every step not already done),
`PipelineConfigError`; see run.py for the output layout and steps.py for how skipping is decided.
"""

from export.pipeline.config import PipelineConfig, PipelineConfigError, load_config
from export.pipeline.run import run_pipeline
from export.pipeline.steps import CODE_VERSION, StepLog

__all__ = ["CODE_VERSION", "PipelineConfig", "PipelineConfigError", "StepLog", "load_config", "run_pipeline"]
