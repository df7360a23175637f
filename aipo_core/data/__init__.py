"""Data shipped with AIPO Lab and the loaders for user data.

- prompt pools (`load_prompt_pool`): instructions self-instruct imitates and the pipeline tops up
  from; bundled: "self_instruct_seeds" (the 175 self-instruct seed tasks);
- benchmarks (`load_benchmark`): AlpacaEval 2.0, MT-Bench and Arena-Hard prompts with their
  baseline answers, plus MT-Bench's judge prompts (`load_judge_prompts`);
- preference datasets (`load_preference_pairs`): TRL prompt/chosen/rejected JSONL as pairs.

A refused user file raises `DataFileError` (a ValueError) naming the file, the line and why.

Sources and licences of the bundled files: files/SOURCES.md.
"""

from aipo_core.data.benchmarks import BENCHMARKS, BenchmarkItem, load_benchmark, load_judge_prompts
from aipo_core.data.jsonl import DataFileError, MissingDataFile
from aipo_core.data.pools import BUNDLED_POOLS, SELF_INSTRUCT_SEEDS, load_prompt_pool
from aipo_core.data.preferences import load_preference_pairs

__all__ = [
    "BENCHMARKS",
    "BUNDLED_POOLS",
    "SELF_INSTRUCT_SEEDS",
    "BenchmarkItem",
    "DataFileError",
    "MissingDataFile",
    "load_benchmark",
    "load_judge_prompts",
    "load_preference_pairs",
    "load_prompt_pool",
]
