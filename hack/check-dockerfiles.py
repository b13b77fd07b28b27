#!/usr/bin/env python3
"""Checks the Dockerfiles as far as a machine without a container engine allows.

For each Dockerfile, its build stage runs here as Docker would run it: a fresh /src holds
only what its COPY lines take from the build context (the tracked files, less
.dockerignore), and its RUN lines run there with `sh -c` and its ENV. Its runtime stage is
then laid out as a root file system (a distroless/static-like /etc, what its COPY
--from=build lines take and the devices a container runtime adds) and its entrypoint runs
in it with chroot, as its USER: a binary that needs a library, a shell or a missing file
fails here. The webapp image also serves a POST and a GET against the MongoDB-wire server
of MONGODB_URI, reached by a host name that only the image's /etc/hosts knows, so name
resolution without NSS libraries is covered.

Usage: hack/check-dockerfiles.py (as root, for chroot; MONGODB_URI set, as in .local/env)
"""

import fnmatch
import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "dockerfile-check"
# Shared by both Dockerfiles and kept between runs, so dependencies build once.
CARGO_TARGET = WORK / "cargo-target"
# The runtime images' /etc, as distroless/static-debian12 has it.
DISTROLESS_ETC = {
    "passwd": "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    "group": "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n",
    "nsswitch.conf": "hosts: files dns\n",
}
# The devices every container runtime gives a container (the OCI runtime spec's defaults that
# a server may open): name, major, minor.
CONTAINER_DEVICES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9)]
# Name of the MongoDB-wire server inside the webapp's image; only its /etc/hosts knows it.
MONGO_HOST = "mongodb.image-check.internal"
# Size the files of an image may take, leaving room for the base image under 30 MB.
IMAGE_BUDGET_MB = 28


def fail(message):
    print(f"check-dockerfiles: {message}", file=sys.stderr)
    sys.exit(1)


def instructions(dockerfile):
    """The instructions of `dockerfile` as (keyword, argument) pairs, continuations joined."""
    result, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, argument = (pending + line).strip().partition(" ")
        result.append((keyword.upper(), argument.strip()))
        pending = ""
    return result


def stages(dockerfile):
    """The build stage and the runtime stage: lists of instructions after each FROM."""
    build, runtime, current = [], [], None
    for keyword, argument in instructions(dockerfile):
        if keyword == "FROM":
            current = build if argument.lower().endswith(" as build") else runtime
            current.append((keyword, argument))
        elif current is None:
            fail(f"{dockerfile.name}: {keyword} before the first FROM")
        else:
            current.append((keyword, argument))
    if not build or not runtime:
        fail(f"{dockerfile.name}: expected a stage `AS build` and a runtime stage")
    return build, runtime


def build_context():
    """The files Docker would send: tracked files that .dockerignore does not exclude."""
    ignored = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    return {
        path
        for path in tracked
        if path
        and not any(
            fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/")
            for pattern in ignored
        )
    }


def copy(sources, workdir, destination, context):
    """Docker's COPY into `destination` (relative to `workdir`): a directory's contents go
    into it, a file into it when it ends with `/` (or there are several sources)."""
    into_directory = destination.endswith("/") or len(sources) > 1
    destination = workdir / destination
    for source in sources:
        relative = source.rstrip("/")
        files = [p for p in context if p == relative or p.startswith(relative + "/")]
        if not files:
            fail(f"COPY {source}: not in the build context")
        for path in files:
            if path == relative:
                target = destination / Path(path).name if into_directory else destination
            else:
                target = destination / Path(path).relative_to(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, target)


def run_build_stage(name, build, context):
    """Runs the build stage in WORK/name/src; returns that directory (Docker's /src)."""
    stage_root = WORK / name
    shutil.rmtree(stage_root, ignore_errors=True)
    env = dict(os.environ)
    workdir = None
    for keyword, argument in build[1:]:
        if keyword == "WORKDIR":
            workdir = stage_root / argument.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "target").symlink_to(CARGO_TARGET, target_is_directory=True)
        elif keyword == "ENV":
            key, _, value = argument.partition("=")
            env[key] = shlex.split(value)[0]
        elif keyword == "COPY":
            *sources, destination = shlex.split(argument)
            copy(sources, workdir, destination, context)
        elif keyword == "RUN":
            print(f"{name}: RUN {argument[:100]}{'…' if len(argument) > 100 else ''}", flush=True)
            subprocess.run(["sh", "-c", argument], cwd=workdir, env=env, check=True)
        else:
            fail(f"{name}: build stage instruction {keyword} is not emulated here")
    return workdir


def lay_out_runtime(name, runtime, src):
    """The runtime stage's root file system; returns it with the entrypoint and user."""
    rootfs = WORK / name / "image"
    for file, text in DISTROLESS_ETC.items():
        (rootfs / "etc").mkdir(parents=True, exist_ok=True)
        (rootfs / "etc" / file).write_text(text)
    (rootfs / "tmp").mkdir()
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "dev").mkdir()
    for device, major, minor in CONTAINER_DEVICES:
        os.mknod(rootfs / "dev" / device, stat.S_IFCHR | 0o666, os.makedev(major, minor))
    entrypoint, user, labels = None, None, ""
    for keyword, argument in runtime:
        if keyword == "FROM" and "distroless/static" not in argument:
            fail(f"{name}: the runtime base {argument} is not distroless/static, which this check lays out")
        elif keyword == "COPY":
            words = shlex.split(argument)
            if words[0] != "--from=build":
                fail(f"{name}: a runtime COPY takes only from the build stage: {argument}")
            source, destination = words[1:]
            if not source.startswith("/src/"):
                fail(f"{name}: COPY --from=build of {source}, outside the build's /src")
            target = rootfs / destination.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / source.removeprefix("/src/"), target)
        elif keyword == "USER":
            user = argument
        elif keyword == "ENTRYPOINT":
            entrypoint = json.loads(argument)
        elif keyword == "LABEL":
            labels += argument
    if not user or not all(part.isdigit() and part != "0" for part in user.split(":")):
        fail(f"{name}: USER must be a numeric user other than root, not {user!r}")
    if not entrypoint:
        fail(f"{name}: no ENTRYPOINT in exec form")
    for label in ("title", "description", "version", "licenses"):
        if f"org.opencontainers.image.{label}=" not in labels:
            fail(f"{name}: no OCI label org.opencontainers.image.{label}")
    return rootfs, entrypoint, user


def in_image(rootfs, user, command):
    """`command` run inside the image's file system as its user."""
    # The command runs with the image's empty environment, so chroot is named by its path.
    return [shutil.which("chroot"), f"--userspec={user}", str(rootfs), *command]


def run_in_image(rootfs, user, command):
    """Runs `command` in the image with an empty environment, as a container starts."""
    return subprocess.run(
        in_image(rootfs, user, command), capture_output=True, text=True, env={}, timeout=60
    )


def size_mb(rootfs):
    total = sum(p.stat().st_size for p in rootfs.rglob("*") if p.is_file())
    return total / 1e6


def check_operator(rootfs, entrypoint, user):
    result = run_in_image(rootfs, user, [*entrypoint, "crd"])
    if result.returncode != 0:
        fail(f"operator image: `operator crd` failed: {result.stderr.strip()}")
    expected = (ROOT / "config/crd/flaskmongo.dev_flaskmongoapps.yaml").read_text()
    if result.stdout != expected:
        fail("operator image: `operator crd` differs from config/crd/flaskmongo.dev_flaskmongoapps.yaml")
    print("operator image: `operator crd` prints config/crd's CRD")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None):
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def check_webapp(rootfs, entrypoint, user):
    uri = os.environ.get("MONGODB_URI")
    if not uri:
        fail("MONGODB_URI is not set: start a local stack (make local-up) and source .local/env")
    server = urllib.parse.urlsplit(uri)
    database = f"image_check_{os.getpid()}"
    if not server.hostname.replace(".", "").isdigit():
        fail(f"MONGODB_URI must name its server by IP address, not {server.hostname}")
    (rootfs / "etc/hosts").write_text(f"127.0.0.1 localhost\n{server.hostname} {MONGO_HOST}\n")
    port = free_port()
    env = {
        "MONGODB_URI": f"mongodb://{MONGO_HOST}:{server.port}/{database}",
        "LISTEN_ADDRESS": "127.0.0.1",
        "PORT": str(port),
    }
    process = subprocess.Popen(in_image(rootfs, user, entrypoint), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http("GET", f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                fail(f"webapp image: not ready within 30 s at {base}")
            time.sleep(0.2)
        status, body = http("POST", f"{base}/data", json.dumps({"image": "check"}).encode())
        if status != 201:
            fail(f"webapp image: POST /data answered {status}: {body}")
        status, body = http("GET", f"{base}/data")
        if status != 200 or json.loads(body) != [{"image": "check"}]:
            fail(f"webapp image: GET /data answered {status}: {body}")
        print(f"webapp image: ready, POST and GET /data through {MONGO_HOST} (its /etc/hosts)")
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        if process.returncode not in (0, -15):
            print(output[-2000:], file=sys.stderr)


CHECKS = {"Dockerfile.operator": check_operator, "Dockerfile.webapp": check_webapp}


def main():
    if os.geteuid() != 0:
        fail("chroot needs root: run as root (CI does)")
    if not shutil.which("chroot"):
        fail("no chroot: apt-get install -y coreutils")
    CARGO_TARGET.mkdir(parents=True, exist_ok=True)
    context = build_context()
    for dockerfile, check in CHECKS.items():
        name = dockerfile.removeprefix("Dockerfile.")
        build, runtime = stages(ROOT / dockerfile)
        src = run_build_stage(name, build, context)
        rootfs, entrypoint, user = lay_out_runtime(name, runtime, src)
        help_result = run_in_image(rootfs, user, [*entrypoint, "--help"])
        if help_result.returncode != 0:
            fail(f"{dockerfile}: `{' '.join(entrypoint)} --help` failed in the image: "
                 f"{help_result.stderr.strip()}")
        check(rootfs, entrypoint, user)
        size = size_mb(rootfs)
        print(f"{dockerfile}: the image's own files take {size:.1f} MB (budget {IMAGE_BUDGET_MB} MB); "
              "the distroless/static base adds its own, not measurable here")
        if size > IMAGE_BUDGET_MB:
            fail(f"{dockerfile}: {size:.1f} MB of files leave no room under 30 MB")


if __name__ == "__main__":
    main()
