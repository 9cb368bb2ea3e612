"""The Memos container's environment: clear variables, secret files, and the entrypoint wrapper.

Clear variables are visible to `docker inspect`, so they hold nothing secret. The DSN reaches the app
through `MEMOS_DSN_FILE`, which the image's entrypoint supports. The AI keys have no `_FILE` support
upstream, so the container starts a small BusyBox `sh` wrapper that reads each `<NAME>_FILE` into
`<NAME>` and then execs the image's own entrypoint: the keys live in files uploaded into the
container (mode 0400, owned by the app's uid) and in the app process's environment, never in the
container's configuration.
"""

from __future__ import annotations

import shlex

from lib.ai import API_KEYS, AiPlan

APP_UID = 10001
APP_PORT = 5230
DATA_DIR = "/var/opt/memos"
SECRETS_DIR = "/run/memos-secrets"
DSN_FILE = f"{SECRETS_DIR}/dsn"
WRAPPER_PATH = "/usr/local/bin/memos-secret-env"
IMAGE_ENTRYPOINT = ("/usr/local/memos/entrypoint.sh", "/usr/local/memos/memos")
HEALTH_URL = f"http://127.0.0.1:{APP_PORT}/healthz"


def key_file(provider: str) -> str:
    return f"{SECRETS_DIR}/{provider}-api-key"


def gomemlimit_mib(memory_mib: int) -> int:
    """The Go runtime's soft memory limit inside a container limit.

    Formula: 90 % of the container limit, rounded down to a whole MiB.
    Source: the Go runtime's GOMEMLIMIT guidance: leave headroom for memory the Go heap limit does
    not cover (goroutine stacks, cgo, the binary). Caveat: a single allocation larger than the
    headroom (a huge image upload) can still reach the container limit and be OOM-killed.
    """
    return memory_mib * 9 // 10


def app_environment(ai: AiPlan, *, instance_url: str, timezone: str, memory_mib: int) -> dict[str, str]:
    """Clear environment variables for the app container; nothing in here is secret."""
    env = {
        "MEMOS_MODE": "prod",
        "MEMOS_PORT": str(APP_PORT),
        "MEMOS_DRIVER": "postgres",
        "MEMOS_DSN_FILE": DSN_FILE,
        "MEMOS_INSTANCE_URL": instance_url,
        "TZ": timezone,
        "GOMEMLIMIT": f"{gomemlimit_mib(memory_mib)}MiB",
        "MEMOS_AI_ENABLED": "true" if ai.enabled else "false",
    }
    if ai.enabled:
        env |= {
            "MEMOS_AI_EMBEDDING_PROVIDER": ai.embedding_provider,
            "MEMOS_AI_LLM_PROVIDER": ai.llm_provider,
            "MEMOS_AI_EMBEDDING_MODEL": ai.embedding_model,
            "MEMOS_AI_RERANK_MODEL": ai.rerank_model,
            "MEMOS_AI_LLM_MODEL": ai.llm_model,
            "MEMOS_AI_SILICONFLOW_BASE_URL": ai.base_urls["siliconflow"],
            "MEMOS_AI_DEEPSEEK_BASE_URL": ai.base_urls["deepseek"],
            "MEMOS_AI_OPENAI_BASE_URL": ai.base_urls["openai"],
            "MEMOS_AI_OLLAMA_BASE_URL": ai.base_urls["ollama"],
        }
        for provider in ai.key_providers:
            env[f"{API_KEYS[provider][1]}_FILE"] = key_file(provider)
    return env


def secret_env_wrapper() -> str:
    """A POSIX/BusyBox sh script: `<NAME>_FILE` -> `<NAME>` for each API key, then the real entrypoint.

    Setting both `<NAME>` and `<NAME>_FILE` is an error, as it is for MEMOS_DSN in the image's own
    entrypoint. Variable names are fixed here, so `eval` only ever sees these literals.
    """
    names = " ".join(variable for _, variable in API_KEYS.values())
    entrypoint = " ".join(shlex.quote(part) for part in IMAGE_ENTRYPOINT)
    return f"""\
#!/bin/sh
# Reads each API key from the file named by <NAME>_FILE into <NAME>, then runs the image's entrypoint.
set -eu
for name in {names}; do
  eval "file=\\${{${{name}}_FILE:-}}"
  [ -n "$file" ] || continue
  eval "direct=\\${{${{name}}:-}}"
  if [ -n "$direct" ]; then
    echo "memos-secret-env: both $name and ${{name}}_FILE are set; set only one" >&2
    exit 1
  fi
  if [ ! -r "$file" ]; then
    echo "memos-secret-env: ${{name}}_FILE points at $file, which is missing or unreadable" >&2
    exit 1
  fi
  value=$(cat "$file")
  export "$name=$value"
  unset "${{name}}_FILE"
done
unset file direct value
exec {entrypoint} "$@"
"""


def dsn(*, user: str, password: str, host: str, port: int, database: str) -> str:
    """The app's connection string; the generated password is alphanumeric, so it needs no escaping."""
    if not password.isalnum():
        raise ValueError("the app password must be alphanumeric to sit in a DSN unescaped")
    return f"postgres://{user}:{password}@{host}:{port}/{database}?sslmode=disable"
