"""Real-size rehearsal: the notebooks' real code path (no stand-in), offline, on CPU, against full-size weights.

    python -m rehearsals.real_size                     # notebooks 01 03 04 05, all four models
    python -m rehearsals.real_size 01 --models deci-v1 --set 'OTHER_MODELS=[]'   # the reduced form CI runs

1. Full-size random-weight checkpoints are written once into a Hugging Face hub cache under the real repo ids,
   with the real file layout (fp32 files and ``fp16`` variants, safety checker and feature extractor folders,
   DeciDiffusion's ``flexible_unet/`` and ``unet/``): :func:`nbhelpers.models.random_weights.populate_random_hf_cache`.
   Default place: ``$NBHELPERS_CACHE/real-size-hub`` (about 12 GB for all four models; ``--cache`` moves it).
2. Each notebook runs through papermill in an empty folder with ``HF_HUB_OFFLINE=1``, ``NBHELPERS_STAND_IN=none`` and
   ``HF_HUB_CACHE`` pointing there, with few steps and small images (``PARAMETERS``; only the parameters a
   notebook declares are passed, so the harness runs whatever the notebooks currently are).
3. It reports, per notebook: wall time, peak memory (resident memory of the kernel and every process it started,
   summed, sampled every 0.2 s), bytes written into the folder (checkpoints, outputs) and every weight file opened
   (by any process, see :mod:`rehearsals.watch`). It fails when a notebook fails, or when a notebook opens two
   different weight files of the same component of one repo (for example ``unet/`` in fp32 and its fp16 variant):
   online, that is the same model's weights downloaded twice.

The pictures are noise (random weights); nothing here is shown to a learner.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from rehearsals.common import ROOT, clean_environment, dumps, folder_bytes, human, notebook_path, write_report
from rehearsals.watch import write_sitecustomize

#: Small and fast settings per parameter name, for whichever notebook declares it.
PARAMETERS: dict[str, object] = {
    "STEPS": 2,
    "SIZE": 64,
    "RESOLUTION": 64,
    "NUM_IMAGES": 1,
    "GUIDANCE_SCALES": [1.0, 7.5],
    "SCHEDULERS_TO_TRY": ["euler-a"],
    "SEEDS": [0],
    "NEW_PROMPTS": ["a photo of sks dog in a bucket"],
    "NUM_CLASS_IMAGES": 2,
    "WARMUP": 0,
    "REPEATS": 1,
    "STEP_RANGES": 2,
    "STAND_IN": None,
}
DEFAULT_NOTEBOOKS = ["01", "03", "04", "05"]


def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in the notebook's papermill ``parameters`` cell."""
    import nbformat

    cell = next(c for c in nbformat.read(notebook, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    return {line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line and line[:1].isupper()}


class MemorySampler(threading.Thread):
    """Peak summed resident memory of a process and all its descendants, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self._halt = pid, interval, 0, threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self._halt.is_set():
            try:
                processes = [root, *root.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in processes if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def weight_opens(log: Path, cache: Path) -> tuple[dict[str, list[str]], list[str]]:
    """Files opened, grouped by ``repo/component`` (relative to the hub cache), and the components whose
    different weight files were opened (each one a second download online)."""
    by_component: dict[str, set[str]] = defaultdict(set)
    opened: dict[str, list[str]] = defaultdict(list)
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            path = Path(json.loads(line)["path"])
            try:
                parts = path.relative_to(cache).parts  # models--org--name / snapshots / commit / component / file
            except ValueError:
                opened["(outside the hub cache)"].append(str(path))
                continue
            repo = parts[0].removeprefix("models--").replace("--", "/")
            key = f"{repo}/{'/'.join(parts[3:-1])}"
            by_component[key].add(parts[-1])
            opened[key].append(parts[-1])
    twice = [f"{key}: {sorted(files)}" for key, files in by_component.items() if len(files) > 1]
    return {k: sorted(set(v)) for k, v in sorted(opened.items())}, twice


def run_notebook(name: str, cache: Path, workdir: Path, timeout: int) -> dict:
    """Execute one notebook with papermill under the watch; return its record."""
    source = notebook_path(name)
    folder = workdir / source.stem
    folder.mkdir(parents=True)
    site = write_sitecustomize(workdir / "site").parent
    log = folder.parent / f"{source.stem}-opens.jsonl"
    declared = declared_parameters(source)
    parameters = {k: v for k, v in PARAMETERS.items() if k in declared}
    if "INSTANCE_DIR" in declared and "INSTANCE_DIR" not in parameters:
        # DreamBooth's example photos are a hub dataset that snapshot_download(local_dir=...) will not take from an
        # offline cache: the learner's own-photos path is rehearsed instead, with the project's synthetic subject.
        from nbhelpers.dreambooth.data import make_synthetic_subject

        parameters["INSTANCE_DIR"] = str(make_synthetic_subject(workdir / "subject-photos"))
    env = clean_environment(
        PYTHONPATH=f"{site}{os.pathsep}{ROOT}",
        REHEARSAL_OPEN_LOG=str(log),
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(cache),
        HF_HOME=str(workdir / "hf-home"),
        NBHELPERS_STAND_IN="none",
        NBHELPERS_CACHE=str(workdir / "nbhelpers-cache"),
        MPLBACKEND="Agg",
        TOKENIZERS_PARALLELISM="false",
    )
    command = [
        sys.executable,
        "-m",
        "papermill",
        str(source),
        str(folder / source.name),
        "--cwd",
        str(folder),
        "--execution-timeout",
        str(timeout),
        "--no-progress-bar",
        "-k",
        "python3",
    ]
    for key, value in parameters.items():
        command += ["-y", json.dumps({key: value})]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = MemorySampler(process.pid)
    sampler.start()
    output, _ = process.communicate()
    peak = sampler.stop()
    seconds = time.perf_counter() - start
    opened, twice = weight_opens(log, cache)
    written = folder_bytes(folder) - (folder / source.name).stat().st_size if (folder / source.name).exists() else 0
    biggest = sorted(
        ((p.stat().st_size, str(p.relative_to(folder))) for p in folder.rglob("*") if p.is_file()), reverse=True
    )[:5]
    record = {
        "notebook": source.stem,
        "ok": process.returncode == 0 and not twice,
        "seconds": round(seconds, 1),
        "peak_memory_bytes": peak,
        "peak_memory": human(peak),
        "bytes_written": written,
        "written": human(written),
        "largest_files": [f"{human(size)} {path}" for size, path in biggest],
        "parameters": parameters,
        "weight_files_opened": opened,
        "weights_fetched_twice": twice,
        "weight_file_opens": len(log.read_text(encoding="utf-8").splitlines()) if log.is_file() else 0,
    }
    if process.returncode != 0:
        record["error"] = output[-4000:]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsals.real_size", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "notebooks", nargs="*", default=DEFAULT_NOTEBOOKS, help="numbers or names (default: 01 03 04 05)"
    )
    parser.add_argument("--models", nargs="*", help="catalog models to write into the cache (default: all four)")
    parser.add_argument("--cache", type=Path, help="hub cache folder (default: $NBHELPERS_CACHE/real-size-hub)")
    parser.add_argument("--workdir", type=Path, help="keep the executed notebooks and outputs here")
    parser.add_argument("--report", type=Path, default=ROOT / "outputs" / "rehearsals" / "real_size.json")
    parser.add_argument("--cell-timeout", type=int, default=1800, help="seconds any one cell may take")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="override a notebook parameter, e.g. --set 'OTHER_MODELS=[]'",
    )
    args = parser.parse_args(argv)
    for item in args.set:
        key, _, value = item.partition("=")
        PARAMETERS[key] = json.loads(value)

    from nbhelpers.models.random_weights import populate_random_hf_cache
    from nbhelpers.models.tiny import cache_root

    cache = args.cache or cache_root() / "real-size-hub"
    start = time.perf_counter()
    before = folder_bytes(cache) if cache.exists() else 0
    populate_random_hf_cache(args.models, cache)
    checkpoints = {
        "seconds": round(time.perf_counter() - start, 1),
        "folder": str(cache),
        "bytes_written": folder_bytes(cache) - before,
        "bytes_total": folder_bytes(cache),
    }
    print(
        f"Random-weight hub cache: {human(checkpoints['bytes_total'])} in {cache} "
        f"({human(checkpoints['bytes_written'])} written now, {checkpoints['seconds']} s)",
        flush=True,
    )
    records = []
    with tempfile.TemporaryDirectory(prefix="real-size-rehearsal-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in args.notebooks:
            record = run_notebook(name, cache, workdir, args.cell_timeout)
            records.append(record)
            print(
                f"{record['notebook']}: {'ok' if record['ok'] else 'FAILED'} in {record['seconds']} s, peak memory "
                f"{record['peak_memory']}, wrote {record['written']}, opened "
                f"{sum(len(v) for v in record['weight_files_opened'].values())} weight files",
                flush=True,
            )
            for problem in record["weights_fetched_twice"]:
                print("  fetched twice:", problem)
            if "error" in record:
                print(record["error"][-2000:])
    report = {"checkpoints": checkpoints, "notebooks": records}
    print(dumps({r["notebook"]: r["weight_files_opened"] for r in records}))
    print(f"Saved {write_report(report, args.report)}")
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
