"""The platform's Redis Functions library: its declaration, and reading it back from
`FUNCTION LIST`. It runs against real Redis in tests/integration (test_acl_rules.py,
test_publish_function.py, test_sse_proxy.py)."""

from __future__ import annotations

import re

from redisops import functions


def test_the_library_names_itself_and_registers_only_the_publish_function() -> None:
    first, _, body = functions.CODE.partition("\n")
    assert first == f"#!lua name={functions.LIBRARY}"
    assert re.findall(r"function_name\s*=\s*'([^']+)'", body) == [functions.PUBLISH_ONCE]
    assert body.count("redis.register_function") == 1


def test_the_publish_function_takes_no_flags_so_it_is_refused_over_maxmemory() -> None:
    # allow-oom would let it write past maxmemory; no-writes would refuse its XADD.
    assert "flags" not in functions.CODE
    assert "allow-oom" not in functions.CODE
    assert "no-writes" not in functions.CODE


def test_the_library_logs_nothing_and_calls_only_what_it_needs() -> None:
    assert "redis.log" not in functions.CODE
    called = set(re.findall(r"redis\.p?call\('([A-Z]+)'", functions.CODE))
    assert called == {"GET", "XTRIM", "SET"}  # XADD is called through unpack(xadd)
    assert "'XADD'" in functions.CODE


def test_libraries_reads_function_list_replies_in_every_shape() -> None:
    code = functions.CODE
    as_dicts = [
        {"library_name": "redisplatform", "engine": "LUA", "functions": [], "library_code": code},
        {"library_name": "other", "engine": "LUA", "functions": [], "library_code": "x"},
    ]
    as_lists = [
        [b"library_name", b"redisplatform", b"engine", b"LUA", b"functions", [],
         b"library_code", code.encode()],
    ]  # fmt: skip
    without_code = [{"library_name": "redisplatform", "engine": "LUA", "functions": []}]
    assert functions.libraries(as_dicts) == {"redisplatform": code, "other": "x"}
    assert functions.libraries(as_lists) == {"redisplatform": code}
    assert functions.libraries(without_code) == {"redisplatform": None}
    assert functions.libraries([]) == {}
