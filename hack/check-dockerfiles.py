#!/usr/bin/env python3
"""Checks the Dockerfiles as far as a machine without a container engine allows.

For each Dockerfile, its build stage runs here as Docker would run it and its runtime stage
is laid out as a root file system (hack/dockerfile.py, which hack/images.py packs into the
images); this check adds the devices a container runtime adds and runs the entrypoint in it
with chroot, as its USER: a binary that needs a library, a shell or a missing file fails
here. The webapp image also serves a POST and a GET against the MongoDB-wire server
of MONGODB_URI, reached by a host name that only the image's /etc/hosts knows, so name
resolution without NSS libraries is covered.

Usage: hack/check-dockerfiles.py (as root, for chroot; MONGODB_URI set, as in .local/env)
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from dockerfile import ROOT, WORK, build_context, build_image, fail
from free_ports import free_ports

# The devices every container runtime gives a container (the OCI runtime spec's defaults that
# a server may open): name, major, minor. Only this check adds them: images must not hold them.
CONTAINER_DEVICES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9)]
# Name of the MongoDB-wire server inside the webapp's image; only its /etc/hosts knows it.
MONGO_HOST = "mongodb.image-check.internal"
# Size the files of an image may take, leaving room for the base image under 30 MB.
IMAGE_BUDGET_MB = 28


def add_devices(rootfs):
    (rootfs / "dev").mkdir()
    for device, major, minor in CONTAINER_DEVICES:
        os.mknod(rootfs / "dev" / device, stat.S_IFCHR | 0o666, os.makedev(major, minor))


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
    [port] = free_ports(1)
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
    context = build_context()
    for dockerfile, check in CHECKS.items():
        image = build_image(ROOT / dockerfile, WORK / dockerfile.removeprefix("Dockerfile.") / "image", context)
        rootfs, entrypoint, user = image.rootfs, image.entrypoint, image.user
        add_devices(rootfs)
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
