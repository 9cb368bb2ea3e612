"""The memory planner's arithmetic, pinned for the hosts this project deploys to.

Each pinned plan shows its working in comments; the property test checks that any plan the planner
accepts keeps its worst case inside the database container's limit.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.errors import ConfigError
from lib.tuning import (
    PREFERRED_WORK_MEM_KB,
    Host,
    Reserves,
    Workload,
    hnsw_build_mib,
    hnsw_index_mib,
    plan_memory,
    shared_buffers_floor_mib,
)

PROD_HOST = Host(vcpus=2, memory_mib=2048)
PROD_RESERVES = Reserves(os_mib=320, docker_mib=128, app_mib=512, proxy_mib=0, backup_mib=64)
PROD_WORKLOAD = Workload(expected_embeddings=40_000, storage="vector", max_connections=30)


def test_prod_plan_for_the_2c2g_host() -> None:
    plan = plan_memory(PROD_HOST, PROD_RESERVES, PROD_WORKLOAD)
    # limit        = 2048 - (320 + 128 + 512 + 0 + 64)                      = 1024 MiB
    assert plan.database_limit_mib == 1024
    # index        = 40 000 rows / 1 per 8 kB page                         = 313 MiB
    assert hnsw_index_mib(PROD_WORKLOAD) == 313
    # shared       = clamp(ceil16(313 x 1.25 = 391.3), 192 (20 %), 400 (40 %)) = 400 MiB
    assert plan.shared_buffers_mib == 400
    # wal_buffers  = 400 / 32 = 12.5                                        = 12 MiB
    assert plan.wal_buffers_mib == 12
    # shm estimate = ceil(400 + 12 + 16 + 0.25 x 30)                         = 436 MiB
    assert plan.shared_memory_mib == 436
    # maintenance  = ceil16(40 000 x (1024 x 4 + 724) B x 1.10 = 202.3 MiB)   = 208 MiB
    assert plan.maintenance_work_mem_mib == 208
    # committed    = 436 + 208 + 1x4 + 2x(32+4) + 30x4 + (6+2)x4 + ceil(51.2) = 924 MiB
    # work_mem     = floor64((1024 - 924) x 1024 kB / (30 x 2) = 1706.7)    = 1664 kB (>= 1536: no give-way)
    assert plan.work_mem_kb == 1664
    assert plan.autovacuum_max_workers == 2
    assert plan.autovacuum_work_mem_mib == 32
    assert plan.max_parallel_maintenance_workers == 1
    # shm_size     = ceil16(208 + 64)                                       = 272 MiB
    assert plan.shm_size_mib == 272
    # cache        = floor16(1024 x 0.75)                                   = 768 MiB
    assert plan.effective_cache_size_mib == 768
    assert plan.io_workers == 2
    assert plan.worst_case_mib() <= plan.database_limit_mib


def test_prod_plan_with_the_https_proxy() -> None:
    reserves = Reserves(os_mib=320, docker_mib=128, app_mib=512, proxy_mib=64, backup_mib=64)
    plan = plan_memory(PROD_HOST, reserves, PROD_WORKLOAD)
    # limit = 960; shared = clamp(400, 192, 384 (40 %)) = 384 -> work_mem 896 kB, below 1536, so shared
    # gives way: 368 -> 1216 kB, 352 -> 1472 kB, 336 -> committed = 370 + 208 + 4 + 72 + 120 + 32 + 48 = 854,
    # work_mem = floor64((960 - 854) x 1024 / 60 = 1809) = 1792 kB
    assert (plan.database_limit_mib, plan.shared_buffers_mib, plan.work_mem_kb) == (960, 336, 1792)


def test_dev_plan_with_ten_thousand_embeddings() -> None:
    plan = plan_memory(PROD_HOST, PROD_RESERVES, Workload(10_000, "vector", 30))
    # maintenance = max(64, ceil16(10 000 x 4820 B x 1.1 = 50.6 MiB)) = 64 MiB
    # shared = clamp(ceil16(79 x 1.25), 192, 400) = 192; shm = ceil(192 + 6 + 16 + 7.5) = 222
    # committed = 222 + 64 + 4 + 72 + 120 + 32 + 52 = 566; work_mem = floor64(458 x 1024 / 60) = 7808 kB
    assert (plan.shared_buffers_mib, plan.maintenance_work_mem_mib, plan.work_mem_kb) == (192, 64, 7808)


def test_halfvec_halves_the_vector_part_of_the_graph() -> None:
    # 100 000 x (1024 x 2 + 724) B x 1.1 = 290.8 MiB -> 304; as vector it would be 505.6 -> 512
    assert hnsw_build_mib(Workload(100_000, "halfvec", 30)) == 304
    assert hnsw_build_mib(Workload(100_000, "vector", 30)) == 512


def test_too_many_embeddings_for_the_host_names_the_key_and_halfvec() -> None:
    with pytest.raises(ConfigError) as raised:
        plan_memory(PROD_HOST, PROD_RESERVES, Workload(100_000, "vector", 30))
    assert raised.value.key == "memos:expectedEmbeddings"
    assert "use memos:embeddingStorage halfvec" in str(raised.value)
    # The same rows as halfvec fit.
    plan_memory(PROD_HOST, PROD_RESERVES, Workload(60_000, "halfvec", 30))


def test_too_many_connections_names_the_connections_key() -> None:
    with pytest.raises(ConfigError) as raised:
        plan_memory(PROD_HOST, PROD_RESERVES, Workload(10_000, "vector", 120))
    assert raised.value.key == "memos:dbMaxConnections"


def test_settings_render_as_flags_in_a_stable_order() -> None:
    plan = plan_memory(PROD_HOST, PROD_RESERVES, PROD_WORKLOAD)
    flags = plan.command_flags()
    assert flags[:4] == ["-c", "max_connections=30", "-c", "shared_buffers=400MB"]
    assert flags == plan_memory(PROD_HOST, PROD_RESERVES, PROD_WORKLOAD).command_flags()


@settings(max_examples=400, deadline=None)
@given(
    vcpus=st.integers(min_value=1, max_value=16),
    memory=st.integers(min_value=1024, max_value=65536),
    app=st.integers(min_value=128, max_value=4096),
    proxy=st.sampled_from([0, 64, 128]),
    embeddings=st.integers(min_value=0, max_value=2_000_000),
    storage=st.sampled_from(["vector", "halfvec"]),
    connections=st.integers(min_value=10, max_value=500),
)
def test_any_accepted_plan_keeps_its_worst_case_inside_the_container(
    vcpus: int, memory: int, app: int, proxy: int, embeddings: int, storage: str, connections: int
) -> None:
    reserves = Reserves(os_mib=320, docker_mib=128, app_mib=app, proxy_mib=proxy, backup_mib=64)
    try:
        plan = plan_memory(Host(vcpus, memory), reserves, Workload(embeddings, storage, connections))  # type: ignore[arg-type]
    except ConfigError:
        return
    assert plan.worst_case_mib() <= plan.database_limit_mib
    assert plan.work_mem_kb >= 1024
    # The cache gives way to work_mem, never the other way round.
    if plan.shared_buffers_mib > shared_buffers_floor_mib(plan.database_limit_mib):
        assert plan.work_mem_kb >= PREFERRED_WORK_MEM_KB
    assert plan.maintenance_work_mem_mib >= hnsw_build_mib(Workload(embeddings, storage, connections))  # type: ignore[arg-type]
    assert plan.shm_size_mib >= plan.maintenance_work_mem_mib
