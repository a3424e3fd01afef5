"""Build the Backprop Lab site (``make book-build``).

Steps:

1. Fetch the pinned JavaScript the pages need (MathJax 3, require.js, the ipywidgets HTML
   manager) from the npm registry into ``book/_vendor/static/vendor/`` (ignored by git) if it
   is missing or at other versions. ``_config.yml`` serves it from ``_static/vendor/``, so
   no page requests anything from another host.
2. Run ``jupyter-book build . -W`` (warnings are errors, no ``--keep-going``). Chapters are
   executed through jupyter-cache (``_build/.jupyter_cache``): a notebook is re-run only when
   its code cells change. The op reference page is generated during the build from
   ``backprop_lab.ops.REGISTRY`` by the ``{op-reference}`` directive (book/_ext).
   Before that, chapters whose code changed are executed in parallel, one kernel per core,
   into the same cache (jupyter-book itself would run them one after another); the build
   then only reads the cached outputs.
3. If a chapter fails to execute, print the notebook, the cell index and the error.

Environment:

* ``BOOK_EDITION=student`` builds the student edition, without solutions, into
  ``_build/student/_build/html`` (the full instructor edition goes to ``_build/html``).
  Both editions share the execution cache.
* ``BOOK_JOBS=1`` turns off the parallel execution of changed chapters (for example when a
  chapter times something and must not share the cores with another kernel).

The build always sets ``BACKPROP_LAB_STATIC=1`` for the kernels that execute the chapters:
:class:`backprop_lab.explorer.Explorer` then renders every combination of its controls into
the page (no kernel needed on the site) instead of a live ipywidgets panel. The kernels also
get ``IPYTHONDIR=_build/ipython``, whose startup file makes each inline figure record its
smallest text size in the PNG (for the browser tests' text-size check). Because cached
outputs depend on the library as well as on the cells, the execution cache is emptied
whenever a file of ``backprop_lab/`` changes (jupyter-cache itself only looks at the cells).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "book" / "_vendor"
STATIC_VENDOR = VENDOR / "static" / "vendor"
VERSIONS_FILE = STATIC_VENDOR / "VERSIONS.json"
CACHE = ROOT / "_build" / ".jupyter_cache"
LIBRARY_STAMP = ROOT / "_build" / ".jupyter_cache-library.sha256"
# IPython folder of the kernels that execute the chapters; its startup file makes inline
# figures record their smallest text size (PNG metadata read by tests/test_browser.py).
KERNEL_IPYTHONDIR = ROOT / "_build" / "ipython"
KERNEL_STARTUP = """\
# Written by scripts/build_book.py for the kernels that execute the book's chapters.
try:
    from backprop_lab.explorer import record_figure_text_size

    record_figure_text_size()
except Exception as exc:  # the figures still work; the browser test reports the gap
    import sys

    print(f"backprop book: figure text sizes not recorded: {exc}", file=sys.stderr)
"""
# Read by backprop_lab.explorer: explorers precompute their views for the static site.
STATIC_ENV = "BACKPROP_LAB_STATIC"
CHAPTER_GLOB = "[0-9]*.ipynb"

# npm package -> (pinned version, folder under _static/vendor/, files to copy from the tarball).
# Files are paths inside the package (the tarball's "package/" prefix removed); a path ending
# in "/" copies that whole folder.
VENDORED = {
    "mathjax": ("3.2.2", "mathjax", ["es5/", "LICENSE"]),
    "requirejs": ("2.3.7", "requirejs", ["require.js", "README.md"]),
    "@jupyter-widgets/html-manager": ("1.0.15", "html-manager", ["dist/", "LICENSE"]),
}
# Folder prefixes stripped when copying (so MathJax's es5/ lands directly in vendor/mathjax/).
STRIP = {"mathjax": "es5/", "@jupyter-widgets/html-manager": "dist/"}
SKIP_SUFFIXES = (".map",)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class BuildError(RuntimeError):
    """A failure with a message meant for the reader of the build log."""


# --------------------------------------------------------------------------------------
# Vendored JavaScript
# --------------------------------------------------------------------------------------
def wanted_versions() -> dict[str, str]:
    return {name: version for name, (version, _, _) in VENDORED.items()}


def vendor_is_current() -> bool:
    try:
        return json.loads(VERSIONS_FILE.read_text()) == wanted_versions()
    except (OSError, ValueError):
        return False


def fetch_vendor() -> None:
    """Download the pinned npm tarballs (no dependencies) and copy what the pages load."""
    if vendor_is_current():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError(
            "npm is needed once to fetch MathJax, require.js and the widget manager into "
            "book/_vendor/ (apt-get install -y npm, or install Node.js)."
        )
    print("build_book: fetching pinned JavaScript from the npm registry ...", flush=True)
    if STATIC_VENDOR.exists():
        shutil.rmtree(STATIC_VENDOR)
    STATIC_VENDOR.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=VENDOR) as tmp:
        for name, (version, folder, paths) in VENDORED.items():
            spec = f"{name}@{version}"
            result = subprocess.run(
                [npm, "pack", spec, "--pack-destination", tmp, "--silent"],
                capture_output=True,
                text=True,
                cwd=tmp,
            )
            if result.returncode != 0:
                raise BuildError(f"npm pack {spec} failed:\n{result.stderr.strip()}")
            tarball = Path(tmp) / result.stdout.strip().splitlines()[-1]
            _extract(tarball, name, STATIC_VENDOR / folder, paths)
            print(f"build_book:   {spec} -> _static/vendor/{folder}/", flush=True)
    VERSIONS_FILE.write_text(json.dumps(wanted_versions(), indent=2) + "\n")


def _extract(tarball: Path, name: str, dest: Path, paths: list[str]) -> None:
    strip = STRIP.get(name, "")
    copied = 0
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.startswith("package/"):
                continue
            rel = member.name[len("package/") :]
            if not any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in paths):
                continue
            if rel.endswith(SKIP_SUFFIXES):
                continue
            out = dest / (rel[len(strip) :] if strip and rel.startswith(strip) else rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            copied += 1
    if copied == 0:
        raise BuildError(f"{tarball.name}: none of {paths} found in the package")


# --------------------------------------------------------------------------------------
# Checks before building
# --------------------------------------------------------------------------------------
def preflight() -> list[Path]:
    if (ROOT / "_static").is_dir():
        raise BuildError(
            "A root _static/ folder exists. Jupyter Book 1.x adds every .js and .css file under "
            "html_static_path to every page when it does, which loads MathJax and the widget "
            "manager twice. Put page assets in book/_assets/ instead."
        )
    chapters = sorted((ROOT / "notebooks").glob(CHAPTER_GLOB))
    if not chapters:
        print("build_book: notice: notebooks/ has no chapters yet (NN_slug.ipynb)", flush=True)
    return chapters


def kernel_environment() -> dict[str, str]:
    """Environment for the kernels that execute chapters (static explorers, figure text
    sizes recorded); writes the IPython startup file it points at."""
    startup = KERNEL_IPYTHONDIR / "profile_default" / "startup" / "00-backprop-book.py"
    startup.parent.mkdir(parents=True, exist_ok=True)
    if not startup.exists() or startup.read_text() != KERNEL_STARTUP:
        startup.write_text(KERNEL_STARTUP)
    return {STATIC_ENV: "1", "IPYTHONDIR": str(KERNEL_IPYTHONDIR)}


def library_fingerprint() -> str:
    """Digest of every source file of backprop_lab/ (and of the static-mode switch)."""
    digest = hashlib.sha256(f"{STATIC_ENV}=1\n{KERNEL_STARTUP}".encode())
    package = ROOT / "backprop_lab"
    for path in sorted(package.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".txt", ".npz", ".json"):
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def invalidate_stale_cache() -> None:
    """Empty the execution cache when backprop_lab/ changed since it was filled.

    jupyter-cache keys a notebook on its code cells only, so a chapter whose cells did not
    change would otherwise keep outputs computed by an older library (an explorer drawn
    as a live widget, a figure from a fixed bug).
    """
    current = library_fingerprint()
    previous = LIBRARY_STAMP.read_text().strip() if LIBRARY_STAMP.exists() else None
    if previous == current:
        return
    if CACHE.exists():
        print(
            "build_book: backprop_lab/ changed since the chapters were last executed: "
            "emptying the execution cache (every chapter runs again)",
            flush=True,
        )
        shutil.rmtree(CACHE)
    LIBRARY_STAMP.parent.mkdir(parents=True, exist_ok=True)
    LIBRARY_STAMP.write_text(current + "\n")


# --------------------------------------------------------------------------------------
# Execution failures
# --------------------------------------------------------------------------------------
CELL_RE = re.compile(
    r"An error occurred while executing the following cell:\n-+\n(?P<source>.*?)\n-+\n",
    re.DOTALL,
)


def locate_cell(notebook: Path, source: str) -> tuple[int, int] | None:
    """(index among all cells, index among code cells) of the code cell with this source."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    code_index = -1
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        code_index += 1
        if cell.source.strip() == source.strip():
            return index, code_index
    return None


def error_summary(traceback: str) -> str:
    """The exception line: the last non-empty line of the traceback that names an error."""
    lines = [ln.rstrip() for ln in ANSI.sub("", traceback).splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b", line):
            return line.strip()
    return lines[-1].strip() if lines else "(no traceback recorded)"


def failed_notebooks(log: str) -> list[Path]:
    """Notebooks that myst-nb reported as failing ("Executing notebook failed")."""
    found = []
    for match in re.finditer(
        r"^(?P<path>\S+?\.(?:ipynb|md)):.*Executing notebook failed", log, re.M
    ):
        path = Path(match.group("path"))
        if path not in found:
            found.append(path)
    return found


def explain_execution_failures(log: str) -> bool:
    """Print notebook, cell and error for each chapter that failed; True if any was found."""
    paths = failed_notebooks(log)
    if not paths:
        return False
    explain_failed_paths(paths)
    return True


def explain_failed_paths(paths: list[Path]) -> None:
    """Print notebook, cell index, error and traceback tail for each failed chapter."""
    try:
        from jupyter_cache import get_cache

        cache = get_cache(str(CACHE))
    except Exception as exc:  # noqa: BLE001 - still name the notebooks
        cache = None
        print(f"build_book: (cannot open {CACHE}: {exc})", file=sys.stderr)
    for path in paths:
        rel = path.resolve().relative_to(ROOT) if path.is_absolute() else path
        traceback = ""
        if cache is not None:
            try:
                traceback = cache.get_project_record(str(path.resolve())).traceback or ""
            except Exception:  # noqa: BLE001 - record may be missing
                traceback = ""
        traceback = ANSI.sub("", traceback)
        where = "cell unknown"
        source = ""
        match = CELL_RE.search(traceback)
        if match:
            source = match.group("source")
            located = locate_cell(path, source) if path.suffix == ".ipynb" else None
            if located:
                where = f"cell {located[0]} (code cell {located[1]}, nbval's 'Cell {located[1]}')"
        print(
            f"\nbuild_book: CHAPTER FAILED TO EXECUTE: {rel}, {where}\n"
            f"  error: {error_summary(traceback)}",
            file=sys.stderr,
        )
        if source:
            print("  cell source:", file=sys.stderr)
            for line in source.splitlines()[:20]:
                print(f"    | {line}", file=sys.stderr)
        tail = [ln for ln in traceback.splitlines() if ln.strip()][-12:]
        if tail:
            print("  traceback (last lines):", file=sys.stderr)
            for line in tail:
                print(f"    {line}", file=sys.stderr)


# --------------------------------------------------------------------------------------
# Parallel execution of changed chapters
# --------------------------------------------------------------------------------------
def execution_timeout() -> int:
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text()) or {}
    return int((config.get("execute") or {}).get("timeout", 30))


def pre_execute(chapters: list[Path]) -> None:
    """Run the chapters that are not in the cache, in parallel, and cache their outputs.

    jupyter-book (myst-nb) executes notebooks one at a time; on a 2-core machine running
    two kernels at once roughly halves a cold build. A chapter that fails here stops the
    build with the notebook, cell and error named.
    """
    if os.environ.get("BOOK_JOBS", "").strip() == "1":
        return  # serial: myst-nb executes the chapters one by one during the build
    if len(chapters) < 2 or (os.cpu_count() or 1) < 2:
        return  # nothing to gain; myst-nb executes it during the build
    from jupyter_cache import get_cache
    from jupyter_cache.executors import load_executor

    cache = get_cache(str(CACHE))
    records = [cache.add_nb_to_project(str(path)) for path in chapters]
    stale = cache.list_unexecuted(filter_pks=[r.pk for r in records])
    if len(stale) < 2:
        return
    names = ", ".join(Path(r.uri).name for r in stale)
    print(f"build_book: executing {len(stale)} chapters in parallel: {names}", flush=True)
    # One BLAS/OpenMP thread per kernel: the kernels already fill the cores, and spinning
    # thread pools of two kernels on two cores slow both down.
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    saved = {k: os.environ.get(k) for k in threads}
    os.environ.update(threads)
    start = time.perf_counter()
    try:
        executor = load_executor("local-parallel", cache)
        result = executor.run_and_cache(
            filter_pks=[r.pk for r in stale], timeout=execution_timeout(), allow_errors=False
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    print(
        f"build_book: executed {len(result.succeeded)} chapter(s) in "
        f"{time.perf_counter() - start:.1f} s",
        flush=True,
    )
    if result.excepted:
        explain_failed_paths([Path(uri) for uri in result.excepted])
        raise BuildError(f"{len(result.excepted)} chapter(s) failed to execute (see above)")
    # Chapters that errored outside their cells (kernel died, could not be read) are left to
    # the build, which executes them again and reports what happened.


# --------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------
def jupyter_book_command(edition: str) -> tuple[list[str], Path]:
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", ".", "-W", "--builder", "html"]
    if edition == "student":
        out = ROOT / "_build" / "student"
        cmd += ["--path-output", str(out)]
        # Start from an empty output folder so that nothing from an earlier build (such as
        # _sources/*.ipynb with solutions) survives; the parsed pages are still reused.
        shutil.rmtree(out / "_build" / "html", ignore_errors=True)
        return cmd, out / "_build" / "html"
    return cmd, ROOT / "_build" / "html"


def stop_reasons(log: str) -> list[str]:
    """The warning Sphinx stopped on (-W), else the last WARNING/ERROR lines of the log."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Warning, treated as error:") and i + 1 < len(lines):
            return [lines[i + 1].strip()]
    reasons = [ln.strip() for ln in lines if "WARNING" in ln or "ERROR" in ln or "Error:" in ln]
    return reasons[-10:] or [ln.strip() for ln in lines if ln.strip()][-5:]


def config_stamp(edition: str) -> tuple[Path, str]:
    """Where the digest of _config.yml + _toc.yml of the last good build is kept, and the
    current digest. Sphinx re-reads only the pages it considers changed, so a new toc
    (numbering, order) or config would otherwise leave older pages with stale sidebars."""
    digest = hashlib.sha256()
    for name in ("_config.yml", "_toc.yml"):
        digest.update((ROOT / name).read_bytes())
    return ROOT / "_build" / f".book-config-{edition}.sha256", digest.hexdigest()


def run_build(edition: str) -> Path:
    cmd, html = jupyter_book_command(edition)
    stamp, digest = config_stamp(edition)
    if not stamp.exists() or stamp.read_text().strip() != digest:
        cmd.append("--all")  # rewrite every page (outputs still come from the cache)
    print(f"build_book: {' '.join(cmd)}   (edition: {edition})", flush=True)
    log_path = ROOT / "_build" / (f"book-build-{edition}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, BOOK_EDITION=edition, PYTHONUNBUFFERED="1", **kernel_environment())
    lines: list[str] = []
    with subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
        returncode = proc.wait()
    log = "".join(lines)
    log_path.write_text(log)
    # jupyter-book 1.x can exit 0 after Sphinx reported an error; trust the log as well.
    failed = returncode != 0 or "\nSphinx error:" in log or "Warning, treated as error" in log
    if failed:
        explained = explain_execution_failures(ANSI.sub("", log))
        if not explained:
            print("\nbuild_book: the build stopped on:", file=sys.stderr)
            for line in stop_reasons(ANSI.sub("", log)):
                print(f"  {line}", file=sys.stderr)
        raise BuildError(
            f"jupyter-book build failed (exit status {returncode}); full log in "
            f"{log_path.relative_to(ROOT)}. Warnings are errors (-W)."
        )
    stamp.write_text(digest + "\n")
    return html


def main() -> int:
    os.chdir(ROOT)
    edition = (os.environ.get("BOOK_EDITION") or "instructor").strip().lower()
    if edition not in ("instructor", "student"):
        print(f"build_book: BOOK_EDITION must be 'student' or unset, not {edition!r}")
        return 2
    start = time.perf_counter()
    # Kernels started by this process (pre_execute) and by jupyter-book inherit these.
    os.environ.update(kernel_environment())
    try:
        fetch_vendor()
        chapters = preflight()
        invalidate_stale_cache()
        pre_execute(chapters)
        html = run_build(edition)
    except BuildError as exc:
        print(f"\nbuild_book: ERROR: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    print(
        f"\nbuild_book: built the {edition} edition in {seconds:.1f} s: {html.relative_to(ROOT)}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
