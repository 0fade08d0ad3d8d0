"""Config: lookup order, drop-ins, validation messages, and `midictl config` edits."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from midid.config import ConfigError, config_from_dict, find_config_file, load_config, set_value, unset_value
from midid.ctl import cli

REPO = Path(__file__).resolve().parents[1]


def test_shipped_default_config_loads_and_names_every_key() -> None:
    cfg = load_config(REPO / "etc" / "midid.toml")
    text = (REPO / "etc" / "midid.toml").read_text()
    for section, table in cfg.to_toml_dict().items():
        assert f"[{section}]" in text, section
        for key in table:
            assert f"\n{key} =" in text or f"\n# {key} =" in text, f"{section}.{key} missing from etc/midid.toml"


def test_builtin_defaults_without_any_file(tmp_path: Path) -> None:
    cfg = load_config()
    assert cfg.sources.mode == "copy"
    assert cfg.import_.max_archive_depth == 10
    assert cfg.database_path == cfg.library_path.parent / "midid.sqlite3"


@pytest.mark.parametrize("data, words", [
    ({"sources": {"mode": "mv"}}, ["sources.mode", "'mv'", '"copy" | "hardlink" | "move"']),
    ({"import": {"max_archive_depth": -1}}, ["import.max_archive_depth", "-1", "0 to 64"]),
    ({"import": {"max_ratio": "high"}}, ["import.max_ratio", "'high'"]),
    ({"library": {"pth": "/x"}}, ["unknown key library.pth", "allowed keys: path, database"]),
    ({"libary": {}}, ["unknown section [libary]"]),
    ({"export": {"categories": ["Drums", "Kicks"]}}, ["export.categories", "DrumKicks"]),
    ({"export": {"devices": [{"uuid": "1234", "profile": "mpc2"}]}}, ["export.devices[0].profile", "'mpc2'"]),
    ({"rename": {"template": "{bpm}_{color}"}}, ["rename.template", "{bpm}"]),
    ({"ray": {"address": "head-node"}}, ["ray.address", 'ray://host:port']),
    ({"watch": {"settle_s": True}}, ["watch.settle_s", "True"]),
    ({"pipeline": {"batch_size": True}}, ["pipeline.batch_size", "True"]),  # TOML true is no count
    ({"pipeline": {"batch_size": 0}}, ["pipeline.batch_size", "0", "from 1 to 10000"]),
    ({"import": {"max_members": 0}}, ["import.max_members", "0", "a positive integer"]),
])
def test_bad_values_give_one_line_naming_key_value_and_allowed(data: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "env.toml"
    env_file.write_text('[sources]\nmode = "hardlink"\n')
    user = tmp_path / "xdg-config" / "midid" / "midid.toml"
    user.parent.mkdir(parents=True)
    user.write_text('[sources]\nmode = "move"\n')
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('[sources]\nmode = "copy"\n')
    monkeypatch.setattr("midid.config.SYSTEM_CONFIG", tmp_path / "absent" / "midid.toml")
    assert load_config().sources.mode == "move"
    monkeypatch.setenv("MIDID_CONFIG", str(env_file))
    assert load_config().sources.mode == "hardlink"
    assert load_config(explicit).sources.mode == "copy"
    assert find_config_file(explicit) == explicit


def test_dropins_merge_in_order_and_set_keeps_the_users_file(tmp_path: Path) -> None:
    main = tmp_path / "midid.toml"
    original = '# my settings\n[sources]\nmode = "copy"  # keep copies\nfolders = ["/music"]\n'
    main.write_text(original)
    dropins = tmp_path / "midid.toml.d"
    dropins.mkdir()
    (dropins / "10-site.toml").write_text('[watch]\nsettle_s = 5.0\n')
    (dropins / "90-late.toml").write_text('[watch]\nsettle_s = 7.0\n')
    set_value(main, "sources.mode", "hardlink")
    set_value(main, "export.label_patterns", '["MPC*", "MYDRIVE"]')
    cfg = load_config(main)
    assert main.read_text() == original
    assert cfg.sources.mode == "hardlink"
    assert cfg.sources.folders == ["/music"]
    assert cfg.export.label_patterns == ["MPC*", "MYDRIVE"]
    assert cfg.watch.settle_s == 7.0
    assert cfg.origins["sources.mode"].endswith("50-midictl.toml")
    assert cfg.origins["sources.folders"] == str(main)
    with pytest.raises(ConfigError, match="pipeline.batch_size"):
        set_value(main, "pipeline.batch_size", "0")
    assert load_config(main).pipeline.batch_size == 256
    assert unset_value(main, "sources.mode")
    assert load_config(main).sources.mode == "copy"
    assert not list(dropins.glob(".*tmp*"))


def test_midictl_config_commands(tmp_path: Path) -> None:
    main = tmp_path / "midid.toml"
    main.write_text(f'[library]\npath = "{tmp_path}/lib"\n[control]\nsocket = "{tmp_path}/none.sock"\n')
    run = CliRunner().invoke
    assert run(cli, ["--config", str(main), "config", "set", "rename.enabled", "true"]).exit_code == 0
    got = run(cli, ["--config", str(main), "config", "get", "rename.enabled"])
    assert got.output.strip() == "true"
    shown = run(cli, ["--config", str(main), "config", "show", "--origin"]).output
    assert "rename.enabled = true    # " in shown and "50-midictl.toml" in shown
    assert f"library.path = \"{tmp_path}/lib\"    # {main}" in shown
    one = run(cli, ["--config", str(main), "config", "set", "sources.folders", "/srv/packs"])
    assert one.exit_code == 2
    assert 'expected a list of folder paths, e.g. ["/srv/packs"]' in one.output
    bad = run(cli, ["--config", str(main), "config", "set", "sources.mode", "teleport"])
    assert bad.exit_code == 2 and "sources.mode" in bad.output and "teleport" in bad.output
    unknown = run(cli, ["--config", str(main), "config", "get", "nope.key"])
    assert unknown.exit_code == 2 and "unknown section [nope]" in unknown.output
    assert run(cli, ["--config", str(main), "config", "path"]).output.strip() == str(main)
    plain = tomllib.loads(run(cli, ["--config", str(main), "config", "show"]).output)
    assert plain["rename"]["enabled"] is True and plain["library"]["path"] == f"{tmp_path}/lib"
    assert run(cli, ["--config", str(main), "config", "unset", "rename.enabled"]).exit_code == 0
    assert run(cli, ["--config", str(main), "config", "get", "rename.enabled"]).output.strip() == "false"
    again = run(cli, ["--config", str(main), "config", "unset", "rename.enabled"])
    assert again.exit_code == 0 and "rename.enabled is not set by midictl; nothing to do" in again.output


def test_config_set_says_what_is_in_effect_and_fails_when_a_later_drop_in_wins(tmp_path: Path) -> None:
    main = tmp_path / "midid.toml"
    main.write_text(f'[library]\npath = "{tmp_path}/lib"\n[control]\nsocket = "{tmp_path}/none.sock"\n')
    ours = tmp_path / "midid.toml.d" / "50-midictl.toml"
    run = CliRunner().invoke
    done = run(cli, ["--config", str(main), "config", "set", "rename.enabled", "true"])
    assert done.exit_code == 0 and done.stderr.strip() == f"rename.enabled = true  ({ours})"
    local = tmp_path / "midid.toml.d" / "90-local.toml"
    local.write_text("[rename]\nenabled = false\n")
    beaten = run(cli, ["--config", str(main), "config", "set", "rename.enabled", "true"])
    assert beaten.exit_code == 1
    assert beaten.stderr.strip() == (f"rename.enabled = false, set by {local}, which is read after midictl's "
                                     "50-midictl.toml and wins; change it there")
    unset = run(cli, ["--config", str(main), "config", "unset", "rename.enabled"])
    assert unset.exit_code == 0 and unset.stderr.strip() == f"rename.enabled = false  ({local})"
    local.unlink()
    path = run(cli, ["--config", str(main), "config", "set", "library.path", f"{tmp_path}/other"])
    assert path.stderr.strip() == f"library.path = {tmp_path}/other  ({ours})"
    back = run(cli, ["--config", str(main), "config", "unset", "library.path"])
    assert back.stderr.strip() == f"library.path = {tmp_path}/lib  ({main})"
    run(cli, ["--config", str(main), "config", "set", "rename.template", "[x] {bpm}"])
    default = run(cli, ["--config", str(main), "config", "unset", "rename.template"])
    assert default.stderr.strip() == "rename.template = {bpm}bpm_{key}_{tags}  (the default)"


def test_path_keys_expand_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    main = tmp_path / "midid.toml"
    main.write_text('[library]\npath = "~/lib"\n[sources]\nfolders = ["~/Music/MIDI", "/srv/packs"]\n'
                    '[control]\nsocket = "~/.midid.sock"\n')
    cfg = load_config(main)
    assert cfg.source_folders == [tmp_path / "Music" / "MIDI", Path("/srv/packs")]
    assert cfg.socket_path == tmp_path / ".midid.sock"
    assert cfg.library_path == tmp_path / "lib" and cfg.database_path == tmp_path / "midid.sqlite3"
    assert cfg.sources.folders[0] == "~/Music/MIDI"  # shown and saved as written


@pytest.mark.parametrize("euid, env, socket", [
    (0, {}, "/run/midid/midid.sock"),
    (0, {"RUNTIME_DIRECTORY": "/run/svc:/run/other"}, "/run/svc/midid.sock"),  # systemd's RuntimeDirectory=
    (1000, {"XDG_RUNTIME_DIR": "/run/user/1000"}, "/run/user/1000/midid.sock"),
    (1000, {}, "DATA/midid/midid.sock"),  # no runtime dir at all: beside the library
])
def test_built_in_paths_follow_the_user_and_the_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        euid: int, env: dict[str, str], socket: str) -> None:
    """A root service puts its socket in /run/midid (or systemd's runtime directory), a user's
    daemon in their session's runtime dir; the library defaults under XDG_DATA_HOME."""
    for name in ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("midid.config.os.geteuid", lambda: euid)
    cfg = config_from_dict({})
    assert cfg.control.socket == socket.replace("DATA", str(tmp_path / "data"))
    assert cfg.library.path == str(tmp_path / "data" / "midid" / "library")


def test_with_no_config_file_root_gets_the_system_path_and_a_user_their_own(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Where `midictl config set` writes when no file exists yet: /etc/midid for root (unless
    root already keeps a ~/.config/midid), ~/.config/midid for anyone else."""
    system = tmp_path / "etc" / "midid" / "midid.toml"
    monkeypatch.setattr("midid.config.SYSTEM_CONFIG", system)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("MIDID_CONFIG", raising=False)
    user = tmp_path / "config" / "midid" / "midid.toml"
    monkeypatch.setattr("midid.config.os.geteuid", lambda: 0)
    assert find_config_file() == system
    user.parent.mkdir(parents=True)
    assert find_config_file() == user
    user.parent.rmdir()
    monkeypatch.setattr("midid.config.os.geteuid", lambda: 1000)
    assert find_config_file() == user
