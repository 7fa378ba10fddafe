"""Real clients against the gateway: aws CLI, rclone, s3cmd, curl."""

import subprocess
import os

import pytest

import harness as h


def make_tree(root):
    # One file large enough for the CLIs' multipart uploads (aws: 8 MiB threshold).
    return h.make_tree(root, 200, 7, [0, 1, 100, 4096, 70_000, 300_000], large=9 * 1024 * 1024)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("tree") / "src")


def test_aws_s3_sync_up_and_down(env, tree, tmp_path, prefix):
    # The tree has empty files: botocore sends them with `Expect: 100-continue` too, and a
    # final answer without a 100 on a kept-alive connection once hung the next upload on it.
    aws = h.tool("aws")
    environ = env.gw.cli_env(home=tmp_path)
    environ["AWS_MAX_ATTEMPTS"] = "2"
    dest = f"s3://vb/{prefix}aws"
    h.run([aws, "--endpoint-url", env.endpoint, "s3", "sync", str(tree), dest, "--only-show-errors",
           "--cli-read-timeout", "20"], env=environ, timeout=150)
    listed = env.gw.client().list_objects_v2(Bucket="vb", Prefix=f"{prefix}aws/", MaxKeys=1000)
    assert listed["KeyCount"] == 201
    assert len(set(env.vb("vb").placements(prefix).values())) == 3

    down = tmp_path / "down"
    h.run([aws, "--endpoint-url", env.endpoint, "s3", "sync", dest, str(down), "--only-show-errors",
           "--cli-read-timeout", "20"], env=environ, timeout=150)
    assert h.tree_digest(down) == h.tree_digest(tree)

    # A second sync has nothing to do.
    r = h.run([aws, "--endpoint-url", env.endpoint, "s3", "sync", str(tree), dest], env=environ)
    assert "upload:" not in r.stdout

    # aws s3 ls / cp / rm
    r = h.run([aws, "--endpoint-url", env.endpoint, "s3", "ls", f"{dest}/"], env=environ)
    assert "large.bin" in r.stdout and "PRE dir0/" in r.stdout
    r = subprocess.run([aws, "--endpoint-url", env.endpoint, "s3", "cp", f"{dest}/large.bin", "-"], env=environ,
                       capture_output=True, timeout=60, check=True)
    assert r.stdout == (tree / "large.bin").read_bytes()
    h.run([aws, "--endpoint-url", env.endpoint, "s3", "rm", "--recursive", dest, "--only-show-errors"], env=environ)
    assert env.gw.client().list_objects_v2(Bucket="vb", Prefix=f"{prefix}aws/")["KeyCount"] == 0


def test_aws_s3api_commands(env, tmp_path, prefix):
    aws = h.tool("aws")
    environ = env.gw.cli_env(home=tmp_path)
    src = tmp_path / "f.txt"
    src.write_text("s3api body")
    h.run([aws, "--endpoint-url", env.endpoint, "s3api", "put-object", "--bucket", "vb", "--key", prefix + "f.txt",
           "--body", str(src), "--content-type", "text/plain"], env=environ)
    r = h.run([aws, "--endpoint-url", env.endpoint, "s3api", "head-object", "--bucket", "vb", "--key", prefix + "f.txt"], env=environ)
    assert '"ContentType": "text/plain"' in r.stdout
    out = tmp_path / "out.txt"
    h.run([aws, "--endpoint-url", env.endpoint, "s3api", "get-object", "--bucket", "vb", "--key", prefix + "f.txt", str(out)], env=environ)
    assert out.read_text() == "s3api body"
    # A presigned URL made by the CLI (SigV4: awscli v1 presigns with SigV2 unless told),
    # fetched by curl.
    (tmp_path / "aws-config").write_text("[default]\ns3 =\n    signature_version = s3v4\n")
    environ["AWS_CONFIG_FILE"] = str(tmp_path / "aws-config")
    r = h.run([aws, "--endpoint-url", env.endpoint, "s3", "presign", f"s3://vb/{prefix}f.txt", "--expires-in", "300"], env=environ)
    got = h.run(["curl", "-sSfL", r.stdout.strip()])
    assert got.stdout == "s3api body"


def rclone_env(env, tmp_path):
    # Without the machine's AWS_* settings (an AWS_CA_BUNDLE breaks rclone's plain-HTTP client).
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environ.update(
        RCLONE_CONFIG=str(tmp_path / "rclone.conf"),
        RCLONE_CONFIG_GW_TYPE="s3",
        RCLONE_CONFIG_GW_PROVIDER="Other",
        RCLONE_CONFIG_GW_ENDPOINT=env.endpoint,
        RCLONE_CONFIG_GW_ACCESS_KEY_ID=h.ADMIN_KEY,
        RCLONE_CONFIG_GW_SECRET_ACCESS_KEY=h.ADMIN_SECRET,
        RCLONE_CONFIG_GW_REGION=h.REGION,
        RCLONE_CONFIG_GW_FORCE_PATH_STYLE="true",
    )
    return environ


def test_rclone_sync_up_and_down(env, tree, tmp_path, prefix):
    environ = rclone_env(env, tmp_path)
    remote = f"gw:vb/{prefix}rclone"
    h.run(["rclone", "sync", str(tree), remote, "--retries", "1", "--low-level-retries", "2"], env=environ, timeout=150)
    down = tmp_path / "down"
    h.run(["rclone", "sync", remote, str(down), "--retries", "1", "--low-level-retries", "2"], env=environ, timeout=150)
    assert h.tree_digest(down) == h.tree_digest(tree)
    # rclone check compares sizes and hashes (MD5 from ETags) both ways.
    h.run(["rclone", "check", str(tree), remote], env=environ, timeout=150)
    r = h.run(["rclone", "lsf", remote, "--max-depth", "1"], env=environ)
    assert "large.bin" in r.stdout.splitlines()
    h.run(["rclone", "purge", remote], env=environ, timeout=150)
    assert env.gw.client().list_objects_v2(Bucket="vb", Prefix=f"{prefix}rclone/")["KeyCount"] == 0


def s3cmd_config(env, tmp_path):
    cfg = tmp_path / "s3cmd.cfg"
    hostport = f"{h.HOST}:{env.gw.port}"
    cfg.write_text(
        "[default]\n"
        f"access_key = {h.ADMIN_KEY}\n"
        f"secret_key = {h.ADMIN_SECRET}\n"
        f"host_base = {hostport}\n"
        f"host_bucket = {hostport}\n"
        "bucket_location = us-east-1\n"
        "use_https = False\n"
        "signature_v2 = False\n"
        "check_ssl_certificate = False\n"
        "multipart_chunk_size_mb = 5\n"
    )
    return str(cfg)


def test_s3cmd_put_get_ls_del(env, tmp_path, prefix):
    s3cmd = [h.tool("s3cmd"), "-c", s3cmd_config(env, tmp_path)]
    small = tmp_path / "small é.txt"
    small.write_text("from s3cmd")
    big = tmp_path / "big.bin"
    big.write_bytes(h.payload(11 * 1024 * 1024, "s3cmd"))  # multipart with 5 MiB chunks
    h.run(s3cmd + ["put", str(small), f"s3://vb/{prefix}"])
    h.run(s3cmd + ["put", str(big), f"s3://vb/{prefix}big.bin"])
    r = h.run(s3cmd + ["ls", f"s3://vb/{prefix}"])
    assert "small é.txt" in r.stdout and "big.bin" in r.stdout
    r = h.run(s3cmd + ["ls", "s3://"])
    assert "s3://vb" in r.stdout
    out = tmp_path / "out"
    out.mkdir()
    h.run(s3cmd + ["get", f"s3://vb/{prefix}big.bin", str(out / "big.bin")])
    h.run(s3cmd + ["get", f"s3://vb/{prefix}small é.txt", str(out / "small.txt")])
    assert (out / "big.bin").read_bytes() == big.read_bytes()
    assert (out / "small.txt").read_text() == "from s3cmd"
    h.run(s3cmd + ["del", f"s3://vb/{prefix}big.bin", f"s3://vb/{prefix}small é.txt"])
    assert env.gw.client().list_objects_v2(Bucket="vb", Prefix=prefix)["KeyCount"] == 0


def test_curl_sigv4(env, prefix):
    """curl's own SigV4 signer (--aws-sigv4)."""
    url = f"{env.endpoint}/vb/{prefix}curl.txt"
    creds = f"{h.ADMIN_KEY}:{h.ADMIN_SECRET}"
    sig = "aws:amz:us-east-1:s3"
    h.run(["curl", "-sSf", "--aws-sigv4", sig, "--user", creds, "-X", "PUT", "--data-binary", "from curl",
           # (curl's default form content type makes moto drop the body)
           "-H", "Content-Type: text/plain",
           "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", url])
    r = h.run(["curl", "-sSf", "--aws-sigv4", sig, "--user", creds,
               "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", url])
    assert r.stdout == "from curl"
    r = h.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--aws-sigv4", sig, "--user", f"{h.ADMIN_KEY}:wrong",
               "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", url], check=False)
    assert r.stdout == "403"
