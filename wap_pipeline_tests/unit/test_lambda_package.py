"""`make lambda-package`: the zip holds the handler and pure Python only; compiled packages are listed."""

import subprocess
import sys
import zipfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "lambda_package.py"


def test_the_zip_has_the_handler_and_no_compiled_code(tmp_path):
    out = tmp_path / "dlq-autofix-lambda.zip"
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    names = set(zipfile.ZipFile(out).namelist())
    assert "wap_pipeline/lambda_handlers/dlq_autofix.py" in names
    assert "wap_pipeline/rules/dlq_fixes.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".pyc"))]
    assert not [n for n in names if n.startswith(("wap_pipeline_tests/", "boto3/", "botocore/"))]
    layer = (tmp_path / "dlq-autofix-lambda.zip.layer-requirements.txt").read_text().split()
    assert {line.split("==")[0].lower() for line in layer} >= {"pyarrow", "orjson"}
