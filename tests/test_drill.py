"""The integrity drill, short form (issue 10): 16 clients, 2,000 mixed operations over three
providers while one is stopped for 5 s, the gateway is SIGKILLed and restarted, and the index
is deleted and rebuilt by `reindex` while the clients go on. `scripts/drill` runs the full one
(32 clients, 10,000 operations, 10 s); docs/reliability.md has its figures."""

import drill


def test_nothing_lost_stale_or_resurrected(logs):
    result = drill.against_server(logs / "drill", clients=16, operations=2_000, stop_for=5.0)
    print(result.line())
    assert result.ok(), "\n".join([result.line(), *result.problems])
    assert result.acked > 1_000, result.line()
