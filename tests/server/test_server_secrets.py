"""Secrets: no abbreviated flags, no short tokens, and the token never shows in what the server reports."""

from __future__ import annotations

import pytest

from nodegraph.cli import build_parser, main
from nodegraph.server.settings import MIN_TOKEN_LENGTH, TOKEN_ENV, ServerSettings, check_token, redact_argv

SECRET = "k9V2-very-secret-token-0123456789"


def test_abbreviated_flags_are_refused(capsys):
    for argv in (["serve", "--tok", SECRET], ["serve", "--to", SECRET], ["serve", "--listen", "0.0.0.0", "--tok=x"]):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(argv)
        assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    assert build_parser().parse_args(["serve", "--token", SECRET]).token == SECRET


@pytest.mark.parametrize("source", ["flag", "env"])
def test_short_tokens_are_refused_with_the_fix(monkeypatch, capsys, tmp_path, source):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    argv = ["serve", "--home", str(tmp_path), "--listen", "0.0.0.0", "--port", "1", "--backend", "local"]
    if source == "flag":
        argv += ["--token", "a"]
    else:
        monkeypatch.setenv(TOKEN_ENV, "a" * (MIN_TOKEN_LENGTH - 1))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"use at least {MIN_TOKEN_LENGTH}" in err and "Traceback" not in err
    check_token("x" * MIN_TOKEN_LENGTH)  # long enough
    with pytest.raises(ValueError, match="1 character"):
        check_token("a")


def test_redact_argv_hides_every_form(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment-0123")
    argv = ["nodegraph", "serve", "--token", SECRET, f"--token={SECRET}", "--tok", SECRET, f"--tok={SECRET}",
            "--port", "8188", "--note=from-the-environment-0123", "--listen", "0.0.0.0"]
    assert redact_argv(argv) == ["nodegraph", "serve", "--token", "***", "--token=***", "--tok", "***", "--tok=***",
                                 "--port", "8188", "***", "--listen", "0.0.0.0"]
    # Settings redact what they hold, so nothing later can report the secret.
    settings = ServerSettings(token=SECRET, argv=["x", "-", f"prefix{SECRET}"])
    assert SECRET not in repr(settings.argv)


@pytest.mark.asyncio
async def test_system_stats_never_shows_the_token(make_client, engine, monkeypatch):
    env_secret = "env-token-abcdefghijklmnop"
    monkeypatch.setenv(TOKEN_ENV, env_secret)
    client = await make_client(engine, token=SECRET, argv=["nodegraph", "serve", "--token", SECRET,
                                                           f"--token={SECRET}", "--home", "h", f"--x={env_secret}"])
    resp = await client.get("/system_stats", headers={"Authorization": f"Bearer {SECRET}"})
    text = await resp.text()
    assert resp.status == 200, text
    assert SECRET not in text and env_secret not in text
    argv = (await resp.json())["system"]["argv"]
    assert argv[:5] == ["nodegraph", "serve", "--token", "***", "--token=***"]
