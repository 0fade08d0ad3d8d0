"""Configuration: TOML files merged with drop-ins, validated into dataclasses on load.

Lookup order for the main file: `--config PATH`, `$MIDID_CONFIG`, `/etc/midid/midid.toml`,
`~/.config/midid/midid.toml`, else built-in defaults. After the main file, every
`<main>.d/*.toml` drop-in is merged in name order (the way systemd drop-ins work), which is
where `midictl config set` writes, so a user's hand-written file and its comments are never
rewritten. Every value is checked where it is made — on load and on `config set` — and a bad
one is a one-line `ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, get_args, get_origin, get_type_hints

SYSTEM_CONFIG = Path("/etc/midid/midid.toml")
DROPIN_NAME = "50-midictl.toml"
CATEGORIES = (
    "DrumKicks", "DrumSnares", "DrumHats", "DrumCymbals", "DrumToms", "DrumPerc", "Drums",
    "Bass", "Melody", "Chords", "Progressions", "FX", "Loops",
)


class ConfigError(ValueError):
    """A config problem the user fixes in the file; the message names key, value and what is allowed."""


def _user_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "midid"


def _user_config() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "midid" / "midid.toml"


def _default_socket() -> str:
    runtime = os.environ.get("RUNTIME_DIRECTORY") or (
        "/run/midid" if os.geteuid() == 0 else os.environ.get("XDG_RUNTIME_DIR", "")
    )
    if runtime:
        return str(Path(runtime.split(":")[0]) / "midid.sock")
    return str(_user_data_dir() / "midid.sock")


def _spec(default: Any = None, *, factory: Callable[[], Any] | None = None,
          allowed: str = "", check: Callable[[Any], bool] | None = None) -> Any:
    """A config field: its default, a check beyond the type, and what to say when it fails."""
    meta = {"allowed": allowed, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _positive(v: Any) -> bool:
    return v > 0


def _nonnegative(v: Any) -> bool:
    return v >= 0


def _one_of(*choices: str) -> tuple[str, Callable[[Any], bool]]:
    return " | ".join(f'"{c}"' for c in choices), lambda v: v in choices


@dataclass
class LibraryConfig:
    path: str = _spec(factory=lambda: str(_user_data_dir() / "library"),
                      allowed="a folder path", check=bool)
    database: str = _spec("", allowed='a file path, or "" for midid.sqlite3 beside the library folder')


@dataclass
class SourcesConfig:
    folders: list[str] = _spec(factory=list, allowed="a list of folder paths")
    mode: str = _spec("copy", allowed=_one_of("copy", "hardlink", "move")[0],
                      check=_one_of("copy", "hardlink", "move")[1])
    follow_symlinks: bool = _spec(False, allowed="true | false")


@dataclass
class ImportConfig:
    max_archive_depth: int = _spec(10, allowed="an integer from 0 to 64", check=lambda v: 0 <= v <= 64)
    max_extracted_bytes: int = _spec(4 * 1024**3, allowed="a positive number of bytes", check=_positive)
    max_members: int = _spec(200_000, allowed="a positive integer", check=_positive)
    max_ratio: float = _spec(200.0, allowed="a number above 1", check=lambda v: v > 1)
    max_midi_bytes: int = _spec(64 * 1024**2, allowed="a positive number of bytes", check=_positive)


@dataclass
class RayConfig:
    address: str = _spec("", allowed='"" (start a local Ray), "auto", "host:port" or "ray://host:port"',
                         check=lambda v: v in ("", "auto") or re.fullmatch(r"(ray://)?[\w.\-\[\]:]+:\d+", v) is not None)
    num_cpus: int = _spec(0, allowed="0 (all cores) or a positive integer", check=_nonnegative)
    object_store_mb: int = _spec(256, allowed="an integer of at least 80", check=lambda v: v >= 80)
    rejoin_s: float = _spec(60.0, allowed="0 (only on reload) or a number of seconds of at least 1",
                            check=lambda v: v == 0 or v >= 1)


@dataclass
class PipelineConfig:
    analyze_actors: int = _spec(0, allowed="0 (one per CPU of the Ray) or a positive integer", check=_nonnegative)
    split_actors: int = _spec(0, allowed="0 (split shares the analyze actors) or a positive integer",
                              check=_nonnegative)
    batch_size: int = _spec(256, allowed="an integer from 1 to 10000", check=lambda v: 1 <= v <= 10_000)
    max_in_flight: int = _spec(2, allowed="batches in flight per actor, 1 to 16", check=lambda v: 1 <= v <= 16)
    local_below: int = _spec(2000, allowed="files; smaller one-shot jobs run in-process without Ray",
                             check=_nonnegative)


@dataclass
class RenameConfig:
    enabled: bool = _spec(False, allowed="true | false")
    template: str = _spec("{bpm}bpm_{key}_{tags}", allowed="a template of {bpm} {key} {tags} {category} {name} {pack}",
                          check=lambda v: _template_ok(v))


@dataclass
class WatchConfig:
    enabled: bool = _spec(True, allowed="true | false")
    settle_s: float = _spec(2.0, allowed="seconds, from 0.1 to 600", check=lambda v: 0.1 <= v <= 600)


@dataclass
class ControlConfig:
    socket: str = _spec(factory=_default_socket, allowed="a socket file path", check=bool)
    group: str = _spec("midid", allowed="a group name")


@dataclass
class DeviceEntry:
    uuid: str = _spec("", allowed="a file-system UUID", check=bool)
    name: str = _spec("", allowed="a display name")
    profile: str = _spec("", allowed='"" (use [export] profile), "mpc" or "force"', check=lambda v: v in ("", "mpc", "force"))
    subfolder: str = _spec("", allowed="a folder on the device under which the layout is written")


@dataclass
class ExportConfig:
    enabled: bool = _spec(True, allowed="true | false")
    root: str = _spec("MPC_Documents", allowed="a folder name on the device", check=bool)
    profile: str = _spec("mpc", allowed=_one_of("mpc", "force")[0], check=_one_of("mpc", "force")[1])
    categories: list[str] = _spec(factory=lambda: list(CATEGORIES),
                                  allowed="a list of: " + ", ".join(CATEGORIES),
                                  check=lambda v: all(c in CATEGORIES for c in v))
    label_patterns: list[str] = _spec(factory=lambda: ["MPC*", "FORCE*", "AKAI*"],
                                      allowed="a list of shell-style label patterns")
    devices: list[DeviceEntry] = _spec(factory=list, allowed="a list of {uuid, name, profile, subfolder} tables")
    mount_wait_s: float = _spec(30.0, allowed="seconds, from 0 to 3600", check=lambda v: 0 <= v <= 3600)
    auto_mount: bool = _spec(False, allowed="true | false")
    mount_root: str = _spec("/run/midid/mnt", allowed="a folder path", check=bool)


@dataclass
class LogConfig:
    level: str = _spec("INFO", allowed=_one_of("DEBUG", "INFO", "WARNING", "ERROR")[0],
                       check=_one_of("DEBUG", "INFO", "WARNING", "ERROR")[1])


@dataclass
class Config:
    library: LibraryConfig = field(default_factory=LibraryConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    import_: ImportConfig = field(default_factory=ImportConfig, metadata={"toml": "import"})
    ray: RayConfig = field(default_factory=RayConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    rename: RenameConfig = field(default_factory=RenameConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source_file: Path | None = field(default=None, metadata={"internal": True})
    origins: dict[str, str] = field(default_factory=dict, metadata={"internal": True})

    @property
    def library_path(self) -> Path:
        return Path(self.library.path).expanduser()

    @property
    def source_folders(self) -> list[Path]:
        """``[sources] folders`` with ``~`` expanded, as for every path key: a desktop user's
        config names ``~/Music/MIDI``."""
        return [Path(f).expanduser() for f in self.sources.folders]

    @property
    def socket_path(self) -> Path:
        return Path(self.control.socket).expanduser()

    @property
    def database_path(self) -> Path:
        if self.library.database:
            return Path(self.library.database).expanduser()
        return self.library_path.parent / "midid.sqlite3"

    def to_toml_dict(self) -> dict[str, Any]:
        """Plain TOML-ready values, section by section (for `config show`)."""
        out: dict[str, Any] = {}
        for f in _sections():
            out[_toml_name(f)] = dataclasses.asdict(getattr(self, f.name))
        return out


def _template_ok(template: str) -> bool:
    import string

    names = {"bpm", "key", "tags", "category", "name", "pack"}
    try:
        return all(fn is None or fn in names for _, fn, _, _ in string.Formatter().parse(template))
    except ValueError:
        return False


def _sections() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Config) if not f.metadata.get("internal")]


def _toml_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("toml", f.name)


def _section_field(section: str) -> dataclasses.Field[Any]:
    for f in _sections():
        if _toml_name(f) == section:
            return f
    allowed = ", ".join(_toml_name(f) for f in _sections())
    raise ConfigError(f"unknown section [{section}]; allowed sections: {allowed}")


def _type_name(tp: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any, f: dataclasses.Field[Any]) -> Any:
    """Check a TOML value against a field's type and check; return it in the field's type."""
    allowed = f.metadata.get("allowed") or _type_name(tp)
    bad = ConfigError(f"{key} = {value!r} is not allowed; expected {allowed}")
    if get_origin(tp) is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            example = json.dumps([value], ensure_ascii=False, default=str)
            raise ConfigError(f"{key} = {value!r} is not allowed; expected {allowed}, e.g. {example}")
        if dataclasses.is_dataclass(item_tp):
            value = [_build(item_tp, item, f"{key}[{i}]") for i, item in enumerate(value)]
        elif not all(isinstance(v, item_tp) for v in value):
            raise bad
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif not isinstance(value, tp):
        raise bad
    check = f.metadata.get("check")
    if check is not None and not check(value):
        raise bad
    return value


def _build(cls: type, table: Any, prefix: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix} = {table!r} is not allowed; expected a table")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"unknown key {prefix}.{key}; allowed keys: {', '.join(fields)}")
        values[key] = _coerce(f"{prefix}.{key}", value, hints[key], fields[key])
    return cls(**values)


def _merge(base: dict[str, Any], extra: dict[str, Any], origin: str, origins: dict[str, str]) -> None:
    for section, table in extra.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{section} = {table!r} is not allowed; top-level keys must be [sections]")
        base.setdefault(section, {})
        for key, value in table.items():
            base[section][key] = value
            origins[f"{section}.{key}"] = origin


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The main config file in lookup order; the user path when none exists yet."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("MIDID_CONFIG")
    if env:
        return Path(env).expanduser()
    for candidate in (SYSTEM_CONFIG, _user_config()):
        if candidate.exists():
            return candidate
    return SYSTEM_CONFIG if os.geteuid() == 0 and not _user_config().parent.exists() else _user_config()


def dropin_dir(main: Path) -> Path:
    return main.with_name(main.name + ".d")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file or remove it") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Load, merge drop-ins and validate; raise ConfigError with a one-line message."""
    main = find_config_file(explicit)
    if explicit and not main.exists():
        raise ConfigError(f"config file {main} does not exist; create it or drop --config")
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if main.exists():
        _merge(merged, read_toml(main), str(main), origins)
    folder = dropin_dir(main)
    if folder.is_dir():
        for dropin in sorted(folder.glob("*.toml")):
            _merge(merged, read_toml(dropin), str(dropin), origins)
    cfg = config_from_dict(merged)
    cfg.source_file = main
    cfg.origins = origins
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    sections = {}
    for section, table in data.items():
        f = _section_field(section)
        sections[f.name] = _build(f.default_factory, table, section)  # type: ignore[misc]
    return Config(**sections)


def parse_value(text: str) -> Any:
    """A command-line value as TOML would read it (`120`, `true`, `["a", "b"]`), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def split_key(key: str) -> tuple[str, str]:
    section, _, name = key.partition(".")
    f = _section_field(section)
    names = [x.name for x in dataclasses.fields(f.default_factory)]  # type: ignore[arg-type]
    if name not in names:
        raise ConfigError(f"unknown key {key}; allowed keys in [{section}]: {', '.join(names)}")
    return section, name


def get_value(cfg: Config, key: str) -> Any:
    section, name = split_key(key)
    value = getattr(getattr(cfg, _section_field(section).name), name)
    if isinstance(value, list):
        return [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
    return value


def read_dropin(main: Path) -> dict[str, Any]:
    path = dropin_dir(main) / DROPIN_NAME
    return read_toml(path) if path.exists() else {}


def write_dropin(main: Path, data: dict[str, Any]) -> Path:
    """Write midictl's drop-in atomically (temp, fsync, rename); the main file is never touched."""
    import tomli_w

    folder = dropin_dir(main)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / DROPIN_NAME
    tmp = folder / f".{DROPIN_NAME}.tmp-{os.getpid()}"
    header = "# Written by `midictl config set`; edit freely, or use `midictl config unset KEY`.\n"
    with tmp.open("wb") as fh:
        fh.write(header.encode())
        fh.write(tomli_w.dumps(data).encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def set_value(main: Path, key: str, raw: str) -> Any:
    """Validate KEY=VALUE against the schema and the whole merged config, then write the drop-in."""
    section, name = split_key(key)
    value = parse_value(raw)
    dropin = read_dropin(main)
    dropin.setdefault(section, {})[name] = value
    _validate_with(main, dropin)
    write_dropin(main, dropin)
    return value


def unset_value(main: Path, key: str) -> bool:
    section, name = split_key(key)
    dropin = read_dropin(main)
    if name not in dropin.get(section, {}):
        return False
    del dropin[section][name]
    if not dropin[section]:
        del dropin[section]
    _validate_with(main, dropin)
    write_dropin(main, dropin)
    return True


def _validate_with(main: Path, dropin: dict[str, Any]) -> None:
    """Validate the config as it will load once `dropin` replaces midictl's drop-in."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if main.exists():
        _merge(merged, read_toml(main), str(main), origins)
    folder = dropin_dir(main)
    names = {p.name for p in folder.glob("*.toml")} if folder.is_dir() else set()
    for name in sorted(names | {DROPIN_NAME}):
        _merge(merged, dropin if name == DROPIN_NAME else read_toml(folder / name), name, origins)
    config_from_dict(merged)
