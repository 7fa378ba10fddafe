"""The SAM template passes `sam validate --lint` (cfn-lint), offline, with fake credentials."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import harness  # noqa: E402


def test_sam_validate_lint():
    if not shutil.which("sam"):
        harness.missing("sam not found (pip install aws-sam-cli cfn-lint)")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
               AWS_DEFAULT_REGION="us-east-1", SAM_CLI_TELEMETRY="0")
    r = subprocess.run(
        ["sam", "validate", "--lint", "--region", "us-east-1", "-t", "infra/template.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is a valid SAM Template" in r.stdout + r.stderr


def test_template_keeps_least_privilege_and_the_function_url():
    text = open(os.path.join(ROOT, "infra", "template.yaml")).read()
    assert "Resource: !GetAtt MetadataTable.Arn" in text
    assert "dynamodb:*" not in text and "Resource: \"*\"" not in text
    assert "AuthType: NONE" in text and "BillingMode: PAY_PER_REQUEST" in text
    for binary in ("s3-balance-http", "s3-balance-health"):
        assert f"Binary: {binary}" in text
