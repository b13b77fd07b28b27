"""Dockerfile emulation for a machine without a container engine, shared by
hack/check-dockerfiles.py (which runs the result with chroot) and hack/images.py (which packs
it into OCI images), so that both see the same image.

A Dockerfile's build stage runs here as Docker would run it: a fresh /src holds only what its
COPY lines take from the build context (the tracked files, less .dockerignore), and its RUN
lines run there with `sh -c` and its ENV. Its runtime stage is then laid out as a root file
system (a distroless/static-like /etc and what its COPY --from=build lines take) with the
image configuration it declares.
"""

import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
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


def fail(message):
    print(f"{Path(sys.argv[0]).stem}: {message}", file=sys.stderr)
    sys.exit(1)


@dataclass
class Runtime:
    """An image laid out: its root file system and its configuration."""

    rootfs: Path
    entrypoint: list
    user: str
    labels: dict
    ports: list
    env: dict = field(default_factory=dict)


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
    """The files Docker would send: the work tree's files, tracked or new (less what git
    ignores), that .dockerignore does not exclude. New files count, as for Docker, so that
    uncommitted work builds."""
    ignored = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\0")
    return {
        path
        for path in files
        if path
        and (ROOT / path).is_file()
        and not any(
            fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/")
            for pattern in ignored
        )
    }


def context_files(source, context):
    """The build-context files that COPY `source` takes, sorted."""
    relative = source.rstrip("/")
    files = sorted(p for p in context if p == relative or p.startswith(relative + "/"))
    if not files:
        fail(f"COPY {source}: not in the build context")
    return relative, files


def copy(sources, workdir, destination, context):
    """Docker's COPY into `destination` (relative to `workdir`): a directory's contents go
    into it, a file into it when it ends with `/` (or there are several sources)."""
    into_directory = destination.endswith("/") or len(sources) > 1
    destination = workdir / destination
    for source in sources:
        relative, files = context_files(source, context)
        for path in files:
            if path == relative:
                target = destination / Path(path).name if into_directory else destination
            else:
                target = destination / Path(path).relative_to(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, target)


def stage_digest(build, context):
    """What Docker's layer cache keys a build stage on: its instructions and the content of
    every file its COPY lines take."""
    digest = hashlib.sha256()
    for keyword, argument in build:
        digest.update(f"{keyword} {argument}\n".encode())
        if keyword == "COPY":
            for source in shlex.split(argument)[:-1]:
                for path in context_files(source, context)[1]:
                    digest.update(f"{path}\n".encode() + (ROOT / path).read_bytes())
    return digest.hexdigest()


def run_build_stage(name, build, context):
    """Runs the build stage in WORK/name/stage (Docker's /); returns its WORKDIR. Like
    Docker's cache, a stage whose digest is unchanged since its last success is not run again:
    its second cargo build always recompiles the crate (the sources are touched)."""
    stage_root, stamp = WORK / name / "stage", WORK / name / "stage.sha256"
    workdirs = [argument for keyword, argument in build if keyword == "WORKDIR"]
    if len(workdirs) != 1:
        fail(f"{name}: the build stage needs exactly one WORKDIR (it holds the cargo target link)")
    workdir = stage_root / workdirs[0].lstrip("/")
    digest = stage_digest(build, context)
    if stamp.is_file() and stamp.read_text() == digest and workdir.is_dir():
        print(f"{name}: build stage unchanged, not run again", flush=True)
        return workdir
    stamp.unlink(missing_ok=True)
    shutil.rmtree(stage_root, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / "target").symlink_to(CARGO_TARGET, target_is_directory=True)
    CARGO_TARGET.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for keyword, argument in build[1:]:
        if keyword == "WORKDIR":
            continue  # made above, with its target link
        if keyword == "ENV":
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
    stamp.write_text(digest)
    return workdir


def lay_out_runtime(name, runtime, src, rootfs, build_args=None):
    """The runtime stage's root file system, made afresh at `rootfs`, and its configuration.
    ARG values (defaults, else `build_args`) are substituted in LABEL lines as Docker does.
    Container runtimes add /dev and its devices, so there are none here."""
    shutil.rmtree(rootfs, ignore_errors=True)
    (rootfs / "etc").mkdir(parents=True)
    for file, text in DISTROLESS_ETC.items():
        (rootfs / "etc" / file).write_text(text)
    (rootfs / "tmp").mkdir()
    (rootfs / "tmp").chmod(0o1777)
    entrypoint, user, labels, ports, args = None, None, {}, [], {}
    for keyword, argument in runtime:
        if keyword == "FROM":
            if "distroless/static" not in argument:
                fail(f"{name}: the runtime base {argument} is not distroless/static, which is laid out here")
        elif keyword == "ARG":
            key, _, default = argument.partition("=")
            args[key] = (build_args or {}).get(key, default)
        elif keyword == "LABEL":
            expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], ""), argument)
            labels.update(word.split("=", 1) for word in shlex.split(expanded))
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
        elif keyword == "EXPOSE":
            ports += [port if "/" in port else f"{port}/tcp" for port in argument.split()]
        elif keyword == "ENTRYPOINT":
            entrypoint = json.loads(argument)
        else:
            fail(f"{name}: runtime stage instruction {keyword} is not emulated here")
    if not user or not all(part.isdigit() and part != "0" for part in user.split(":")):
        fail(f"{name}: USER must be a numeric user other than root, not {user!r}")
    if not entrypoint:
        fail(f"{name}: no ENTRYPOINT in exec form")
    for label in ("title", "description", "version", "licenses"):
        if f"org.opencontainers.image.{label}" not in labels:
            fail(f"{name}: no OCI label org.opencontainers.image.{label}")
    return Runtime(rootfs, entrypoint, user, labels, ports)


def build_image(dockerfile, rootfs, context, build_args=None):
    """Runs `dockerfile`'s build stage and lays out its runtime stage at `rootfs`."""
    name = dockerfile.name.removeprefix("Dockerfile.")
    build, runtime = stages(dockerfile)
    src = run_build_stage(name, build, context)
    return lay_out_runtime(name, runtime, src, rootfs, build_args)
