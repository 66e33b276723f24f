"""The image jobs (seed ch. 4 §4.4.7 ``TagStore.Install``): list, inspect,
history, tag, delete, load, save, import and prune. Each writes the API's
answer to its stdout."""

from __future__ import annotations

import fnmatch
import re
import time
from typing import Any

from engine import apiversion
from engine import reference as refs
from engine.errors import Conflict, EngineError, InvalidParameter
from engine.graph.graph import Graph
from engine.graph.images import Image
from engine.hookspecs import hookimpl
from engine.utils.progress import Progress
from engine.utils.timefmt import parse_rfc3339

LIST_FILTERS = {"dangling", "label", "before", "since", "reference"}
PRUNE_FILTERS = {"dangling", "until", "label", "label!"}


def graph_of(job: Any) -> Graph:
    return job.engine.daemon.graph


def _bool_filter(values: list[str], name: str) -> bool:
    if len(values) != 1 or values[0].lower() not in ("true", "false", "1", "0"):
        raise InvalidParameter(f"Invalid filter '{name}={','.join(values)}'")
    return values[0].lower() in ("true", "1")


def _check_filters(filters: dict[str, list[str]], allowed: set[str]) -> None:
    for key in filters:
        if key not in allowed:
            raise InvalidParameter(f"Invalid filter '{key}'")


def _labels_match(image: Image, wanted: list[str], negate: bool = False) -> bool:
    labels = image.container_config.get("Labels") or {}
    for item in wanted:
        key, sep, value = item.partition("=")
        ok = key in labels and (not sep or labels[key] == value)
        if ok == negate:
            return False
    return True


def _matching_references(graph: Graph, image: Image, patterns: list[str]) -> list[Any]:
    """The references of ``image`` that a ``reference`` filter's patterns match (distribution's
    ``FamiliarMatch``: the familiar ``name:tag`` form, else the name alone)."""
    return [
        ref
        for ref in graph.tags.references(image.id)
        if any(
            fnmatch.fnmatchcase(ref.familiar(), pattern) or fnmatch.fnmatchcase(ref.familiar_name, pattern)
            for pattern in patterns
        )
    ]


def list_images(graph: Graph, filters: dict[str, list[str]], all_images: bool = False) -> list[dict]:
    """``GET /images/json`` (moby ``ImageService.Images``)."""
    _check_filters(filters, LIST_FILTERS)
    dangling = _bool_filter(filters["dangling"], "dangling") if "dangling" in filters else None
    before = min((graph.lookup(n).created for n in filters.get("before", [])), default=None)
    since = max((graph.lookup(n).created for n in filters.get("since", [])), default=None)
    images = list(graph)
    if not all_images and dangling is None:
        # Intermediate images (parents of others, without tags) are hidden.
        parents = {img.parent for img in images if img.parent}
        images = [img for img in images if img.id not in parents or graph.tags.references(img.id)]
    out = []
    for image in images:
        if before is not None and image.created >= before:
            continue
        if since is not None and image.created <= since:
            continue
        if "label" in filters and not _labels_match(image, filters["label"]):
            continue
        tagged = bool(graph.tags.repo_tags(image.id))
        if dangling is True and tagged:
            continue
        if dangling is False and not tagged:
            continue
        summary = graph.summary(image)
        if "reference" in filters:
            # moby lists only the tags and digests that match, so `docker images busybox` shows no
            # other name of the same image; an image none of whose names match is left out.
            refs = _matching_references(graph, image, filters["reference"])
            if not refs:
                continue
            summary["RepoTags"] = [ref.familiar() for ref in refs if ref.tag is not None]
            summary["RepoDigests"] = [ref.familiar() for ref in refs if ref.digest is not None]
        out.append(summary)
    out.sort(key=lambda s: s["Created"], reverse=True)
    return out


def parse_until(value: str, now: float | None = None) -> float:
    """A timestamp (unix seconds, RFC 3339) or a Go duration ago (``10m``, ``1h30m``)."""
    now = time.time() if now is None else now
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text)
    if parts and "".join(a + b for a, b in parts) == text:
        return now - sum(float(a) * units[b] for a, b in parts)
    ts = parse_rfc3339(text if "T" in text else text + "T00:00:00Z")
    if ts:
        return ts
    raise InvalidParameter(f"invalid value for until: {value!r}")


def prune_images(graph: Graph, filters: dict[str, list[str]]) -> dict:
    """``POST /images/prune`` (moby ``ImagesPrune``)."""
    _check_filters(filters, PRUNE_FILTERS)
    dangling_only = _bool_filter(filters["dangling"], "dangling") if "dangling" in filters else True
    until = min((parse_until(v) for v in filters.get("until", [])), default=None)
    deleted: list[dict] = []
    reclaimed = 0
    for image in list(graph):
        if not graph.images.exists(image.id):
            continue
        if dangling_only and graph.tags.references(image.id):
            continue
        if graph.container_users(image.id) or graph.images.children(image.id):
            continue
        if until is not None and image.created >= until:
            continue
        if "label" in filters and not _labels_match(image, filters["label"]):
            continue
        if "label!" in filters and not _labels_match(image, filters["label!"], negate=True):
            continue
        sizes = {layer.chain_id: layer.size for layer in graph.layers.all()}
        try:
            records = graph.delete(image.id, force=False, prune=True)
        except Conflict:  # a container or a tag appeared meanwhile: keep it
            continue
        deleted.extend(records)
        reclaimed += sum(sizes.get(r["Deleted"], 0) for r in records if "Deleted" in r)
    return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}


# job handlers
def shared_sizes(graph: Graph) -> dict[str, int]:
    """Each image's ``SharedSize``: the bytes of its layers that another image uses too."""
    users: dict[str, int] = {}
    images = list(graph)
    for image in images:
        for chain in set(image.chain_ids):
            users[chain] = users.get(chain, 0) + 1
    sizes: dict[str, int] = {}
    for image in images:
        total = 0
        for chain in set(image.chain_ids):
            if users[chain] > 1 and graph.layers.exists(chain):
                total += graph.layers.get(chain).size
        sizes[image.id] = total
    return sizes


def job_images(job: Any) -> None:
    version = apiversion.of_job(job)
    graph = graph_of(job)
    images = list_images(graph, job.env.get_json("Filters", {}) or {}, job.env.get_bool("All"))
    if job.env.get_bool("SharedSize") and apiversion.at_least(version, "1.42"):
        shared = shared_sizes(graph)  # ?shared-size=1, API 1.42
        for doc in images:
            doc["SharedSize"] = shared.get(doc["Id"], 0)
    job.write_json([apiversion.image_summary(version, doc) for doc in images])


def job_image_inspect(job: Any) -> None:
    graph = graph_of(job)
    job.write_json(apiversion.image_json(apiversion.of_job(job), graph.inspect(graph.lookup(job.args[0]))))


def job_image_history(job: Any) -> None:
    graph = graph_of(job)
    job.write_json(graph.history(graph.lookup(job.args[0])))


def job_tag(job: Any) -> None:
    graph_of(job).tag(job.args[0], job.env.get("Repo"), job.env.get("Tag") or None)


def job_image_delete(job: Any) -> None:
    records = graph_of(job).delete(job.args[0], force=job.env.get_bool("Force"), prune=not job.env.get_bool("NoPrune"))
    job.write_json(records)


def job_load(job: Any) -> None:
    from engine.graph.load import load

    progress = Progress(job.stdout.write)
    # dockerd answers 200 at once and reports a failure in the stream (docker-py raises
    # ImageLoadError from it, the CLI prints it): a truncated archive is no HTTP error.
    job.stdout.write(b"")
    try:
        load(graph_of(job), job.stdin, progress, quiet=job.env.get_bool("Quiet"))
    except EngineError as exc:
        progress.error(str(exc))
    except OSError as exc:  # the host's (a full disk): in the stream too, as dockerd's "write ...: <reason>"
        where = f"write {exc.filename}: " if exc.filename else ""
        progress.error(f"{where}{(exc.strerror or str(exc)).lower()}")


def job_image_export(job: Any) -> None:
    from engine.graph.save import save

    for chunk in save(graph_of(job), job.args):
        if job.stdout.closed:
            return
        job.stdout.write(chunk)


def job_import(job: Any) -> None:
    from engine.graph.imports import import_rootfs, tag_after_import

    graph = graph_of(job)
    repo, tag = job.env.get("Repo"), job.env.get("Tag")
    if repo:
        refs.parse(repo)  # a bad name is refused before reading the body
    source = job.env.get("Source") or "-"
    stream = job.stdin
    if source != "-":
        stream = _download(source, Progress(job.stdout.write))
    image = import_rootfs(graph, stream, job.env.get_list("Changes"), job.env.get("Message"), source)
    tag_after_import(graph, image, repo, tag)
    job.write_json({"status": image.id})


def _download(url: str, progress: Progress) -> Any:
    import requests

    if not url.startswith(("http://", "https://")):
        raise InvalidParameter(f"fromSrc must be '-' or an http(s) URL, not {url!r}")
    try:
        resp = requests.get(url, stream=True, timeout=60)
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise InvalidParameter(f"Get {url}: {exc}") from None
    progress.status(f"Downloading from {url}")
    resp.raw.decode_content = True
    return resp.raw


def job_image_prune(job: Any) -> None:
    job.write_json(prune_images(graph_of(job), job.env.get_json("Filters", {}) or {}))


@hookimpl
def engine_register_jobs(engine: Any, daemon: Any) -> None:
    if daemon is None:
        return
    for name, handler in (
        ("images", job_images),
        ("image_inspect", job_image_inspect),
        ("image_history", job_image_history),
        ("tag", job_tag),
        ("image_delete", job_image_delete),
        ("load", job_load),
        ("image_export", job_image_export),
        ("import", job_import),
        ("image_prune", job_image_prune),
    ):
        engine.register(name, handler)
