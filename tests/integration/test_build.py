"""Builds and commits through the real docker CLI (legacy and default modes) and the raw API.

Creates: a daemon (vfs, no network) per test with the busybox test image
loaded; for the remote context, an HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import tarfile
import threading

import pytest

from engine.testing.daemon import UnixHTTPConnection
from engine.testing.images import busybox_archive

pytestmark = pytest.mark.root("daemons")

EVERY_INSTRUCTION = """\
# escape=\\
ARG BASE=busybox
FROM ${BASE} AS base
LABEL stage=base
ARG GREETING=hello
ENV GREETING_ENV=${GREETING:-none} \\
    OTHER="two words"
WORKDIR /src
COPY . .
ADD data.tar /extracted/
RUN echo "$GREETING from $(pwd)" > /built.txt && ls /extracted >> /built.txt
SHELL ["/bin/sh", "-c"]
RUN ["/bin/sh", "-c", "echo exec form >> /built.txt"]

FROM busybox
MAINTAINER someone@example.com
COPY --from=base --chown=1:2 /built.txt /out/built.txt
COPY --from=base /src/hello.txt /out/
COPY --from=0 /extracted /out/extracted
EXPOSE 8080 9090/udp
VOLUME /data
USER root
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s CMD true
ONBUILD RUN echo triggered
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /out/built.txt /out/hello.txt; ls /out/extracted"]
"""


def make_context(files: dict[str, bytes | tuple[str, str]], gzip: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gzip else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, data[1]
                tar.addfile(info)
                continue
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def data_tar() -> bytes:
    return make_context({"a.txt": b"A\n", "dir/b.txt": b"B\n"})


@pytest.fixture
def loaded(docker, tmp_path):
    path = tmp_path / "busybox.tar"
    path.write_bytes(busybox_archive())
    docker("load", "-i", str(path))
    return docker


def write_context(directory, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
    return str(directory)


def api(daemon, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(daemon.socket, timeout=120)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def leftovers(daemon, docker) -> tuple[list[str], list[str]]:
    """Containers, and build directories left in the daemon's root."""
    containers = docker("ps", "-aq").stdout.decode().split()
    builder = os.path.join(daemon.root, "builder")
    return containers, (os.listdir(builder) if os.path.isdir(builder) else [])


@pytest.mark.parametrize("mode", ["legacy", "default"])
def test_multistage_every_instruction_builds_caches_and_runs(daemon, loaded, tmp_path, mode):
    docker = loaded
    ctx = write_context(
        tmp_path / "ctx",
        {"Dockerfile": EVERY_INSTRUCTION.encode(), "hello.txt": b"hello file\n", "data.tar": data_tar()},
    )
    env_mode = {"legacy": ["env", "DOCKER_BUILDKIT=0"], "default": ["env"]}[mode]

    def build(*extra):
        argv = [*env_mode, "docker", "build", *extra, "-t", "every:1", ctx]
        env = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=str(tmp_path / "cfg"))
        env.pop("DOCKER_BUILDKIT", None)
        return subprocess.run(argv, capture_output=True, env=env, timeout=300)

    first = build("--build-arg", "GREETING=hi")
    assert first.returncode == 0, first.stdout.decode() + first.stderr.decode() + daemon.log()[-3000:]
    out = first.stdout.decode()
    assert "Step 1/" in out and "Successfully built" in out and "Successfully tagged every:1" in out
    assert " ---> Running in " in out and "Removing intermediate container" in out
    second = build("--build-arg", "GREETING=hi")
    assert second.returncode == 0, second.stderr.decode()
    out2 = second.stdout.decode()
    steps = out2.count("Step ")
    # Every step after each FROM comes from the cache.
    assert out2.count(" ---> Using cache") == steps - 3, out2
    run = docker("run", "--rm", "every:1").stdout.decode()
    assert "hi from /src" in run and "exec form" in run and "hello file" in run
    assert "a.txt" in run and "dir" in run
    doc = json.loads(docker("image", "inspect", "every:1").stdout)[0]
    cfg = doc["Config"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "9090/udp": {}}
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["StopSignal"] == "SIGTERM" and cfg["User"] == "root"
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 30_000_000_000, "Timeout": 3_000_000_000}
    assert cfg["OnBuild"] == ["RUN echo triggered"]
    assert doc["Author"] == "someone@example.com"
    owner = docker("run", "--rm", "--entrypoint", "stat", "every:1", "-c", "%u:%g", "/out/built.txt").stdout
    assert owner.decode().strip() == "1:2"
    assert leftovers(daemon, docker) == ([], [])
    # ONBUILD triggers run in a child build.
    child = write_context(tmp_path / "child", {"Dockerfile": b"FROM every:1\n"})
    docker("build", "-t", "child", child)
    hist = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", "child").stdout.decode()
    assert "echo triggered" in hist


def test_raw_api_stream_and_errors(daemon, loaded):
    docker = loaded
    images_before = docker("images", "-aq").stdout.split()
    status, body = api(daemon, "POST", "/v1.41/build?t=meta", make_context({"Dockerfile": b"FROM busybox\nENV A=1\n"}))
    assert status == 200
    docs = lines(body)
    assert docs[0] == {"stream": "Step 1/2 : FROM busybox"} and docs[1] == {"stream": "\n"}
    assert any("aux" in d for d in docs)
    assert docs[-2]["stream"].startswith("Successfully built ") and docs[-1] == {
        "stream": "Successfully tagged meta:latest\n"
    }
    cases = {
        b"this is not a tar" * 40: (400, "archive/tar: invalid tar header"),
        make_context({"a": b"x"}): (400, "Cannot locate specified Dockerfile: Dockerfile"),
        make_context({"Dockerfile": b""}): (400, "the Dockerfile (Dockerfile) cannot be empty"),
        make_context({"Dockerfile": b"FROM busybox\nFOOBAR x\n"}): (
            400,
            "dockerfile parse error line 2: unknown instruction: FOOBAR",
        ),
    }
    for context, (code, message) in cases.items():
        status, body = api(daemon, "POST", "/v1.41/build", context)
        assert status == code and json.loads(body)["message"] == message, body
    in_stream = {
        b"FROM busybox\nRUN echo hi && exit 3\n": (
            "The command '/bin/sh -c echo hi && exit 3' returned a non-zero code: 3",
            3,
        ),
        b"FROM busybox\nCOPY ../x /\n": ("COPY failed: forbidden path outside the build context: ../x ()", None),
        b"FROM busybox\nCOPY link/passwd /\n": (
            "COPY failed: file not found in build context or excluded by .dockerignore: stat link/passwd: "
            "file does not exist",
            None,
        ),
        b"FROM busybox AS a\nFROM busybox\nCOPY --from=1 /x /\n": (
            "invalid from flag value 1: refers to current build stage",
            None,
        ),
        b"FROM busybox\nSTOPSIGNAL FOO\n": ("Invalid signal: FOO", None),
    }
    for dockerfile, (message, code) in in_stream.items():
        context = make_context({"Dockerfile": dockerfile, "link": ("sym", "/etc")})
        status, body = api(daemon, "POST", "/v1.41/build?forcerm=1", context)
        docs = lines(body)
        assert status == 200 and docs[-1]["error"] == message, body
        assert docs[-1]["errorDetail"].get("code") == code
    assert leftovers(daemon, docker) == ([], [])
    # With rm alone (the CLI's default) a failed RUN's container goes too (dockerd keeps it
    # unless forcerm); with rm=0 it stays, for a look at what went wrong.
    failing = {"Dockerfile": b"FROM busybox\nRUN exit 4\n"}
    status, body = api(daemon, "POST", "/v1.41/build?rm=1", make_context(failing))
    assert lines(body)[-1]["errorDetail"]["code"] == 4
    assert leftovers(daemon, docker) == ([], [])
    status, body = api(daemon, "POST", "/v1.41/build?rm=0", make_context(failing))
    assert lines(body)[-1]["errorDetail"]["code"] == 4
    kept, dirs = leftovers(daemon, docker)
    assert len(kept) == 1 and dirs == []
    docker("rm", kept[0])
    images_after = docker("images", "-aq").stdout.split()
    # meta:latest only: the failed builds left no image and no layer.
    assert len(images_after) == len(images_before) + 1


def test_commit_with_changes(daemon, loaded):
    docker = loaded
    cid = docker("run", "-d", "busybox", "sh", "-c", "echo x > /f; sleep 100").stdout.decode().strip()
    docker("exec", cid, "true")
    out = docker(
        "commit", "-c", 'CMD ["x"]', "-c", "ENV A=b", "-m", "msg", "-a", "me", "-p", cid, "cm:1"
    ).stdout.decode()
    assert out.startswith("sha256:")
    doc = json.loads(docker("image", "inspect", "cm:1").stdout)[0]
    assert doc["Config"]["Cmd"] == ["x"] and "A=b" in doc["Config"]["Env"]
    assert doc["Comment"] == "msg" and doc["Author"] == "me"
    assert "Container" not in doc  # API 1.45 (the CLI's) leaves it out; 1.41 has it
    status, body = daemon.request("GET", "/v1.41/images/cm:1/json")
    assert status == 200 and json.loads(body)["Container"] == cid
    assert len(doc["RootFS"]["Layers"]) == 2
    content = docker("run", "--rm", "cm:1", "cat", "/f").stdout
    assert content == b"x\n"
    state = json.loads(docker("inspect", cid).stdout)[0]["State"]
    assert state["Running"] and not state["Paused"]
    status, body = api(daemon, "POST", f"/v1.41/commit?container={cid}&changes=FROM%20x")
    assert status == 400 and json.loads(body)["message"] == "from is not a valid change command"
    status, body = api(daemon, "POST", "/v1.41/commit?container=nosuch")
    assert status == 404
    docker("rm", "-f", cid)


def test_prune_routes(daemon, loaded):
    docker = loaded
    assert "Total reclaimed space: 0B" in docker("builder", "prune", "-f").stdout.decode()
    docker("system", "prune", "-f")
    status, body = api(daemon, "POST", "/v1.41/build/prune")
    assert status == 200 and json.loads(body) == {"CachesDeleted": None, "SpaceReclaimed": 0}


def test_remote_context_and_dockerfile_elsewhere(daemon, loaded, tmp_path):
    docker = loaded
    tarball = make_context(
        {"Dockerfile": b"FROM busybox\nCOPY f /f\n", "sub/other.df": b"FROM busybox\nCOPY f /g\n", "f": b"remote\n"},
        gzip=True,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/x-gzip")
            self.send_header("Content-Length", str(len(tarball)))
            self.end_headers()
            self.wfile.write(tarball)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/ctx.tar.gz"
        docker("build", "-t", "remote", url)
        assert docker("run", "--rm", "remote", "cat", "/f").stdout == b"remote\n"
        status, body = api(daemon, "POST", f"/v1.41/build?t=remote2&dockerfile=sub/other.df&remote={url}")
        assert status == 200 and lines(body)[-1] == {"stream": "Successfully tagged remote2:latest\n"}
        assert docker("run", "--rm", "remote2", "cat", "/g").stdout == b"remote\n"
    finally:
        server.shutdown()
        server.server_close()


def test_dockerignore_and_quiet(daemon, loaded, tmp_path):
    docker = loaded
    ctx = write_context(
        tmp_path / "ctx",
        {
            "Dockerfile": b"FROM busybox\nCOPY . /c\n",
            ".dockerignore": b"ignored\n**/*.log\n!keep.log\nDockerfile\n",
            "ignored/x": b"1",
            "a/b/c.log": b"1",
            "keep.log": b"1",
            "ok": b"1",
        },
    )
    image_id = docker("build", "-q", ctx).stdout.decode().strip()
    assert image_id.startswith("sha256:")
    listing = docker("run", "--rm", image_id, "find", "/c", "-type", "f").stdout.decode().split()
    assert sorted(listing) == ["/c/.dockerignore", "/c/keep.log", "/c/ok"]


def test_engine_client_build_and_commit(daemon, loaded, tmp_path):
    """``engine build`` and ``engine commit`` with docker's flags, output and exit codes."""
    import sys

    def engine(*args, stdin=None):
        env = dict(os.environ, DOCKER_CONFIG=str(tmp_path / "cfg"))
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", "-H", daemon.host, *args],
            input=stdin,
            capture_output=True,
            env=env,
            timeout=300,
        )

    outside = tmp_path / "elsewhere.df"
    outside.write_bytes(b"FROM busybox\nARG X\nCOPY . /c\nRUN echo $X > /x\n")
    ctx = write_context(tmp_path / "ctx", {"keep": b"1", "skip.tmp": b"1", ".dockerignore": b"*.tmp\n"})
    proc = engine("build", "-t", "eb:1", "-f", str(outside), "--build-arg", "X=42", "--label", "l=v", ctx)
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    out = proc.stdout.decode()
    assert out.startswith("Sending build context to Docker daemon") and "Successfully tagged eb:1" in out
    docker = loaded
    files = docker("run", "--rm", "eb:1", "find", "/c", "-type", "f").stdout.decode().split()
    # The Dockerfile from elsewhere and the .dockerignore naming it were dropped by the daemon.
    assert files == ["/c/keep"]
    assert docker("run", "--rm", "eb:1", "cat", "/x").stdout == b"42\n"
    assert json.loads(docker("image", "inspect", "eb:1").stdout)[0]["Config"]["Labels"] == {"l": "v"}
    quiet = engine("build", "-q", "-", stdin=b"FROM busybox\nRUN exit 7\n")
    assert quiet.returncode == 7 and "returned a non-zero code: 7" in quiet.stderr.decode()
    cid = docker("create", "busybox", "true").stdout.decode().strip()
    committed = engine("commit", "-c", "ENV Z=1", "-m", "m", "-a", "a", cid, "ec:2")
    assert committed.returncode == 0 and committed.stdout.decode().startswith("sha256:")
    doc = json.loads(docker("image", "inspect", "ec:2").stdout)[0]
    assert "Z=1" in doc["Config"]["Env"] and doc["Comment"] == "m" and doc["Author"] == "a"
    assert "Total reclaimed space" in engine("builder", "prune", "-f").stdout.decode()


# side by side with dockerd


@pytest.fixture
def dockerd(workdir):
    from engine.testing import dockerd as reference

    if not reference.available():
        pytest.skip("dockerd (Debian docker.io) is not installed")
    d = reference.ReferenceDockerd(os.path.join(workdir, "dockerd")).start()
    yield d
    d.stop()


def test_same_results_as_dockerd(daemon, dockerd, docker_config, tmp_path):
    """The same build and the same commit give the same configs, history and layer as dockerd's."""
    archive = tmp_path / "busybox.tar"
    archive.write_bytes(busybox_archive())
    ctx = write_context(
        tmp_path / "ctx",
        {
            "Dockerfile": b'FROM busybox\nENV A=1 B="x y"\nLABEL k=v\nWORKDIR /w\nEXPOSE 80 53/udp\n'
            b'USER nobody\nSTOPSIGNAL SIGINT\nENTRYPOINT ["sh"]\nCMD ["-c", "true"]\n',
        },
    )
    results = {}
    for host in (daemon.host, dockerd.host):

        def run(*args, host=host):
            # Both at dockerd 20.10's API version: image inspect's fields depend on it (1.45 drops some).
            env = dict(
                os.environ,
                DOCKER_HOST=host,
                DOCKER_CONFIG=docker_config,
                DOCKER_BUILDKIT="0",
                DOCKER_API_VERSION="1.41",
            )
            proc = subprocess.run(["docker", *args], capture_output=True, env=env, timeout=180)
            assert proc.returncode == 0, proc.stderr.decode()
            return proc.stdout.decode()

        run("load", "-i", str(archive))
        run("build", "-t", "same", ctx)
        built = json.loads(run("image", "inspect", "same"))[0]
        history = run("history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Size}}", "same").splitlines()
        run(
            "run",
            "--name",
            "writer",
            "busybox",
            "sh",
            "-c",
            "mkdir -p /d && echo hello > /d/f && touch -d @1700000000 /d/f /d",
        )
        run("commit", "-c", 'CMD ["x"]', "-m", "m", "-a", "a", "writer", "committed")
        committed = json.loads(run("image", "inspect", "committed"))[0]
        changes = run("diff", "writer")
        top = committed["RootFS"]["Layers"][-1]
        results[host] = (built, history, committed, changes, layer_entries(host, docker_config, "committed", top))
    (
        (ours, our_hist, our_commit, our_changes, our_layer),
        (theirs, their_hist, their_commit, their_changes, their_layer),
    ) = results.values()
    assert our_hist == their_hist
    # Parent IDs differ (the creation times are in the configs); all else is the same.
    assert {**ours["Config"], "Image": ""} == {**theirs["Config"], "Image": ""}
    for key in ("Os", "Architecture", "Author", "Comment"):
        assert ours[key] == theirs[key], key
    # WORKDIR made /w now: same layers but for that directory's time.
    assert len(ours["RootFS"]["Layers"]) == len(theirs["RootFS"]["Layers"]) == 2
    assert set(ours) == set(theirs)
    drop = {"Hostname", "Image"}
    assert {k: v for k, v in ours["ContainerConfig"].items() if k not in drop} == {
        k: v for k, v in theirs["ContainerConfig"].items() if k not in drop
    }
    # Without a Config in the body the container's is taken: its host name is its ID, and dockerd
    # without a bridge marks its containers NetworkDisabled.
    drop_commit = {"Hostname", "NetworkDisabled"}
    assert {k: v for k, v in our_commit["Config"].items() if k not in drop_commit} == {
        k: v for k, v in their_commit["Config"].items() if k not in drop_commit
    }
    for key in ("Author", "Comment", "Os", "Architecture"):
        assert our_commit[key] == their_commit[key], key
    assert our_changes == their_changes
    assert len(our_commit["RootFS"]["Layers"]) == len(their_commit["RootFS"]["Layers"]) == 2
    # The committed layer holds the same entries. Its diff ID differs: dockerd 20.10's tar headers carry
    # the type bits in the mode field and the host's user names (engine.archive writes numeric owners).
    assert our_layer == their_layer


def layer_entries(host: str, docker_config: str, image: str, diff_id: str) -> list[tuple]:
    """What the layer ``diff_id`` of ``image`` holds, from ``docker save``: names, modes, owners, times, data."""
    env = dict(os.environ, DOCKER_HOST=host, DOCKER_CONFIG=docker_config)
    saved = subprocess.run(["docker", "save", image], capture_output=True, env=env, timeout=120, check=True).stdout
    outer = tarfile.open(fileobj=io.BytesIO(saved))
    import hashlib

    for member in outer.getmembers():
        if not member.name.endswith("layer.tar"):
            continue
        data = outer.extractfile(member).read()
        if "sha256:" + hashlib.sha256(data).hexdigest() != diff_id:
            continue
        inner = tarfile.open(fileobj=io.BytesIO(data))
        return [
            (m.name, m.mode & 0o7777, m.uid, m.gid, m.mtime, m.type, inner.extractfile(m).read() if m.isreg() else b"")
            for m in inner.getmembers()
        ]
    raise AssertionError(f"layer {diff_id} not in the saved image")


def test_full_disk_fails_cleanly(daemon, loaded):
    """A context bigger than the room left: a clear error, and nothing left behind.

    Creates: a 2 MiB tmpfs on ``<root>/builder`` (in the test's mount namespace), unmounted afterwards.
    """
    docker = loaded
    builder = os.path.join(daemon.root, "builder")
    os.makedirs(builder, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", builder], check=True)
    try:
        big = os.urandom(4 << 20)
        status, body = api(daemon, "POST", "/v1.41/build", make_context({"Dockerfile": b"FROM busybox\n", "big": big}))
        assert status == 500, body
        assert json.loads(body)["message"] == "failed to unpack the build context: No space left on device"
        assert os.listdir(builder) == []
    finally:
        subprocess.run(["umount", builder], check=True)
    assert docker("ps", "-aq").stdout == b""


def test_base_pulled_from_a_private_registry_and_add_url(daemon, loaded, tmp_path):
    """FROM a private registry's image missing locally: pulled with X-Registry-Config; ADD of a URL.

    Creates: a registry with basic auth on 127.0.0.1 and an HTTP server on 127.0.0.1.
    """
    from engine.testing import registry as local_registry

    if not local_registry.available():
        pytest.skip("docker-registry (distribution) is not installed")
    docker = loaded
    reg = local_registry.LocalRegistry(str(tmp_path / "registry"), users={"alice": "s3cret"}).start()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"added\n")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        docker("login", "-u", "alice", "--password-stdin", reg.host, input=b"s3cret")
        target = f"{reg.host}/team/base:1"
        docker("tag", "busybox", target)
        docker("push", target)
        docker("rmi", target)
        url = f"http://127.0.0.1:{server.server_port}/file.txt"
        dockerfile = f"FROM {target}\nADD {url} /from-url/\n".encode()
        ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
        out = docker("build", "-t", "pulled", ctx).stdout.decode()
        assert "Successfully tagged pulled:latest" in out
        assert docker("run", "--rm", "pulled", "cat", "/from-url/file.txt").stdout == b"added\n"
        mode = docker("run", "--rm", "pulled", "stat", "-c", "%a", "/from-url/file.txt").stdout
        assert mode == b"600\n"
        # Without credentials the pull is refused, in the stream.
        docker("rmi", target)
        status, body = api(daemon, "POST", "/v1.41/build?pull=1", make_context({"Dockerfile": dockerfile}))
        assert status == 200 and "error" in lines(body)[-1]
    finally:
        server.shutdown()
        server.server_close()
        reg.stop()
