"""Prompt contracts: the spec, loading with validation, and the content fingerprint.

A contract root holds `contracts/<name>.yaml`, `prompts/<name>/v<N>/*.j2` and
`contracts.lock`. `load_contract("reply@1")` returns a `Contract` that renders both the
training rows and the runtime prompts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jarvis.errors import (
    ContractError,
    ContractNotFoundError,
    LockError,
    RecordError,
    SpecialTokenError,
    TemplateVariableError,
)
from jarvis.files import load_yaml, read_text
from jarvis.render import (
    RENDERER_OPTIONS,
    SpecialTokenPolicy,
    check_template_ast,
    make_environment,
    render_template,
)
from jarvis.schemas import Record, dump, read_schema_source, resolve_schema, validator

ENV_ROOT = "JARVIS_ROOT"
LOCK_FILE = "contracts.lock"
ParamValue = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplatesSpec(_Strict):
    """Template file per role, relative to the version folder."""

    system: str
    user: str
    assistant: str | None = None


class GenerationSpec(_Strict):
    """Sampling defaults used by `jarvis reply` and `ReplyEngine`."""

    max_tokens: int = Field(default=256, gt=0)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)


class RetrievalSpec(_Strict):
    """How a version fills its RAG block from an exemplar store (`jarvis.rag`).

    An exemplar is a past record seen as (its query text, its target): for `reply`, the last
    message not from the persona and the persona's reply to it.
    """

    k: int = Field(default=3, ge=1, le=32)
    # `last_incoming` (the last message whose sender is not the persona), `last_message`, or
    # `field:NAME` (a string field of the record).
    query: str = Field(default="last_incoming", pattern=r"^(last_incoming|last_message|field:\w+)$")
    # The parameter holding the persona's name (for `last_incoming`).
    persona: str = "persona_name"
    # The schema field the exemplars fill (a list of {message, reply}).
    field: str = "retrieved"
    # Leave the record's own thread (its group key) out: its context is already in the prompt.
    exclude_thread: bool = True
    min_score: float = Field(default=0.0, ge=0.0)

    def key(self, parameters: Mapping[str, Any], target: str) -> str:
        """What defines an exemplar's content: a store is reusable across versions with it."""
        data = {"query": self.query, "target": target}
        if self.query == "last_incoming":
            data["persona"] = str(parameters.get(self.persona))
        return _sha(_canonical(data))


class VersionSpec(_Strict):
    """Everything that defines one version of a contract."""

    description: str = ""
    schema_name: str = Field(alias="schema")
    templates: TemplatesSpec
    parameters: dict[str, ParamValue] = Field(default_factory=dict)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    checks: list[dict[str, dict[str, Any]]] = Field(default_factory=list)
    special_tokens: Literal["refuse", "escape"] = "refuse"
    group_key: str | None = None
    retrieval: RetrievalSpec | None = None


class ContractSpec(_Strict):
    """A `contracts/<name>.yaml` file: a name and integer versions side by side."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    versions: dict[int, VersionSpec] = Field(min_length=1)


def bundled_root() -> Path:
    """Return the contract root shipped with jarvis (in the wheel or the source checkout)."""
    package = Path(__file__).resolve().parent
    installed = package / "_bundled"
    return installed if installed.is_dir() else package.parent


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the contract root: `root`, else `$JARVIS_ROOT`, else the bundled root.

    Raises:
        ContractNotFoundError: the folder has no `contracts/` subfolder.
    """
    chosen = root if root is not None else os.environ.get(ENV_ROOT) or None
    path = Path(chosen).expanduser().resolve() if chosen is not None else bundled_root()
    if not (path / "contracts").is_dir():
        raise ContractNotFoundError(f"{path}: not a contract root (no contracts/ folder)")
    return path


def parse_ref(ref: str) -> tuple[str, int | None]:
    """Split `name@version` (or `name@vN`, or a bare name) into its parts.

    Raises:
        ContractNotFoundError: the version is not an integer.
    """
    name, sep, version = ref.partition("@")
    if not sep:
        return name, None
    digits = version[1:] if version.startswith("v") else version
    if not digits.isdigit():
        raise ContractNotFoundError(f"{ref!r}: version must be an integer, as in {name}@1")
    return name, int(digits)


def read_spec(root: Path, name: str) -> ContractSpec:
    """Read and validate `contracts/<name>.yaml`.

    Raises:
        ContractNotFoundError: no such file.
        ContractError: invalid YAML or spec (names the file and the field).
    """
    path = root / "contracts" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_contract_names(root)) or "none"
        raise ContractNotFoundError(f"no contract {name!r} in {root} (known: {known})")
    try:
        raw = load_yaml(read_text(path, ContractError))
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: invalid YAML: {exc}") from exc
    try:
        spec = ContractSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ContractError(f"{path}: {loc}: {first['msg']}") from exc
    if spec.name != name:
        raise ContractError(f"{path}: name {spec.name!r} does not match the file name {name!r}")
    return spec


def list_contract_names(root: Path) -> list[str]:
    """Return the sorted contract names in a root."""
    return sorted(p.stem for p in (root / "contracts").glob("*.yaml"))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Contract:
    """One loaded, validated contract version; the single source of every prompt string.

    Attributes:
        name: contract name, e.g. "reply".
        version: integer version.
        spec: the version's spec.
        schema: the pydantic input model.
        root: the contract root it was loaded from.
        parts: content hash per part (spec section, each template file, schema, renderer).
        fingerprint: sha256 over `parts`.
        locked: whether `contracts.lock` has this version (and it matched).
    """

    name: str
    version: int
    spec: VersionSpec
    schema: type[Record]
    root: Path
    parts: dict[str, str]
    fingerprint: str
    locked: bool
    _templates: dict[str, jinja2.Template] = field(repr=False, compare=False)
    _policy: SpecialTokenPolicy = field(repr=False, compare=False)
    system_prompt: str = field(default="", compare=False)
    # True when the assistant template is exactly `{{ <target> }}`: Jinja would return the
    # string unchanged, so rendering is skipped (it dominates render-dataset's time).
    _target_passthrough: bool = field(default=False, repr=False, compare=False)

    @property
    def ref(self) -> str:
        """`name@version`."""
        return f"{self.name}@{self.version}"

    @property
    def short_fingerprint(self) -> str:
        """The first 12 hex digits of the fingerprint."""
        return self.fingerprint[:12]

    @property
    def parameters(self) -> dict[str, ParamValue]:
        """The version's parameters (persona name, reply length, ...)."""
        return dict(self.spec.parameters)

    @cached_property
    def rendered_fields(self) -> tuple[str, ...]:
        """Schema fields that templates see (metadata fields excluded)."""
        meta = self.schema.METADATA_FIELDS
        return tuple(f for f in self.schema.model_fields if f not in meta)

    @cached_property
    def _rendered_set(self) -> set[str]:
        return set(self.rendered_fields)

    @cached_property
    def target_field(self) -> str:
        """The schema field holding the assistant target."""
        return self.schema.TARGET_FIELD

    @property
    def retrieval(self) -> RetrievalSpec | None:
        """The version's `retrieval:` block, or None (the caller fills the RAG block)."""
        return self.spec.retrieval

    @cached_property
    def rag_field(self) -> str | None:
        """The schema field holding the RAG block: retrieval's, else `retrieved` if any."""
        if self.spec.retrieval is not None:
            return self.spec.retrieval.field
        return "retrieved" if "retrieved" in self.schema.model_fields else None

    @cached_property
    def retrieval_key(self) -> str | None:
        """The key a store must have been built with for this version (None: no retrieval)."""
        r = self.spec.retrieval
        return None if r is None else r.key(self.spec.parameters, self.target_field)

    @property
    def group_key(self) -> str | None:
        """The field whose equal values must land in the same split (e.g. "thread")."""
        return self.spec.group_key

    def special_token_policy(self, extra_tokens: tuple[str, ...] = ()) -> SpecialTokenPolicy:
        """Return the contract's policy, extended with a tokenizer's special tokens."""
        return self._policy.with_tokens(extra_tokens) if extra_tokens else self._policy

    def validate(self, record: Mapping[str, Any]) -> Record:
        """Validate one input record against the schema.

        Raises:
            RecordError: names the first failing field, e.g. `messages[0].sender`.
        """
        try:
            return validator(self.schema)(record)  # type: ignore[no-any-return]
        except ValidationError as exc:
            raise _record_error(exc) from exc

    @cached_property
    def _wheres(self) -> dict[str, str]:
        """Each role's template file as error messages name it (`prompts/reply/v1/user.j2`)."""
        return {
            role: f"prompts/{self.name}/v{self.version}/{getattr(self.spec.templates, role)}"
            for role in ("system", "user", "assistant")
        }

    def _render_target(self, context: Mapping[str, Any]) -> str:
        """Render the assistant target.

        Raises:
            RecordError: the record has no target (e.g. no `reply`).
        """
        target = context.get(self.target_field)
        if target is None:
            raise RecordError(
                f"{self.target_field}: required for a training row of {self.ref}",
                field=self.target_field,
            )
        template = self._templates.get("assistant")
        if template is None or self._target_passthrough:
            return target if type(target) is str else str(target)
        return render_template(template, context, where=self._wheres["assistant"])

    def messages(
        self,
        record: Record,
        *,
        with_target: bool,
        policy: SpecialTokenPolicy | None = None,
    ) -> list[dict[str, str]]:
        """Render a record as chat messages: system, user, and optionally the assistant target.

        Raises:
            SpecialTokenError: a value holds a control string (refuse policy); names the field.
            RecordError: `with_target` and the record has no target.
        """
        data = dump(record, include=self._rendered_set)
        return self._messages(data, with_target, policy or self._policy)

    def dumped_messages(
        self,
        dumped: Mapping[str, Any],
        *,
        with_target: bool,
        policy: SpecialTokenPolicy | None = None,
    ) -> list[dict[str, str]]:
        """`messages` from a record's `record_key` dump alone, for a schema of JSON-native
        fields (`schemas.json_native`, checked by the caller): render-dataset's hot loop has
        that dump already, and the values it renders are the same (tested).

        Raises:
            SpecialTokenError, RecordError: as `messages`.
        """
        get = dumped.get  # (a comprehension: 245 ns against dict(zip(...))'s 632, measured)
        data = {name: get(name) for name in self.rendered_fields}
        return self._messages(data, with_target, policy or self._policy)

    def _messages(
        self, data: dict[str, Any], with_target: bool, policy: SpecialTokenPolicy
    ) -> list[dict[str, str]]:
        if policy.mode == "escape":
            data = policy.apply(data)
        context = {**self.spec.parameters, **data}
        user = render_template(self._templates["user"], context, where=self._wheres["user"])
        out = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": user},
        ]
        target = None
        if with_target:
            target = self._render_target(context)
            out.append({"role": "assistant", "content": target})
        if policy.mode == "refuse":
            # Scanning the rendered text is one regex per message instead of a walk over every
            # value; the walk runs only to name the field once something was found.
            role, token = "user", policy.find(user)
            if token is None and target is not None:
                role, token = "assistant", policy.find(target)
            if token is not None:
                policy.apply(data)
                raise SpecialTokenError(
                    f"{role} content: contains the chat control string "
                    f"{token!r}, formed by the {self.ref} template; refused",
                    field=None,
                )
        return out


def _record_error(exc: ValidationError) -> RecordError:
    first = exc.errors()[0]
    loc = ""
    for part in first["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    return RecordError(f"{loc or '<record>'}: {first['msg']}", field=loc or None)


def _template_vars(
    env: jinja2.Environment, name: str, seen: dict[str, set[str]]
) -> tuple[set[str], list[str]]:
    """Return (undeclared variables, template files) of `name` and what it includes."""
    if name in seen:
        return seen[name], []
    try:
        source, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        ast = env.parse(source, name=name, filename=filename)
    except jinja2.TemplateNotFound as exc:
        raise ContractError(f"template not found: {exc}") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise ContractError(f"{exc.filename}:{exc.lineno}: {exc.message}") from exc
    check_template_ast(ast, where=str(filename))
    variables = set(jinja2.meta.find_undeclared_variables(ast))
    seen[name] = variables
    files = [name]
    for ref in jinja2.meta.find_referenced_templates(ast):
        if ref is None:
            raise ContractError(f"{filename}: includes must name a literal file")
        sub_vars, sub_files = _template_vars(env, ref, seen)
        variables |= sub_vars
        files += sub_files
    return variables, files


def _build(
    root: Path, name: str, version: int, spec: VersionSpec, *, enforce_lock: bool = True
) -> Contract:
    folder = root / "prompts" / name
    version_dir = f"v{version}"
    if not (folder / version_dir).is_dir():
        raise ContractNotFoundError(f"{name}@{version}: missing folder {folder / version_dir}")
    ref = f"{name}@{version}"
    source = read_schema_source(spec.schema_name, root)
    lock = read_lock(root)
    entry = lock.get(ref)
    source_part = None
    if source is not None:
        source_part = (f"schema-source:{source.file}", _sha(source.source))
        locked_source = entry["parts"].get(source_part[0]) if entry is not None else None
        if entry is not None and locked_source != source_part[1]:
            # Checked before the module runs: a locked contract never runs changed code.
            raise LockError(
                f"{ref}: the schema module {source.file} is not the one locked in {LOCK_FILE} "
                f"({'changed' if locked_source else 'not locked'}); it was not run. A locked "
                "version is immutable: copy it to a new version and run `jarvis contract lock`"
            )
    schema = resolve_schema(spec.schema_name, source)
    env = make_environment(folder)
    params = set(spec.parameters)
    meta = schema.METADATA_FIELDS
    fields = {f for f in schema.model_fields if f not in meta}
    clash = params & set(schema.model_fields)
    if clash:
        raise ContractError(f"{name}@{version}: parameters shadow schema fields: {sorted(clash)}")
    if spec.group_key is not None and spec.group_key not in schema.model_fields:
        raise ContractError(
            f"contracts/{name}.yaml: versions.{version}.group_key: {spec.group_key!r} is not a "
            f"field of {schema.__name__}"
        )
    if schema.TARGET_FIELD not in fields:
        raise ContractError(f"{name}@{version}: schema {schema.__name__} has no target field")
    if spec.retrieval is not None:
        _check_retrieval(name, version, spec, schema)

    roles = {"system": spec.templates.system, "user": spec.templates.user}
    if spec.templates.assistant is not None:
        roles["assistant"] = spec.templates.assistant
    templates: dict[str, jinja2.Template] = {}
    files: set[str] = set()
    used: set[str] = set()
    seen: dict[str, set[str]] = {}
    for role, rel in roles.items():
        tname = f"{version_dir}/{rel}"
        variables, tfiles = _template_vars(env, tname, seen)
        shown = f"prompts/{name}/{tname}"
        unknown = sorted(variables - fields - params)
        if unknown:
            raise TemplateVariableError(
                f"{shown}: variable {unknown[0]!r} is neither a field of "
                f"{schema.__name__} nor a parameter of {name}@{version}"
            )
        if role == "system" and variables & fields:
            raise TemplateVariableError(
                f"{shown}: the system template may use parameters only (it is the static, "
                f"cacheable prefix), but uses {sorted(variables & fields)[0]!r}"
            )
        used |= variables
        files.update(tfiles)
        templates[role] = env.get_template(tname)
    if "assistant" not in roles:
        used.add(schema.TARGET_FIELD)
    unused = sorted(fields - used)
    if unused:
        raise TemplateVariableError(
            f"{name}@{version}: field {unused[0]!r} of {schema.__name__} is used by no template"
        )
    from jarvis.checks import validate_check_specs

    validate_check_specs(spec.checks, where=f"contracts/{name}.yaml: versions.{version}.checks")

    policy = SpecialTokenPolicy(spec.special_tokens)
    # `retrieval` is left out when absent, so versions written before it keep their hash.
    dumped = spec.model_dump(
        mode="json", by_alias=True, exclude={"retrieval"} if spec.retrieval is None else None
    )
    parts = {
        f"contracts/{name}.yaml#versions.{version}": _sha(
            _canonical({"name": name, "version": dumped})
        ),
        f"schema:{schema.__name__}": _sha(_canonical(schema.model_json_schema())),
        "renderer": _sha(_canonical({**RENDERER_OPTIONS, "control_strings": policy.tokens})),
    }
    if source_part is not None:
        parts[source_part[0]] = source_part[1]
    for rel in sorted(files):
        parts[f"prompts/{name}/{rel}"] = _sha((folder / rel).read_bytes())
    fingerprint = _sha(_canonical(parts))
    if enforce_lock and entry is not None and entry["fingerprint"] != fingerprint:
        raise LockError(lock_mismatch_message(f"{name}@{version}", entry, parts))
    contract = Contract(
        name=name,
        version=version,
        spec=spec,
        schema=schema,
        root=root,
        parts=parts,
        fingerprint=fingerprint,
        locked=entry is not None and entry["fingerprint"] == fingerprint,
        _templates=templates,
        _policy=policy,
    )
    system = render_template(templates["system"], dict(spec.parameters), where=roles["system"])
    object.__setattr__(contract, "system_prompt", system)
    if "assistant" in roles:
        text = read_text(folder / version_dir / roles["assistant"], ContractError)
        bare = re.fullmatch(r"\{\{ *(\w+) *\}\}\n?", text)
        passthrough = bare is not None and bare.group(1) == schema.TARGET_FIELD
        object.__setattr__(contract, "_target_passthrough", passthrough)
    return contract


def _check_retrieval(name: str, version: int, spec: VersionSpec, schema: type[Record]) -> None:
    """A `retrieval:` block names fields and parameters that exist and fit."""
    r = spec.retrieval
    assert r is not None
    where = f"contracts/{name}.yaml: versions.{version}.retrieval"
    fields = schema.model_fields
    if r.field not in fields or r.field in (schema.TARGET_FIELD, spec.group_key):
        raise ContractError(
            f"{where}.field: {r.field!r} is not a field of {schema.__name__} that can hold "
            "the exemplars (a list of {message, reply}, neither the target nor the group key)"
        )
    if r.query.startswith("field:"):
        source = r.query.split(":", 1)[1]
        if source not in fields or source in (schema.TARGET_FIELD, r.field):
            raise ContractError(f"{where}.query: {source!r} is not a field of {schema.__name__}")
    elif "messages" not in fields:
        raise ContractError(
            f"{where}.query: {r.query} reads `messages`, which {schema.__name__} does not have"
        )
    if r.query == "last_incoming" and not isinstance(spec.parameters.get(r.persona), str):
        raise ContractError(
            f"{where}.persona: {r.persona!r} is not a text parameter of {name}@{version} "
            "(last_incoming needs the persona's name)"
        )
    if r.exclude_thread and spec.group_key is None:
        raise ContractError(
            f"{where}.exclude_thread: needs a group_key (the field naming a record's thread)"
        )


def read_lock(root: Path) -> dict[str, dict[str, Any]]:
    """Return `contracts.lock` as `{ref: {"fingerprint": ..., "parts": {...}}}` ({} if absent).

    Every entry is checked: its shape, and that its fingerprint is the hash of its parts, so
    an edited part hash in the lock is caught rather than trusted.

    Raises:
        LockError: the lock file is not valid JSON of that shape, or an entry is inconsistent.
    """
    path = root / LOCK_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise LockError(f"{path}: unreadable lock file: {exc}") from exc
    if not isinstance(data, dict):
        raise LockError(f"{path}: unreadable lock file: expected {{ref: {{fingerprint, parts}}}}")
    for ref, entry in data.items():
        where = f"{path}: {ref}"
        if not isinstance(entry, dict) or set(entry) != {"fingerprint", "parts"}:
            raise LockError(f"{where}: an entry is exactly {{fingerprint, parts}}")
        fingerprint, parts = entry["fingerprint"], entry["parts"]
        if not isinstance(fingerprint, str) or not _HEX64.fullmatch(fingerprint):
            raise LockError(f"{where}: fingerprint: expected 64 hex digits")
        if not isinstance(parts, dict) or not parts:
            raise LockError(f"{where}: parts: expected a mapping of part name to sha256")
        for name, digest in parts.items():
            if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
                raise LockError(f"{where}: parts.{name}: expected 64 hex digits")
        if _sha(_canonical(parts)) != fingerprint:
            raise LockError(
                f"{where}: the fingerprint is not the hash of its parts (the lock was edited); "
                "restore contracts.lock from version control"
            )
    return data


_HEX64 = re.compile(r"[0-9a-f]{64}")


def lock_mismatch_message(ref: str, entry: Mapping[str, Any], parts: Mapping[str, str]) -> str:
    """Describe which files of a locked version changed."""
    locked_parts: Mapping[str, str] = entry.get("parts", {})
    changed = sorted(
        k for k in parts.keys() | locked_parts.keys() if parts.get(k) != locked_parts.get(k)
    )
    names = ", ".join(changed) or "unknown part"
    return (
        f"{ref} changed since it was locked: {names} "
        f"(locked {entry['fingerprint'][:12]}, now {_sha(_canonical(dict(parts)))[:12]}); "
        "a locked version is immutable: copy it to a new version and run `jarvis contract lock`"
    )


_CACHE: dict[tuple[str, str, int, bool], tuple[tuple[int, ...], Contract]] = {}


def _signature(root: Path, name: str, version: int) -> tuple[int, ...]:
    """mtimes of the files a version depends on, so edits on disk invalidate the cache."""
    paths = [root / "contracts" / f"{name}.yaml", root / LOCK_FILE, *sorted(root.glob("*.py"))]
    paths += sorted((root / "prompts" / name).rglob("*"))
    return tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in paths)


def load_contract(
    ref: str | Contract = "reply",
    *,
    root: str | os.PathLike[str] | None = None,
    enforce_lock: bool = True,
) -> Contract:
    """Load and validate one contract version.

    Args:
        ref: `name@version`, or a bare name for the latest version; a `Contract` is returned as is.
        root: contract root; default `$JARVIS_ROOT`, else the bundled root.
        enforce_lock: refuse a version whose content differs from `contracts.lock`
            (only `jarvis contract check|lock` turn this off, to report the difference).

    Returns:
        The loaded `Contract`.

    Raises:
        ContractNotFoundError: unknown name or version.
        ContractError: invalid spec or template.
        TemplateVariableError: a template variable is unknown, or a schema field is unused.
        LockError: the version is in `contracts.lock` with another fingerprint.
    """
    if isinstance(ref, Contract):
        return ref
    path = resolve_root(root)
    name, version = parse_ref(ref)
    spec = read_spec(path, name)
    if version is None:
        version = max(spec.versions)
    if version not in spec.versions:
        known = ", ".join(f"{name}@{v}" for v in sorted(spec.versions))
        raise ContractNotFoundError(f"no version {version} of {name!r} (known: {known})")
    key = (str(path), name, version, enforce_lock)
    signature = _signature(path, name, version)
    cached = _CACHE.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    contract = _build(path, name, version, spec.versions[version], enforce_lock=enforce_lock)
    _CACHE[key] = (signature, contract)
    return contract


def load_all(
    root: str | os.PathLike[str] | None = None, *, enforce_lock: bool = True
) -> list[Contract]:
    """Load every version of every contract in a root, sorted by name and version."""
    path = resolve_root(root)
    out: list[Contract] = []
    for name in list_contract_names(path):
        for version in sorted(read_spec(path, name).versions):
            out.append(load_contract(f"{name}@{version}", root=path, enforce_lock=enforce_lock))
    return out
