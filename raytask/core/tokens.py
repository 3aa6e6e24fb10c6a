"""API tokens as the config gives them, and the tenant name of each.

A token comes from ``api_tokens`` (a list, a ``{name: token}`` mapping, or the path of a
tokens file), ``api_tokens_file`` or ``RAYTASK_API_TOKENS`` (comma-separated). A tokens file
has one token a line, alone or after its tenant's name (``NAME TOKEN``); blank lines and
``#`` lines are skipped. A token without a name is ``token-1``, ``token-2``, … in the order
they come; one name may have several tokens (a rotation). ``admin_tokens`` are accepted too
(their tasks belong to the tenant ``admin`` unless a name is given above).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from .errors import ConfigError

TOKENS_ENV = "RAYTASK_API_TOKENS"
_TOKEN = re.compile(r"[\x21-\x2b\x2d-\x7e]{16,512}")
TOKEN_RULE = "an API token is 16 to 512 visible ASCII characters, without spaces or ','"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
NAME_RULE = "a tenant name is 1 to 64 letters, digits, '_', '.', '@' or '-', from a letter or digit"
ADMIN = "admin"  # the tenant of an admin token no name is given for


def check_token(token: str, where: str) -> str:
    """``token`` if it can be an API token: 16 to 512 visible ASCII characters, no
    ``,`` (``RAYTASK_API_TOKENS`` separates tokens with it).

    Raises:
        ValueError: it cannot; the message names ``where`` it is, never what it is.
    """
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"{where}: {TOKEN_RULE}")
    return token


def check_name(name: str, where: str) -> str:
    """``name`` if it can be a tenant's name.

    Raises:
        ValueError: it cannot (the message names ``where``).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{where}: {NAME_RULE}")
    return name


def token_lines(text: str, where: str) -> list[tuple[str | None, str]]:
    """The ``(name or None, token)`` of each line of a tokens file.

    Raises:
        ValueError: a line is no token (the message names the line, never its text).
    """
    found: list[tuple[str | None, str]] = []
    for number, line in enumerate(map(str.strip, text.splitlines()), 1):
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        here = f"line {number} of {where}"
        if len(parts) == 2:
            found.append((check_name(parts[0], here), check_token(parts[1], here)))
        else:
            found.append((None, check_token(line, here)))
    return found


def given_tokens(value: Iterable[str] | Mapping[str, str]) -> list[tuple[str | None, str]]:
    """The ``(name or None, token)`` pairs of an ``api_tokens`` list or mapping.

    Raises:
        ValueError: a name or token is malformed (the message says where, never what).
    """
    if isinstance(value, Mapping):
        return [
            (check_name(name, "api_tokens"), check_token(token, f"api_tokens[{name}]"))
            for name, token in value.items()
        ]
    return [(None, check_token(token, f"api_tokens[{i}]")) for i, token in enumerate(value)]


def named_tokens(
    given: list[tuple[str | None, str]], files: Iterable[str], admins: Iterable[str]
) -> dict[str, str]:
    """Every accepted token and its tenant: ``given`` (the config's pairs), the tokens
    ``files``, ``RAYTASK_API_TOKENS``, then the ``admins`` not named before.

    Raises:
        ConfigError: a file cannot be read, or a token is malformed (the message says
            where, never what).
    """
    pairs = list(given)
    try:
        for path in files:
            with open(path, encoding="utf-8") as text:
                pairs += token_lines(text.read(), path)
        env = os.environ.get(TOKENS_ENV, "")
        for number, token in enumerate(env.split(",") if env.strip() else (), 1):
            pairs.append((None, check_token(token.strip(), f"item {number} of {TOKENS_ENV}")))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"invalid raytask API tokens: {exc}") from None
    names: dict[str, str] = {}
    unnamed = 0
    for name, token in pairs:
        if token in names:
            continue
        if name is None:
            unnamed += 1
            name = f"token-{unnamed}"
        names[token] = name
    for token in admins:
        names.setdefault(token, ADMIN)
    return names
