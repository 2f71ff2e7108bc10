"""Intermediate-task data: readers for the shared English treebanks and pair sets, the retrieval dev set,
and the task metrics. Pure Python + numpy, so training code and tests import it without torch.
"""

from export.tasks.files import DataFormatError, MissingDataError
from export.tasks.registry import TASKS, load_task
from export.tasks.types import LabelVocab, ParsedSentence, SentencePair, TaggedSentence, TaskData

__all__ = [
    "TASKS",
    "DataFormatError",
    "LabelVocab",
    "MissingDataError",
    "ParsedSentence",
    "SentencePair",
    "TaggedSentence",
    "TaskData",
    "load_task",
]
