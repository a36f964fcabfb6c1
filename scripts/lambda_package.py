"""Build the DLQ auto-fix Lambda's deployment zip (``make lambda-package``).

The zip holds the ``wap_pipeline`` package (its ``.py`` files) and every *pure-Python* distribution the
handler imports, found by importing it here: what goes in is what the handler really loads, never a
hand-kept list. Left out, and listed in ``<zip>.layer-requirements.txt`` with their versions:

* distributions with compiled extensions (pyarrow, numpy, orjson, pydantic-core, ...): a zip built on
  this machine would carry this machine's binaries; install them for the function's platform into a
  layer (``pip install --platform manylinux2014_x86_64 --only-binary=:all: --target python/ -r ...``);
* boto3 and its dependencies, which the Lambda Python runtime provides.

Usage: ``python scripts/lambda_package.py [--out dist/dlq-autofix-lambda.zip]``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import zipfile
from importlib.metadata import Distribution, distribution, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANDLER = "wap_pipeline.lambda_handlers.dlq_autofix.handler"
# What the handler imports when it runs (it imports lazily, so importing its module is not enough).
HANDLER_MODULES = (
    "wap_pipeline.lambda_handlers.dlq_autofix",
    "wap_pipeline.ingest.dlq",
    "wap_pipeline.operations.actions",
    "wap_pipeline.operations.patching",
    "wap_pipeline.rules.dlq_fixes",
    "wap_pipeline.provision",
    "wap_pipeline.iceberg.catalog",
)
IN_THE_RUNTIME = {"boto3", "botocore", "s3transfer", "jmespath", "urllib3", "python-dateutil", "six"}
NOT_NEEDED = {"setuptools", "pip"}  # imported by site hooks, not by the handler


def imported_distributions() -> dict[str, Distribution]:
    for module in HANDLER_MODULES:
        importlib.import_module(module)
    by_module = packages_distributions()
    names = {
        name
        for top in {m.split(".")[0] for m in sys.modules}
        if top not in sys.stdlib_module_names
        for name in by_module.get(top, [])
    }
    return {name: distribution(name) for name in sorted(names - {"wap-pipeline"} - NOT_NEEDED)}


def is_compiled(dist: Distribution) -> bool:
    return any(f.suffix in (".so", ".pyd") or ".so." in f.name for f in dist.files or [])


def build(out: Path) -> tuple[list[str], list[str], list[str]]:
    """Write the zip; returns (included, for a layer, left to the runtime) as name==version."""
    dists = imported_distributions()
    included, layer, runtime = [], [], []
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((ROOT / "wap_pipeline").rglob("*.py")):
            archive.write(path, path.relative_to(ROOT).as_posix())
        for name, dist in dists.items():
            pinned = f"{dist.metadata['Name']}=={dist.version}"
            if dist.metadata["Name"].lower() in IN_THE_RUNTIME or name in IN_THE_RUNTIME:
                runtime.append(pinned)
                continue
            if is_compiled(dist):
                layer.append(pinned)
                continue
            included.append(pinned)
            for file in dist.files or []:
                if "__pycache__" in file.parts or file.parts[0] == ".." or file.suffix == ".pyc":
                    continue
                archive.write(dist.locate_file(file), file.as_posix())
    out.with_name(out.name + ".layer-requirements.txt").write_text("\n".join(layer) + "\n")
    return included, layer, runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "dlq-autofix-lambda.zip")
    out = parser.parse_args().out
    sys.path.insert(0, str(ROOT))
    included, layer, runtime = build(out)
    print(f"{out} ({out.stat().st_size // 1024} KiB), handler {HANDLER}")
    print(f"  included (pure Python): wap_pipeline, {', '.join(included)}")
    print(f"  for a layer (compiled), listed in {out.name}.layer-requirements.txt: {', '.join(layer)}")
    print(f"  provided by the Lambda Python runtime: {', '.join(runtime)}")


if __name__ == "__main__":
    main()
