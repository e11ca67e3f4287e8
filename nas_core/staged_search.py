"""A staged search (P-DARTS: Chen et al., ICCV 2019; DrNAS: Chen et al., ICLR 2021): the stages of
``search.stages`` one after another, each a search run directory of its own (``RUN_DIR/stage_N``)
whose config is the run's config under the stage's layer and what the previous stage decided
(``nas_stage_config``). A resume continues the stage that was running; finished stages are read
back, never run again."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas_core import distributed
from nas_core.config import Config, Layer, resolve, to_dict, to_yaml
from nas_core.files import write_text_atomic
from nas_core.genotype import Genotype
from nas_core.records import read_results
from nas_core.run import CHECKPOINT_FILE, CONFIG_FILE, GENOTYPE_FILE, RESULTS_FILE, mark_run_dir
from nas_core.search import prepare_search

if TYPE_CHECKING:
    from nas_core.toolkit import Toolkit


def stage_dir(run_dir: Path, stage: int) -> Path:
    return run_dir / f"stage_{stage}"


def stage_config(toolkit: Toolkit, config: Config, stage: int, decided: Mapping[str, Any]) -> Config:
    """Stage ``stage``'s config (from 1): the run's config, its layer in ``search.stages``, then
    what the previous stage ``decided``."""
    base = to_dict(config)
    base["search"] = {**base["search"], "stages": []}
    layers = [Layer(base, "the run's config"), Layer(config.search.stages[stage - 1], f"search.stages[{stage}]"),
              Layer(decided, f"what stage {stage - 1} decided (nas_stage_config)")]
    return resolve(toolkit.registries, layers, preset=None)


def run_staged_search(toolkit: Toolkit, config: Config, run_dir: Path, *, resume: bool,
                      progress: bool | None) -> Genotype | None:
    """Run (or continue) every stage; the last stage's genotype and results become the run's."""
    count = len(config.search.stages)
    for stage in range(1, count + 1):  # every stage's own layer is valid before anything is written
        stage_config(toolkit, config, stage, {})
    previous = None
    genotype = None
    for stage in range(1, count + 1):
        path = stage_dir(run_dir, stage)
        resumed = (path / CHECKPOINT_FILE).is_file()
        if resumed:  # its checkpoint holds what it inherited
            stage_cfg = toolkit.resume_config(path, config.device)
        else:
            decided: dict[str, Any] = {}
            if previous is not None:
                toolkit.plugin_manager.hook.nas_stage_config(stage=stage - 1, finished=previous, layer=decided)
            stage_cfg = stage_config(toolkit, config, stage, decided)
        prepared = prepare_search(toolkit.registries, stage_cfg)  # components built: their options are valid
        if stage == 1 and not resume and distributed.is_main():
            mark_run_dir(run_dir, "search")
            write_text_atomic(run_dir / CONFIG_FILE, to_yaml(config))
        genotype = toolkit.execute(prepared, path, phase="search", resume=resumed, progress=progress,
                                   spec=prepared.spec, stage=stage, stages=count,
                                   previous_stage=None if resumed else previous)
        if stage < count:  # read back on the CPU: what the next stage inherits is copied onto its device
            previous = toolkit.load_search(path, device="cpu")
    if distributed.is_main() and genotype is not None:
        stages = [read_results(stage_dir(run_dir, stage)) or {} for stage in range(1, count + 1)]
        cost = sum(float(r.get("wall_time_s", 0.0)) for r in stages)  # the search's cost is every stage's
        write_text_atomic(run_dir / GENOTYPE_FILE, genotype.to_json())
        write_text_atomic(run_dir / RESULTS_FILE, json.dumps({**stages[-1], "wall_time_s": cost, "stages": count},
                                                             indent=2) + "\n")
    return genotype
