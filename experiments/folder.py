"""A run's folder, resolved once: where it is on this machine, and how its files name it.

Hydra makes the folder from `out_dir` (configs/config.yaml's `hydra.run.dir`); the engine
takes it back once, here, and from then on every run file names it relative to out_dir, so a
results folder can be copied or moved (docs/DESIGN.md, "Run outputs").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig


@dataclass(frozen=True)
class RunFolder:
    """Where a run lives, resolved once: `path` (as Hydra made it) to read and write, and `name`,
    the folder as the run files keep it: relative to out_dir (runs/<dataset>/.../seed<k>), so a
    results folder can be copied or moved. `roots` are this machine's out_dir and data_root,
    which no stored line carries."""

    path: Path
    name: str
    roots: tuple[tuple[str, str], ...]

    @classmethod
    def locate(cls, run_dir: Path, cfg: DictConfig) -> RunFolder:
        out_dir = Path(str(cfg.out_dir)).resolve()
        try:
            name = str(Path(run_dir).resolve().relative_to(out_dir))
        except ValueError:                      # a folder outside out_dir keeps its own path
            name = str(run_dir)
        roots = [(str(out_dir), "<out_dir>")]
        if cfg.get("data_root"):
            roots.append((str(Path(str(cfg.data_root)).expanduser().resolve()), "<data_root>"))
        return cls(Path(run_dir), name, tuple(roots))

    def portable(self, line: str) -> str:
        """`line` as a run file keeps it: this machine's out_dir and data_root named, not given."""
        for root, tag in sorted(self.roots, key=lambda pair: -len(pair[0])):
            line = line.replace(root, tag)
        return line
