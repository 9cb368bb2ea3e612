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
    app_share_without_database,
    hnsw_build_mib,
    hnsw_index_mib,
    plan_memory,
    shared_buffers_floor_mib,
)

PROD_HOST = Host(vcpus=2, memory_mib=2048)
PROD_RESERVES = Reserves(os_mib=320, docker_mib=128, app_mib=512, proxy_mib=0, backup_mib=64)
PROD_WORKLOAD = Workload(expected_embeddings=40_000, max_connections=30)


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
    plan = plan_memory(PROD_HOST, PROD_RESERVES, Workload(10_000, 30))
    # maintenance = max(64, ceil16(10 000 x 4820 B x 1.1 = 50.6 MiB)) = 64 MiB
    # shared = clamp(ceil16(79 x 1.25), 192, 400) = 192; shm = ceil(192 + 6 + 16 + 7.5) = 222
    # committed = 222 + 64 + 4 + 72 + 120 + 32 + 52 = 566; work_mem = floor64(458 x 1024 / 60) = 7808 kB
    assert (plan.shared_buffers_mib, plan.maintenance_work_mem_mib, plan.work_mem_kb) == (192, 64, 7808)


def test_the_build_is_sized_for_vector_1024_as_the_app_stores_it() -> None:
    # 100 000 x (1024 x 4 + 724) B x 1.1 = 505.6 MiB -> 512 (the app's column is vector(1024), 4 B a dimension)
    assert hnsw_build_mib(Workload(100_000, 30)) == 512


def test_too_many_embeddings_for_the_host_names_the_key_and_real_remedies() -> None:
    with pytest.raises(ConfigError) as raised:
        plan_memory(PROD_HOST, PROD_RESERVES, Workload(100_000, 30))
    assert str(raised.value) == (
        "memos:expectedEmbeddings: 100000 vector(1024) rows need 512 MiB for an in-memory HNSW build "
        "(4.8 KB each), which does not fit the 1024 MiB database container next to 30 connections; "
        "choose a larger memos:instanceType, lower memos:expectedEmbeddings, or move the database to "
        "ApsaraDB RDS (memos:database rds)"
    )
    assert "halfvec" not in str(raised.value)
    # The same rows fit a 4 GiB host.
    plan_memory(Host(vcpus=2, memory_mib=4096), PROD_RESERVES, Workload(100_000, 30))


def test_too_many_connections_names_the_connections_key() -> None:
    with pytest.raises(ConfigError) as raised:
        plan_memory(PROD_HOST, PROD_RESERVES, Workload(10_000, 120))
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
    connections=st.integers(min_value=10, max_value=500),
)
def test_any_accepted_plan_keeps_its_worst_case_inside_the_container(
    vcpus: int, memory: int, app: int, proxy: int, embeddings: int, connections: int
) -> None:
    reserves = Reserves(os_mib=320, docker_mib=128, app_mib=app, proxy_mib=proxy, backup_mib=64)
    try:
        plan = plan_memory(Host(vcpus, memory), reserves, Workload(embeddings, connections))
    except ConfigError:
        return
    assert plan.worst_case_mib() <= plan.database_limit_mib
    assert plan.work_mem_kb >= 1024
    # The cache gives way to work_mem, never the other way round.
    if plan.shared_buffers_mib > shared_buffers_floor_mib(plan.database_limit_mib):
        assert plan.work_mem_kb >= PREFERRED_WORK_MEM_KB
    assert plan.maintenance_work_mem_mib >= hnsw_build_mib(Workload(embeddings, connections))
    assert plan.shm_size_mib >= plan.maintenance_work_mem_mib


# The plans for the shapes `memos:instanceType` can move to, with the prod reserves (no proxy) and the
# default workload (40 000 embeddings, 30 connections). The instance type's lookup gives the shape.


def test_prod_plan_for_a_2c4g_host() -> None:
    plan = plan_memory(Host(vcpus=2, memory_mib=4096), PROD_RESERVES, PROD_WORKLOAD)
    # limit       = 4096 - 1024                                              = 3072 MiB
    # shared      = clamp(400 (index x 1.25), 608 (20 %), 1228 (40 %))       = 608 MiB
    # wal_buffers = min(16, 608 / 32)                                        = 16 MiB
    # shm         = ceil(608 + 16 + 16 + 7.5)                                = 648 MiB
    # committed   = 648 + 208 + 4 + 72 + 120 + 32 + ceil(153.6)              = 1238 MiB
    # work_mem    = floor64((3072 - 1238) x 1024 / 60 = 31300.3)             = 31296 kB
    assert (plan.database_limit_mib, plan.shared_buffers_mib, plan.wal_buffers_mib) == (3072, 608, 16)
    assert (plan.shared_memory_mib, plan.maintenance_work_mem_mib, plan.work_mem_kb) == (648, 208, 31296)
    assert (plan.autovacuum_max_workers, plan.io_workers, plan.effective_cache_size_mib) == (2, 2, 2304)
    assert plan.worst_case_mib() <= plan.database_limit_mib


def test_prod_plan_for_a_4c8g_host() -> None:
    plan = plan_memory(Host(vcpus=4, memory_mib=8192), PROD_RESERVES, PROD_WORKLOAD)
    # limit       = 8192 - 1024                                              = 7168 MiB
    # shared      = clamp(400, 1424 (20 %: floor16(1433.6)), 2864 (40 %))    = 1424 MiB
    # shm         = ceil(1424 + 16 + 16 + 7.5)                               = 1464 MiB
    # autovacuum  = 3 workers on more than 2 vCPUs: 3 x (32 + 4)             = 108 MiB
    # aux         = (6 + 4 io workers) x 4                                   = 40 MiB
    # committed   = 1464 + 208 + 4 + 108 + 120 + 40 + ceil(358.4)            = 2303 MiB
    # work_mem    = floor64((7168 - 2303) x 1024 / 60 = 83029.3)             = 83008 kB
    assert (plan.database_limit_mib, plan.shared_buffers_mib, plan.shared_memory_mib) == (7168, 1424, 1464)
    assert (plan.work_mem_kb, plan.autovacuum_max_workers, plan.io_workers) == (83008, 3, 4)
    assert plan.effective_cache_size_mib == 5376
    assert plan.worst_case_mib() <= plan.database_limit_mib


@pytest.mark.parametrize(
    ("host", "embeddings", "connections"),
    [(Host(2, 2048), 88_600, 70), (Host(2, 4096), 389_211, 313), (Host(4, 8192), 990_431, 798)],
    ids=["2C2G", "2C4G", "4C8G"],
)
def test_what_each_shape_holds_at_most(host: Host, embeddings: int, connections: int) -> None:
    # The README's "when you outgrow the box" quotes these: the most embeddings whose HNSW build fits in
    # memory next to 30 connections, and the most connections next to 40 000 embeddings.
    plan_memory(host, PROD_RESERVES, Workload(embeddings, 30))
    with pytest.raises(ConfigError):
        plan_memory(host, PROD_RESERVES, Workload(embeddings + 1, 30))
    plan_memory(host, PROD_RESERVES, Workload(40_000, connections))
    with pytest.raises(ConfigError):
        plan_memory(host, PROD_RESERVES, Workload(40_000, connections + 1))


def test_without_a_database_container_the_app_gets_what_is_left() -> None:
    # 2048 - (320 + 128 + 0 proxy) = 1600 MiB; no database or dump container runs with RDS
    assert app_share_without_database(PROD_HOST, PROD_RESERVES) == 1600
    with pytest.raises(ConfigError) as raised:
        app_share_without_database(Host(2, 1024), Reserves(320, 128, 640, 64, 0))
    assert str(raised.value).startswith("memos:appMemoryMb: 640 MiB does not fit a 1024 MiB host")
