"""Settings: precedence, the profile file (mode, atomic rewrite), URLs, TLS context."""

from __future__ import annotations

import logging
import os
import ssl
import stat
from pathlib import Path

import pytest

from concordctl.config import (
    Settings,
    default_config_path,
    delete_profile,
    load_config,
    load_profile,
    resolve_settings,
    save_profile,
    ssl_context,
    ws_url_for,
)
from concordctl.errors import UsageError

TOKEN_A = "aaa.profile-token.aaa"
TOKEN_E = "eee.env-token.eee"


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "conf" / "config.toml"
    save_profile(
        "work", path=path, server="http://work.example:8080", username="bob", token=TOKEN_A
    )
    save_profile("home", path=path, server="https://home.example/concord", username="amy")
    return path


def test_precedence_argument_then_environment_then_profile(cfg: Path) -> None:
    env = {"CONCORD_SERVER": "http://env.example", "CONCORD_USERNAME": "eve"}
    s = resolve_settings("http://arg.example", config_path=cfg, env=env)
    assert s.server == "http://arg.example"
    assert s.username == "eve"  # no argument: environment
    s = resolve_settings(config_path=cfg, env={})
    assert (s.server, s.username, s.token) == ("http://work.example:8080", "bob", TOKEN_A)
    assert s.profile == "work"  # the first profile saved became the default
    s = resolve_settings(config_path=cfg, env={"CONCORD_PROFILE": "home"})
    assert (s.server, s.username, s.token) == ("https://home.example/concord", "amy", None)
    s = resolve_settings(profile="work", config_path=cfg, env={"CONCORD_PROFILE": "home"})
    assert s.profile == "work"
    s = resolve_settings(config_path=cfg, env={"CONCORD_TOKEN": TOKEN_E})
    assert s.token == TOKEN_E


def test_concord_config_overrides_the_path(cfg: Path) -> None:
    env = {"CONCORD_CONFIG": str(cfg)}
    assert default_config_path(env) == cfg
    assert resolve_settings(env=env).username == "bob"
    assert default_config_path({}).name == "config.toml"
    assert default_config_path({}) != cfg


def test_a_profile_token_is_dropped_for_another_server_user_or_a_password(cfg: Path) -> None:
    assert resolve_settings("http://other.example", config_path=cfg, env={}).token is None
    assert resolve_settings(username="carol", config_path=cfg, env={}).token is None
    assert resolve_settings(password="pw", config_path=cfg, env={}).token is None
    same = resolve_settings("http://work.example:8080", username="bob", config_path=cfg, env={})
    assert same.token == TOKEN_A


def test_file_is_0600_and_rewritten_atomically(cfg: Path) -> None:
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg.parent.stat().st_mode) == 0o700
    inode = cfg.stat().st_ino
    save_profile("work", path=cfg, token="new.token.x")
    assert cfg.stat().st_ino != inode  # replaced, not rewritten in place
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert load_profile("work", cfg)["token"] == "new.token.x"
    assert load_profile("work", cfg)["username"] == "bob"  # merged, not replaced
    assert [p.name for p in cfg.parent.iterdir()] == ["config.toml"]  # no temp file left
    save_profile("work", path=cfg, token=None)
    assert "token" not in load_profile("work", cfg)


def test_wider_permissions_warn(cfg: Path, caplog: pytest.LogCaptureFixture) -> None:
    os.chmod(cfg, 0o644)
    with caplog.at_level(logging.WARNING, logger="concordctl.config"):
        load_config(cfg)
    assert any("chmod 600" in r.getMessage() for r in caplog.records)
    caplog.clear()
    os.chmod(cfg, 0o600)
    with caplog.at_level(logging.WARNING, logger="concordctl.config"):
        load_config(cfg)
    assert not caplog.records


def test_a_saved_password_is_0600_last_in_precedence_and_only_for_its_profile(
    cfg: Path,
) -> None:
    assert "password" not in cfg.read_text()  # nothing stores one unless asked
    save_profile("work", path=cfg, password="saved-pw-1")
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert load_profile("work", cfg)["password"] == "saved-pw-1"
    s = resolve_settings(config_path=cfg, env={})
    assert (s.username, s.password, s.token) == ("bob", "saved-pw-1", TOKEN_A)
    assert "saved-pw-1" not in repr(s) and "saved-pw-1" not in str(s)
    # argument > environment > profile
    assert resolve_settings(config_path=cfg, env={"CONCORD_PASSWORD": "e"}).password == "e"
    s = resolve_settings(password="a", config_path=cfg, env={"CONCORD_PASSWORD": "e"})
    assert s.password == "a"
    # the profile's own server and user, however spelled: kept
    same = resolve_settings("work.example:8080/", username="bob", config_path=cfg, env={})
    assert (same.password, same.token) == ("saved-pw-1", TOKEN_A)
    # never sent to another server or as another user
    assert resolve_settings("http://other.example", config_path=cfg, env={}).password is None
    assert resolve_settings(config_path=cfg, env={"CONCORD_SERVER": "http://o"}).password is None
    assert resolve_settings(username="carol", config_path=cfg, env={}).password is None
    assert resolve_settings(config_path=cfg, env={"CONCORD_USERNAME": "c"}).password is None
    # a profile without its own server does not lend its password to one given
    save_profile("bare", path=cfg, username="bob", password="bare-pw-1")
    bare = resolve_settings("http://x.example", profile="bare", config_path=cfg, env={})
    assert bare.password is None
    save_profile("work", path=cfg, password=None)
    assert "password" not in load_profile("work", cfg)
    assert "saved-pw-1" not in cfg.read_text()


def test_profiles_can_be_deleted(cfg: Path) -> None:
    assert delete_profile("work", cfg) is True
    assert delete_profile("work", cfg) is False
    assert load_profile("work", cfg) == {}
    assert load_profile("home", cfg)["username"] == "amy"


def test_missing_and_broken_files(tmp_path: Path) -> None:
    assert load_config(tmp_path / "nope.toml") == {}
    bad = tmp_path / "bad.toml"
    bad.write_text("[profiles\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize(
    ("server", "http", "ws"),
    [
        ("http://h:8080", "http://h:8080", "ws://h:8080/client"),
        ("https://h", "https://h", "wss://h/client"),
        ("https://h/prefix/", "https://h/prefix", "wss://h/prefix/client"),
        ("h:9", "http://h:9", "ws://h:9/client"),
    ],
)
def test_ws_url_is_derived(server: str, http: str, ws: str) -> None:
    s = Settings(server=server)
    assert s.base_url == http
    assert s.ws_url == ws == ws_url_for(server)


def test_bad_or_missing_server() -> None:
    with pytest.raises(UsageError, match="no Concord server"):
        _ = Settings().base_url
    with pytest.raises(UsageError, match="invalid server URL"):
        Settings(server="ftp://x?token=SECRET").base_url  # noqa: B018
    try:
        Settings(server="ftp://x?token=SECRET").base_url  # noqa: B018
    except UsageError as exc:
        assert "SECRET" not in str(exc)


def test_repr_hides_secrets() -> None:
    s = Settings(server="http://h", username="u", password="hunter2-pw", token="tok.en.value")
    assert "hunter2-pw" not in repr(s) and "tok.en.value" not in repr(s)
    assert "***" in repr(s)


def test_ssl_context(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert ssl_context(Settings(server="http://h")) is None
    ctx = ssl_context(Settings(server="https://h"))
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with caplog.at_level(logging.WARNING, logger="concordctl.config"):
        ctx = ssl_context(Settings(server="https://h", insecure=True))
    assert ctx is not None and ctx.verify_mode == ssl.CERT_NONE
    assert any("verification is OFF" in r.getMessage() for r in caplog.records)
    with pytest.raises(UsageError, match="cannot load CA"):
        ssl_context(Settings(server="https://h", ca_cert=str(tmp_path / "missing.pem")))
