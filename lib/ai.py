"""The app's AI providers: which combinations work, and which API keys each one needs.

Encodes the app's contract (see the configuration reference, docs/configuration.md): embeddings come from
SiliconFlow or OpenAI and must have 1024 dimensions; chat comes from DeepSeek, OpenAI or Ollama;
rerank and intent classification always go through SiliconFlow and are on only when its key is set.
Two upstream traps are rejected here rather than deployed: `siliconflow` as chat provider and `ollama`
as embedding provider both pass the app's own checks and then silently disable every AI feature.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from lib.errors import ConfigError

EMBEDDING_PROVIDERS = ("siliconflow", "openai")
LLM_PROVIDERS = ("deepseek", "openai", "ollama")

#: Config key of each provider's API key, and the app variable it feeds.
API_KEYS: Mapping[str, tuple[str, str]] = {
    "siliconflow": ("siliconflowApiKey", "MEMOS_AI_SILICONFLOW_API_KEY"),
    "deepseek": ("deepseekApiKey", "MEMOS_AI_DEEPSEEK_API_KEY"),
    "openai": ("openaiApiKey", "MEMOS_AI_OPENAI_API_KEY"),
}

#: Embedding models known to return a fixed number of dimensions other than 1024. The app stores
#: `vector(1024)`, so any of these fails on the first insert. Models that honour the `dimensions`
#: request (OpenAI text-embedding-3-*, Qwen3-Embedding) are fine and are not listed.
WRONG_DIMENSION_MODELS: Mapping[str, int] = {
    "nomic-embed-text": 768,
    "text-embedding-ada-002": 1536,
    "all-minilm": 384,
    "BAAI/bge-small-zh-v1.5": 512,
    "BAAI/bge-small-en-v1.5": 384,
    "BAAI/bge-base-zh-v1.5": 768,
    "BAAI/bge-base-en-v1.5": 768,
    "netease-youdao/bce-embedding-base_v1": 768,
    "jinaai/jina-embeddings-v2-base-en": 768,
    "sentence-transformers/all-MiniLM-L6-v2": 384,
}

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})  # noqa: S104 (a deny-list)


@dataclass(frozen=True)
class AiPlan:
    """A validated AI configuration: what the app is told, and which API keys it gets."""

    enabled: bool
    embedding_provider: str
    llm_provider: str
    embedding_model: str
    rerank_model: str
    llm_model: str
    base_urls: Mapping[str, str]
    #: Providers whose API key the app receives (the config key is API_KEYS[provider][0]).
    key_providers: tuple[str, ...]


def _check_url(key: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"{value!r} is not an http(s) URL, e.g. https://api.deepseek.com")


def plan_ai(
    *,
    enabled: bool,
    embedding_provider: str,
    llm_provider: str,
    embedding_model: str,
    rerank_model: str,
    llm_model: str,
    base_urls: Mapping[str, str],
    configured_keys: Collection[str],
    stack: str,
) -> AiPlan:
    """Validate the AI settings; `configured_keys` are the providers whose API key config is set."""
    if embedding_provider == "ollama":
        raise ConfigError(
            "aiEmbeddingProvider",
            "'ollama' passes the app's validation but its embeddings fail at runtime and every AI "
            "feature is silently disabled; use siliconflow or openai",
        )
    if embedding_provider not in EMBEDDING_PROVIDERS:
        raise ConfigError(
            "aiEmbeddingProvider",
            f"unknown provider {embedding_provider!r}; use one of {', '.join(EMBEDDING_PROVIDERS)}",
        )
    if llm_provider == "siliconflow":
        raise ConfigError(
            "aiLlmProvider",
            "'siliconflow' is not a chat provider the app supports: upstream leaves the chat key "
            "unset for it, its AI config validation fails and all AI features are disabled; use "
            "deepseek, openai or ollama (SiliconFlow still serves embeddings and rerank)",
        )
    if llm_provider not in LLM_PROVIDERS:
        raise ConfigError("aiLlmProvider", f"unknown provider {llm_provider!r}; use one of {', '.join(LLM_PROVIDERS)}")
    if embedding_model in WRONG_DIMENSION_MODELS:
        raise ConfigError(
            "aiEmbeddingModel",
            f"{embedding_model!r} returns {WRONG_DIMENSION_MODELS[embedding_model]}-dimensional "
            "vectors but the app stores vector(1024); use a 1024-dim model such as BAAI/bge-m3 "
            "(siliconflow) or text-embedding-3-small (openai)",
        )
    for name, url in base_urls.items():
        _check_url(f"ai{name.capitalize()}BaseUrl", url)
    if llm_provider == "ollama" and (urlsplit(base_urls["ollama"]).hostname or "") in _LOOPBACK_HOSTS:
        raise ConfigError(
            "aiOllamaBaseUrl",
            f"{base_urls['ollama']!r} points at the app container itself; use an address the "
            "container can reach, e.g. http://host.docker.internal:11434 or the Ollama host's IP",
        )

    if not enabled:
        return AiPlan(
            False, embedding_provider, llm_provider, embedding_model, rerank_model, llm_model, dict(base_urls), ()
        )

    needed = [embedding_provider] + ([llm_provider] if llm_provider in API_KEYS else [])
    for provider in needed:
        if provider not in configured_keys:
            config_key = API_KEYS[provider][0]
            role = "embeddings" if provider == embedding_provider else "chat"
            raise ConfigError(
                config_key,
                f"not set, but AI is on and {provider} serves {role}; run: "
                f"pulumi config set --secret memos:{config_key} <your-{provider}-key> --stack {stack}",
            )
    # SiliconFlow's key also switches on rerank and intent classification, so pass it whenever set.
    providers = tuple(p for p in API_KEYS if p in needed or (p == "siliconflow" and p in configured_keys))
    return AiPlan(
        True, embedding_provider, llm_provider, embedding_model, rerank_model, llm_model, dict(base_urls), providers
    )
