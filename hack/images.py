#!/usr/bin/env python3
"""Builds the project's container images as OCI archives with umoci, with no container
engine, and loads them into a containerd.

  hack/images.py build                   target/images/<name>.tar for each image below
  hack/images.py load --address SOCKET   imports them into containerd (namespace k8s.io)

  docker.io/flaskmongo/operator:<workspace version>     Dockerfile.operator's runtime stage
  docker.io/flaskmongo/webapp:<workspace version>       Dockerfile.webapp's runtime stage
  docker.io/flaskmongo/mongo-standin:<FERRETDB_VERSION>  FerretDB (SQLite) in place of mongo
  docker.io/flaskmongo/pause:<KUBERNETES_VERSION>        Kubernetes' pause: the pod sandbox

The Dockerfiles' images are laid out by hack/dockerfile.py, as hack/check-dockerfiles.py
checks them. Each archive is an OCI layout whose index names its image by the full
reference, which `ctr images import` takes as is. An archive is packed again only when its
files or configuration changed, and file and image times are the epoch, so the same input
gives the same digest. Needs root (file owners), umoci, gcc with a static libc, go, and
hack/tools.sh ferretdb.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import tomllib
from dataclasses import asdict
from pathlib import Path

from dockerfile import DISTROLESS_ETC, ROOT, Runtime, build_context, build_image, fail

OUT = ROOT / "target" / "images"
WORK = OUT / "work"
REGISTRY = "docker.io/flaskmongo"
EPOCH = "1970-01-01T00:00:00Z"
# The official mongo image's mongodb user, which the stand-in runs as.
MONGODB_UID = 999
# FerretDB's flags as its environment variables (kong names them FERRETDB_<FLAG>): the SQLite
# backend with its files and FerretDB's state.json in the claim's mount point, every address,
# no telemetry. It logs to stderr only, which the container log collects as well.
FERRETDB_ENV = {
    "FERRETDB_HANDLER": "sqlite",
    "FERRETDB_SQLITE_URL": "file:/data/db/",
    "FERRETDB_STATE_DIR": "/data/db",
    "FERRETDB_LISTEN_ADDR": "0.0.0.0:27017",
    "FERRETDB_TELEMETRY": "disable",
}


def pins():
    """TOOLS_DIR, FERRETDB_VERSION and KUBERNETES_VERSION as hack/versions.env sets them."""
    script = 'source hack/versions.env && printf "%s\\n" "$TOOLS_DIR" "$FERRETDB_VERSION" "$KUBERNETES_VERSION"'
    values = subprocess.run(["bash", "-c", script], cwd=ROOT, check=True, capture_output=True,
                            text=True)
    tools_dir, ferretdb, kubernetes = values.stdout.split("\n")[:3]
    return Path(tools_dir), ferretdb, kubernetes


def labels(title, description, version):
    return {
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.description": description,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }


def fresh(directory):
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def mongo_standin(tools_dir, version):
    """FerretDB as the official mongo image's mongodb user, as the operator runs MongoDB, with
    a distroless-like /etc that has that user."""
    binary = tools_dir / f"ferretdb-{version}" / "ferretdb"
    if not binary.is_file():
        fail(f"no {binary}: run hack/tools.sh ferretdb")
    rootfs = fresh(WORK / "mongo-standin" / "rootfs")
    (rootfs / "etc").mkdir()
    extra = {"passwd": f"mongodb:x:{MONGODB_UID}:{MONGODB_UID}:mongodb:/data/db:/sbin/nologin\n",
             "group": f"mongodb:x:{MONGODB_UID}:\n"}
    for file, text in DISTROLESS_ETC.items():
        (rootfs / "etc" / file).write_text(text + extra.get(file, ""))
    (rootfs / "tmp").mkdir()
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "data/db").mkdir(parents=True)
    os.chown(rootfs / "data/db", MONGODB_UID, MONGODB_UID)
    (rootfs / "usr/local/bin").mkdir(parents=True)
    shutil.copy(binary, rootfs / "usr/local/bin/ferretdb")
    description = (f"Stand-in for the mongo image, not MongoDB: FerretDB {version} (MongoDB wire "
                   "protocol) with its SQLite backend, data in /data/db")
    return Runtime(rootfs, ["/usr/local/bin/ferretdb"], f"{MONGODB_UID}:{MONGODB_UID}",
                   labels("flaskmongo-mongo-standin", description, version), ["27017/tcp"], FERRETDB_ENV)


def pause(version):
    """Kubernetes' own pause, built as its build/pause/Makefile does (-Os -static, stripped),
    on nothing else, as USER 65535 like registry.k8s.io/pause."""
    # From an empty directory, so that no go.mod around takes part: this only downloads.
    with tempfile.TemporaryDirectory() as empty:
        download = subprocess.run(
            ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"], cwd=empty,
            env={**os.environ, "GOFLAGS": "-mod=mod"}, check=True, capture_output=True, text=True)
    source = Path(json.loads(download.stdout)["Dir"]) / "build" / "pause"
    tag = re.search(r"^TAG \?= (\S+)", (source / "Makefile").read_text(), re.M)[1]
    rootfs = fresh(WORK / "pause" / "rootfs")
    subprocess.run(["gcc", "-Os", "-Wall", "-Werror", "-static", "-s", f"-DVERSION=v{tag}-{version}",
                    "-o", rootfs / "pause", source / "linux" / "pause.c"], check=True)
    description = f"The pod sandbox: pause {tag} of Kubernetes {version} (build/pause/linux/pause.c)"
    return Runtime(rootfs, ["/pause"], "65535:65535", labels("flaskmongo-pause", description, version), [])


def images():
    """(name, reference, laid-out image) of every image."""
    tools_dir, ferretdb, kubernetes = pins()
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    context = build_context()
    for app in ("operator", "webapp"):
        runtime = build_image(ROOT / f"Dockerfile.{app}", WORK / app / "rootfs", context,
                              {"VERSION": version})
        yield app, f"{REGISTRY}/{app}:{version}", runtime
    yield "mongo-standin", f"{REGISTRY}/mongo-standin:{ferretdb}", mongo_standin(tools_dir, ferretdb)
    yield "pause", f"{REGISTRY}/pause:{kubernetes}", pause(kubernetes)


def input_digest(reference, runtime):
    """The digest of what an image is made of: its configuration and every file (path, mode,
    owner, content)."""
    configuration = json.dumps([reference, asdict(runtime)], sort_keys=True, default=str)
    digest = hashlib.sha256(configuration.encode())
    for path in sorted(runtime.rootfs.rglob("*")):
        info = path.lstat()
        relative = path.relative_to(runtime.rootfs)
        digest.update(f"{relative} {info.st_mode:o} {info.st_uid}:{info.st_gid}\n".encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def umoci(*args):
    subprocess.run(["umoci", *map(str, args)], check=True)


def install_umoci():
    """Installs Debian's umoci when it is missing, as the real node's packages are."""
    if shutil.which("umoci"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        fail("umoci is missing: install it (apt-get install -y umoci)")
    print("installing umoci from Debian", flush=True)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
    subprocess.run(["apt-get", "install", "-y", "-qq", "umoci"], check=True, env=environment)


def pack(name, reference, runtime):
    """Packs `runtime` into OUT/name.tar as one layer; returns whether it had to."""
    for path in [runtime.rootfs, *runtime.rootfs.rglob("*")]:
        os.utime(path, (0, 0), follow_symlinks=False)
    archive, stamp = OUT / f"{name}.tar", WORK / name / "image.sha256"
    digest = input_digest(reference, runtime)
    if archive.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return False
    stamp.unlink(missing_ok=True)
    layout = WORK / name / "oci"
    shutil.rmtree(layout, ignore_errors=True)
    image = f"{layout}:{reference}"
    umoci("init", "--layout", layout)
    umoci("new", "--image", image)
    umoci("insert", "--image", image, "--history.created", EPOCH,
          "--history.created_by", f"hack/images.py: the files of {name}", runtime.rootfs, "/")
    config = [f"--config.entrypoint={word}" for word in runtime.entrypoint]
    config += [f"--config.user={runtime.user}"]
    config += [f"--config.exposedports={port}" for port in runtime.ports]
    config += [f"--config.env={key}={value}" for key, value in runtime.env.items()]
    config += [f"--config.label={key}={value}" for key, value in runtime.labels.items()]
    umoci("config", "--image", image, "--no-history", "--created", EPOCH, *config)
    umoci("gc", "--layout", layout)
    partial = archive.with_suffix(".tar.partial")
    subprocess.run(["tar", "--sort=name", "--numeric-owner", "--owner=0", "--group=0", "--mtime=@0",
                    "-C", layout, "-cf", partial, "oci-layout", "index.json", "blobs"], check=True)
    partial.rename(archive)
    stamp.write_text(digest)
    return True


def build():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, reference, runtime in images():
        packed = pack(name, reference, runtime)
        files = [p for p in runtime.rootfs.rglob("*") if p.is_file() and not p.is_symlink()]
        unpacked = sum(p.stat().st_size for p in files)
        archive = OUT / f"{name}.tar"
        print(f"{reference}: archive {archive.stat().st_size / 1e6:.1f} MB, "
              f"unpacked {unpacked / 1e6:.1f} MB, {archive.relative_to(ROOT)} "
              f"({'packed' if packed else 'unchanged'})", flush=True)


def references(archive):
    """The image references that an archive's index names."""
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
    return [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]


def load(address, namespace):
    ctr = ["ctr", "--address", address, "--namespace", namespace]
    archives = sorted(OUT.glob("*.tar"))
    if not archives:
        fail(f"no archives in {OUT}: run hack/images.py build (make images)")
    expected = []
    for archive in archives:
        subprocess.run([*ctr, "images", "import", archive], check=True)
        expected += references(archive)
    listing = subprocess.run([*ctr, "images", "ls", "-q"], check=True, capture_output=True, text=True)
    present = listing.stdout.split()
    missing = sorted(set(expected) - set(present))
    if missing:
        fail(f"not in containerd after the import: {', '.join(missing)}")
    print(f"in containerd {address}, namespace {namespace}: {', '.join(expected)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the archives in target/images/")
    loading = commands.add_parser("load", help="import the archives into a containerd")
    loading.add_argument("--address", required=True, help="containerd's socket")
    loading.add_argument("--namespace", default="k8s.io", help="containerd namespace (the CRI's: k8s.io)")
    arguments = parser.parse_args()
    if arguments.command == "build":
        install_umoci()
        build()
    else:
        load(arguments.address, arguments.namespace)


if __name__ == "__main__":
    main()
