#!/usr/bin/env python3
"""Render a kustomization the way `kustomize build` does, for the subset of
kustomize that deploy/kubernetes uses, so CI can render the manifests with
PyYAML alone (no kustomize binary is installable from the registries CI
reaches).

Supported kustomization fields: resources (files and directories),
namespace, labels (includeSelectors: false), images, and patches that are
JSON 6902 operation lists (inline or from a file) with a target by
group/version/kind/name. Any other field, or an unsupported option, is an
error, so the manifests cannot silently outgrow this renderer.

    python3 deploy/render.py DIR                  # YAML stream on stdout
    python3 deploy/render.py DIR --out FILE
    python3 deploy/render.py DIR --compare FILE   # same objects as FILE?

`--compare` checks the result against another renderer's output (e.g.
`kubectl kustomize DIR`), object by object, ignoring order.
"""

import argparse
import copy
import os
import sys

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
# Kinds that live outside any namespace (the ones a namespace field skips).
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
# Where the images transformer looks for containers.
POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


class RenderError(Exception):
    pass


def load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def find_kustomization(directory):
    for name in KUSTOMIZATION_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise RenderError(f"{directory}: no kustomization.yaml")


def build(directory):
    """The resources of the kustomization in `directory`, transformed."""
    kpath = find_kustomization(directory)
    docs = load_yaml_docs(kpath)
    if len(docs) != 1:
        raise RenderError(f"{kpath}: expected one document")
    k = docs[0]
    unknown = set(k) - SUPPORTED_FIELDS
    if unknown:
        raise RenderError(f"{kpath}: unsupported fields {sorted(unknown)}")

    objects = []
    for entry in k.get("resources", []):
        path = os.path.normpath(os.path.join(directory, entry))
        if os.path.isdir(path):
            objects.extend(build(path))
        elif os.path.isfile(path):
            objects.extend(load_yaml_docs(path))
        else:
            raise RenderError(f"{kpath}: resource {entry} not found")
    check_unique(objects, kpath)

    # The order kustomize applies its built-in transformers in.
    for patch in k.get("patches", []):
        apply_patch(objects, patch, directory, kpath)
    if "namespace" in k:
        set_namespace(objects, k["namespace"])
    for spec in k.get("labels", []):
        add_labels(objects, spec, kpath)
    for image in k.get("images", []):
        set_image(objects, image, kpath)
    return objects


def object_id(obj):
    meta = obj.get("metadata", {})
    return (obj.get("apiVersion"), obj.get("kind"), meta.get("namespace"), meta.get("name"))


def check_unique(objects, where):
    seen = set()
    for obj in objects:
        oid = object_id(obj)
        if oid in seen:
            raise RenderError(f"{where}: duplicate resource {oid}")
        seen.add(oid)


def set_namespace(objects, namespace):
    for obj in objects:
        if obj.get("kind") not in CLUSTER_SCOPED:
            obj.setdefault("metadata", {})["namespace"] = namespace


def add_labels(objects, spec, kpath):
    extra = set(spec) - {"pairs", "includeSelectors", "includeTemplates"}
    if extra or spec.get("includeSelectors") or spec.get("includeTemplates"):
        raise RenderError(f"{kpath}: labels supports only pairs with includeSelectors: false")
    for obj in objects:
        labels = obj.setdefault("metadata", {}).setdefault("labels", {})
        labels.update({str(k): str(v) for k, v in spec.get("pairs", {}).items()})


def set_image(objects, spec, kpath):
    extra = set(spec) - {"name", "newName", "newTag", "digest"}
    if extra or "name" not in spec:
        raise RenderError(f"{kpath}: images entries take name, newName, newTag, digest")
    for obj in objects:
        path = POD_SPEC_PATHS.get(obj.get("kind"))
        if path is None:
            continue
        pod = obj
        for key in path:
            pod = pod.get(key) if isinstance(pod, dict) else None
        if not isinstance(pod, dict):
            continue
        for group in ("initContainers", "containers"):
            for container in pod.get(group, []):
                container["image"] = rewrite_image(container.get("image", ""), spec)


def rewrite_image(image, spec):
    name, tag, digest = split_image(image)
    if name != spec["name"]:
        return image
    name = spec.get("newName", name)
    if "digest" in spec:
        return f"{name}@{spec['digest']}"
    if "newTag" in spec:
        return f"{name}:{spec['newTag']}"
    if digest:
        return f"{name}@{digest}"
    return f"{name}:{tag}" if tag else name


def split_image(image):
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image, tag = image.rsplit(":", 1)
    return image, tag, digest


def apply_patch(objects, patch, directory, kpath):
    extra = set(patch) - {"target", "patch", "path"}
    if extra:
        raise RenderError(f"{kpath}: patches support target, patch, path; not {sorted(extra)}")
    target = patch.get("target")
    if not target:
        raise RenderError(f"{kpath}: only targeted JSON 6902 patches are supported")
    t_extra = set(target) - {"group", "version", "kind", "name", "namespace"}
    if t_extra:
        raise RenderError(f"{kpath}: patch targets support group/version/kind/name/namespace")
    if "path" in patch:
        with open(os.path.join(directory, patch["path"]), encoding="utf-8") as f:
            text = f.read()
    else:
        text = patch.get("patch", "")
    ops = yaml.safe_load(text)
    if not isinstance(ops, list):
        raise RenderError(f"{kpath}: only JSON 6902 patches (a list of operations) are supported")
    matched = [o for o in objects if target_matches(o, target)]
    if not matched:
        raise RenderError(f"{kpath}: patch target {target} matches no resource")
    for obj in matched:
        for op in ops:
            json_patch_op(obj, op, kpath)


def target_matches(obj, target):
    api = obj.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    meta = obj.get("metadata", {})
    checks = {
        "group": group,
        "version": version,
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
    }
    return all(checks[k] == v for k, v in target.items())


def parse_pointer(pointer, kpath):
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise RenderError(f"{kpath}: bad JSON pointer {pointer!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def resolve(doc, parts, pointer, kpath):
    node = doc
    for part in parts:
        if isinstance(node, list):
            node = node[list_index(node, part, pointer, kpath, allow_end=False)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise RenderError(f"{kpath}: path {pointer} does not exist")
    return node


def list_index(node, part, pointer, kpath, allow_end):
    if part == "-" and allow_end:
        return len(node)
    if not part.isdigit():
        raise RenderError(f"{kpath}: {pointer}: {part!r} is not a list index")
    i = int(part)
    if i > len(node) or (i == len(node) and not allow_end):
        raise RenderError(f"{kpath}: {pointer}: index {i} out of range")
    return i


def json_patch_op(doc, op, kpath):
    kind = op.get("op")
    pointer = op.get("path", "")
    parts = parse_pointer(pointer, kpath)
    if not parts:
        raise RenderError(f"{kpath}: patching the whole document is not supported")
    parent = resolve(doc, parts[:-1], pointer, kpath)
    last = parts[-1]
    if kind == "test":
        if resolve(doc, parts, pointer, kpath) != op.get("value"):
            raise RenderError(f"{kpath}: test failed at {pointer}: expected {op.get('value')!r}")
    elif kind in ("add", "replace"):
        value = copy.deepcopy(op.get("value"))
        if isinstance(parent, list):
            i = list_index(parent, last, pointer, kpath, allow_end=(kind == "add"))
            if kind == "add":
                parent.insert(i, value)
            else:
                parent[i] = value
        elif isinstance(parent, dict):
            if kind == "replace" and last not in parent:
                raise RenderError(f"{kpath}: replace at {pointer}: no such member")
            parent[last] = value
        else:
            raise RenderError(f"{kpath}: {pointer}: parent is not a container")
    elif kind == "remove":
        if isinstance(parent, list):
            del parent[list_index(parent, last, pointer, kpath, allow_end=False)]
        elif isinstance(parent, dict) and last in parent:
            del parent[last]
        else:
            raise RenderError(f"{kpath}: remove at {pointer}: no such member")
    else:
        raise RenderError(f"{kpath}: JSON patch op {kind!r} is not supported")


def compare(mine, theirs_path):
    """Differences between our objects and another renderer's, as lines."""
    theirs = load_yaml_docs(theirs_path)
    a = {object_id(o): o for o in mine}
    b = {object_id(o): o for o in theirs}
    problems = []
    for oid in sorted(set(a) | set(b), key=str):
        if oid not in a:
            problems.append(f"only in {theirs_path}: {oid}")
        elif oid not in b:
            problems.append(f"missing from {theirs_path}: {oid}")
        elif a[oid] != b[oid]:
            problems.append(f"differs: {oid}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--out", help="write the YAML stream here instead of stdout")
    parser.add_argument("--compare", help="another renderer's output to compare with")
    args = parser.parse_args()
    try:
        objects = build(args.directory)
    except (RenderError, OSError, yaml.YAMLError) as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 1
    if args.compare:
        problems = compare(objects, args.compare)
        for p in problems:
            print(f"render.py: {p}", file=sys.stderr)
        return 1 if problems else 0
    text = yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
