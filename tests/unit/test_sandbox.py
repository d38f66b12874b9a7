"""The wasmtime sandbox contains hostile modules and keeps working afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st

from spectral_core.errors import BudgetExceeded, ConfigError, ModuleTrap, SandboxError
from spectral_core.sandbox import Budget, CompiledModule, Result, Sandbox, _capi
from spectral_core.sandbox.wasm import Binding, CompiledWasm, WasmSandbox, self_test

MODULES = Path(__file__).resolve().parent.parent / "modules"


def wasm(name: str) -> bytes:
    """Assemble ``tests/modules/<name>.wat`` to a binary module."""
    return wasmtime.wat2wasm((MODULES / f"{name}.wat").read_text())


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=["capi", "public"])
def binding(request: pytest.FixtureRequest) -> str:
    """Every test using the sandbox runs on both call paths (ADR 0026): the C API fast path
    and wasmtime-py's public API must give the same results and the same errors."""
    return str(request.param)


@pytest.fixture(scope="module")
def sandbox(binding: Binding) -> Iterator[WasmSandbox]:
    with WasmSandbox(epoch_interval_ms=2, binding=binding) as sb:
        yield sb


def pooled_only(sandbox: WasmSandbox) -> None:
    """The pooling allocator (slots, a per-instance memory ceiling) exists on the C API
    path only: the public API cannot configure it."""
    if sandbox.binding == "public":
        pytest.skip("the pooling allocator is configured on the C API path only")


@pytest.fixture(scope="module")
def echo(sandbox: WasmSandbox) -> CompiledWasm:
    return sandbox.compile(wasm("echo"))


def assert_still_works(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    result = sandbox.run(echo, b'{"after":"hostile"}')
    assert result.value == {"after": "hostile"}


def test_wasm_sandbox_implements_protocol(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """WasmSandbox and its compiled modules satisfy the runtime-agnostic interfaces."""
    assert isinstance(sandbox, Sandbox)
    assert isinstance(echo, CompiledModule)
    assert len(echo.content_hash) == 64


def test_echo_round_trips_json(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """The ABI moves the input document in and the output document out unchanged."""
    doc = b'{"a":[1,2,3],"b":"\xc3\xa9"}'
    result = sandbox.run(echo, doc)
    assert isinstance(result, Result)
    assert result.output == doc
    assert result.value == {"a": [1, 2, 3], "b": "é"}
    assert result.usage.fuel_consumed > 0
    assert result.usage.memory_pages == 1
    assert result.usage.memory_bytes == 65536
    assert result.usage.wall_time_us >= 0


def test_decision_module_decides_from_input(sandbox: WasmSandbox) -> None:
    """A decision module's output depends on its input and is decoded JSON."""
    compiled = sandbox.compile(wasm("decision"))
    assert sandbox.run(compiled, b'{"risk":"low"}').value == {"decision": "approve"}
    assert sandbox.run(compiled, b'{"risk":"high"}').value == {"decision": "deny"}
    assert sandbox.run(compiled, b"{}").value == {"decision": "approve"}


def test_large_input_grows_memory_within_budget(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """An input larger than the initial memory is accepted when the module can grow."""
    doc = msgspec.json.encode({"blob": "x" * 100_000})
    result = sandbox.run(echo, doc, Budget(output_bytes=200_000))
    assert result.output == doc
    assert result.usage.memory_pages > 1


def test_no_state_leaks_between_calls(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """Every call gets a fresh instance: the bump allocator restarts at the same address."""
    first = sandbox.run(echo, b'{"n":1}')
    second = sandbox.run(echo, b'{"n":1}')
    assert first.usage.fuel_consumed == second.usage.fuel_consumed
    assert first.output == second.output


def test_no_guest_state_survives_a_call(sandbox: WasmSandbox) -> None:
    """A probe that leaves traces in a global, in memory inside and beyond the pool's
    memset window, in a grown page and in a data segment never sees them again: not after
    a normal call, not after a trap, not from another module sharing the pool."""
    probe = sandbox.compile(wasm("probe"))
    echo = sandbox.compile(wasm("echo"))
    for i in range(40):
        if i % 3 == 1:
            with pytest.raises(ModuleTrap):
                sandbox.run(probe, b"true")
        elif i % 3 == 2:
            big = b'{"x":"' + b"y" * 70_000 + b'"}'  # dirties pages 0 and 1
            assert sandbox.run(echo, big, Budget(output_bytes=len(big))).output == big
        else:
            assert sandbox.run(probe, b"{}").value == {"dirty": False}
    last = sandbox.run(probe, b"{}")
    assert last.usage.memory_pages == 2  # grown by the call itself, not inherited


def test_infinite_loop_exhausts_fuel(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """A module that never returns is stopped by the fuel budget."""
    compiled = sandbox.compile(wasm("infinite_loop"))
    with pytest.raises(BudgetExceeded) as info:
        sandbox.run(compiled, b"{}", Budget(fuel=1_000_000))
    assert info.value.budget == "fuel"
    assert_still_works(sandbox, echo)


def test_infinite_loop_hits_wall_clock_deadline(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """With ample fuel, the epoch deadline interrupts a spinning module on time."""
    compiled = sandbox.compile(wasm("infinite_loop"))
    started = time.monotonic()
    with pytest.raises(BudgetExceeded) as info:
        sandbox.run(compiled, b"{}", Budget(fuel=10**15, deadline_ms=50))
    elapsed = time.monotonic() - started
    assert info.value.budget == "deadline"
    assert 0.045 <= elapsed < 1.0
    assert_still_works(sandbox, echo)


def test_memory_bomb_hits_memory_cap(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """memory.grow past the cap is refused and the failure is reported as the memory budget."""
    compiled = sandbox.compile(wasm("memory_bomb"))
    with pytest.raises(BudgetExceeded) as info:
        sandbox.run(compiled, b"{}", Budget(memory_bytes=1024 * 1024))
    assert info.value.budget == "memory"
    assert_still_works(sandbox, echo)


def test_initial_memory_over_the_ceiling_is_refused_at_compile_time(
    sandbox: WasmSandbox, echo: CompiledWasm
) -> None:
    """A module declaring more initial memory (1 GiB) than the sandbox's per-instance
    ceiling can never run: it is refused when compiled, as the memory budget."""
    pooled_only(sandbox)
    with pytest.raises(BudgetExceeded) as info:
        sandbox.compile(wasm("big_memory"))
    assert info.value.budget == "memory"
    assert_still_works(sandbox, echo)


def test_initial_memory_over_the_call_budget_never_instantiates(
    sandbox: WasmSandbox, echo: CompiledWasm
) -> None:
    """A module whose initial memory (2 pages) fits the ceiling but not this call's memory
    budget (1 page) is refused at instantiation, as the memory budget."""
    two_pages = wasmtime.wat2wasm(
        (MODULES / "echo.wat")
        .read_text()
        .replace('(memory (export "memory") 1)', '(memory (export "memory") 2)')
    )
    compiled = sandbox.compile(two_pages)
    assert sandbox.run(compiled, b"{}").usage.memory_pages == 2
    with pytest.raises(BudgetExceeded) as info:
        sandbox.run(compiled, b"{}", Budget(memory_bytes=64 * 1024))
    assert info.value.budget == "memory"
    assert_still_works(sandbox, echo)


def test_call_budget_above_the_ceiling_is_refused(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """Instance slots are sized to the default budget's memory: a call asking for more
    memory is refused up front instead of being silently capped lower."""
    pooled_only(sandbox)
    with pytest.raises(SandboxError) as info:
        sandbox.run(echo, b"{}", Budget(memory_bytes=sandbox.default_budget.memory_bytes * 2))
    assert info.value.reason == "budget"


def test_deep_recursion_traps(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """Unbounded recursion overflows the guest stack and becomes a ModuleTrap."""
    compiled = sandbox.compile(wasm("deep_recursion"))
    with pytest.raises(ModuleTrap) as info:
        sandbox.run(compiled, b"{}", Budget(fuel=10**12, deadline_ms=2000))
    assert info.value.trap_code == "STACK_OVERFLOW"
    assert_still_works(sandbox, echo)


def test_guest_trap_is_module_trap(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """An ordinary guest fault (division by zero) is a ModuleTrap naming the trap code."""
    compiled = sandbox.compile(wasm("trap"))
    with pytest.raises(ModuleTrap) as info:
        sandbox.run(compiled, b"{}")
    assert info.value.reason == "trap"
    assert info.value.trap_code == "INTEGER_DIVISION_BY_ZERO"
    assert_still_works(sandbox, echo)


def test_huge_output_exceeds_output_budget(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """An output longer than the budget is refused before it is read."""
    compiled = sandbox.compile(wasm("huge_output"))
    with pytest.raises(BudgetExceeded) as info:
        sandbox.run(compiled, b"{}")
    assert info.value.budget == "output"
    assert info.value.size == 4 * 1024 * 1024
    assert_still_works(sandbox, echo)


def test_output_exactly_at_budget_is_accepted(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """The output limit is inclusive: a document of exactly output_bytes passes."""
    doc = b'"' + b"x" * 98 + b'"'
    assert sandbox.run(echo, doc, Budget(output_bytes=100)).output == doc
    with pytest.raises(BudgetExceeded):
        sandbox.run(echo, doc, Budget(output_bytes=99))


def nested(depth: int) -> bytes:
    """A JSON document of ``depth`` nested arrays around one number."""
    return b"[" * depth + b"1" + b"]" * depth


def test_output_nested_past_the_json_depth_is_a_budget_error(
    sandbox: WasmSandbox, echo: CompiledWasm
) -> None:
    """An output of 32,000 nested arrays is refused as the json_depth budget (never a
    RecursionError), and an output just past the budget's depth too; at the depth it
    passes."""
    compiled = sandbox.compile(wasm("deep_output"))
    with pytest.raises(BudgetExceeded) as info:
        sandbox.run(compiled, b"{}")
    assert info.value.budget == "json_depth"
    assert info.value.limit == Budget().json_depth == 128
    assert sandbox.run(echo, nested(128)).output == nested(128)
    with pytest.raises(BudgetExceeded) as info:
        sandbox.run(echo, nested(129))
    assert info.value.budget == "json_depth"
    wide = b"[" + b",".join([b'{"a":[1]}'] * 200) + b"]"  # many containers, depth 3
    assert sandbox.run(echo, wide, Budget(json_depth=3)).output == wide
    with pytest.raises(BudgetExceeded):
        sandbox.run(echo, wide, Budget(json_depth=2))
    assert_still_works(sandbox, echo)


def test_output_outside_memory_is_bad_abi(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """An output pointer beyond linear memory is a ModuleTrap, never a host read overflow."""
    compiled = sandbox.compile(wasm("bad_pointer"))
    with pytest.raises(ModuleTrap) as info:
        sandbox.run(compiled, b"{}")
    assert info.value.reason == "abi"
    assert_still_works(sandbox, echo)


def test_module_with_import_is_refused(sandbox: WasmSandbox) -> None:
    """A module declaring any import is refused at compile time, naming the import."""
    with pytest.raises(SandboxError) as info:
        sandbox.compile(wasm("with_import"))
    assert not isinstance(info.value, ModuleTrap | BudgetExceeded)
    assert info.value.reason == "imports"
    assert info.value.imports == ["env.now"]
    assert "env.now" in str(info.value)


def test_invalid_json_output_is_module_trap(sandbox: WasmSandbox, echo: CompiledWasm) -> None:
    """Output that is not valid JSON is a ModuleTrap with reason invalid_json."""
    compiled = sandbox.compile(wasm("invalid_json"))
    with pytest.raises(ModuleTrap) as info:
        sandbox.run(compiled, b"{}")
    assert info.value.reason == "invalid_json"
    assert_still_works(sandbox, echo)


def test_missing_export_is_bad_abi(sandbox: WasmSandbox) -> None:
    """A module without the ABI exports is refused at compile time as a ModuleTrap."""
    with pytest.raises(ModuleTrap) as info:
        sandbox.compile(wasm("missing_export"))
    assert info.value.reason == "abi"
    assert any("decide" in p for p in info.value.problems)


@pytest.mark.parametrize(
    "data", [b"", b"not wasm", b"\0asm\x01\0\0\0garbage", b"(module)"], ids=repr
)
def test_invalid_bytes_are_refused(sandbox: WasmSandbox, data: bytes) -> None:
    """Garbage, truncated binaries and WAT text are refused as SandboxError(invalid)."""
    with pytest.raises(SandboxError) as info:
        sandbox.compile(data)
    assert info.value.reason == "invalid"


def test_oversized_module_is_refused() -> None:
    """Modules larger than max_module_bytes are refused before compilation."""
    sb = WasmSandbox(max_module_bytes=64)
    with pytest.raises(SandboxError) as info:
        sb.compile(wasm("decision"))
    assert info.value.reason == "too_large"


def test_run_requires_started_ticker(echo: CompiledWasm) -> None:
    """Without the epoch ticker there is no deadline, so run fails closed."""
    sb = WasmSandbox()
    compiled = sb.compile(wasm("echo"))
    with pytest.raises(SandboxError) as info:
        sb.run(compiled, b"{}")
    assert info.value.reason == "not_started"


def test_foreign_compiled_module_is_refused(sandbox: WasmSandbox) -> None:
    """A module compiled by another sandbox (another engine) cannot be run."""
    other = WasmSandbox().compile(wasm("echo"))
    with pytest.raises(SandboxError) as info:
        sandbox.run(other, b"{}")
    assert info.value.reason == "foreign"


def test_ticker_start_stop_is_refcounted_and_idempotent() -> None:
    """The epoch ticker runs while any user holds it and stops when the last leaves."""
    sb = WasmSandbox()
    assert not sb.ticker.running
    sb.start()
    sb.start()
    assert sb.ticker.running
    sb.stop()
    assert sb.ticker.running
    sb.stop()
    assert not sb.ticker.running
    sb.stop()
    assert not sb.ticker.running


def test_budget_rejects_nonsense() -> None:
    """Budgets are validated on construction and on decode."""
    from spectral_core.errors import ConfigError

    with pytest.raises(ConfigError):
        Budget(fuel=0)
    with pytest.raises(ConfigError):
        Budget(memory_bytes=100)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"deadline_ms": 0}, Budget)


def test_self_test_passes_and_is_cached(sandbox: WasmSandbox) -> None:
    """self_test compiles its module once and reports True, with or without a sandbox."""
    assert self_test() is True
    assert self_test(sandbox) is True
    cached = sandbox._self_test_module
    assert self_test(sandbox) is True
    assert sandbox._self_test_module is cached


@pytest.mark.anyio
async def test_run_async_does_not_block_event_loop(
    sandbox: WasmSandbox, echo: CompiledWasm
) -> None:
    """A slow module runs in a worker thread while the event loop keeps serving others."""
    spin = sandbox.compile(wasm("infinite_loop"))
    ticks = 0
    outcome: list[BaseException] = []

    async def slow() -> None:
        try:
            await sandbox.run_async(spin, b"{}", Budget(fuel=10**15, deadline_ms=200))
        except BudgetExceeded as exc:
            outcome.append(exc)

    async def heartbeat() -> None:
        nonlocal ticks
        for _ in range(10):
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        tg.start_soon(heartbeat)
    assert ticks == 10
    assert len(outcome) == 1 and outcome[0].budget == "deadline"  # type: ignore[attr-defined]
    result = await sandbox.run_async(echo, b'{"ok":true}')
    assert result.value == {"ok": True}


@pytest.mark.anyio
async def test_run_async_concurrent_calls_are_isolated(
    sandbox: WasmSandbox, echo: CompiledWasm
) -> None:
    """Concurrent calls on threads each see only their own input."""
    results: dict[int, object] = {}

    async def call(i: int) -> None:
        results[i] = (await sandbox.run_async(echo, msgspec.json.encode({"i": i}))).value

    async with anyio.create_task_group() as tg:
        for i in range(32):
            tg.start_soon(call, i)
    assert results == {i: {"i": i} for i in range(32)}


@settings(max_examples=50, deadline=None)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_echo_preserves_any_json(sandbox: WasmSandbox, echo: CompiledWasm, doc: object) -> None:
    """Property: any JSON document survives the host -> guest -> host round trip."""
    assert sandbox.run(echo, msgspec.json.encode(doc)).value == doc


def test_both_bindings_give_the_same_outputs_usage_and_errors() -> None:
    """The C API path and the public path, side by side: same output, same fuel, same
    memory, and the same error for a fuel-hungry loop and a trap."""
    with (
        WasmSandbox(epoch_interval_ms=2, binding="capi") as fast,
        WasmSandbox(epoch_interval_ms=2, binding="public") as public,
    ):
        assert (fast.binding, public.binding) == ("capi", "public")
        outcomes = []
        for sb in (fast, public):
            result = sb.run(sb.compile(wasm("decision")), b'{"risk":"high"}')
            with pytest.raises(BudgetExceeded) as loop:
                sb.run(sb.compile(wasm("infinite_loop")), b"{}", Budget(fuel=10_000))
            with pytest.raises(ModuleTrap) as trap:
                sb.run(sb.compile(wasm("trap")), b"{}")
            outcomes.append(
                (
                    result.output,
                    result.usage.fuel_consumed,
                    result.usage.memory_pages,
                    loop.value.context,
                    trap.value.trap_code,
                )
            )
        assert outcomes[0] == outcomes[1]
        assert outcomes[0][4] == "INTEGER_DIVISION_BY_ZERO"


def test_the_c_api_path_is_used_only_on_a_tested_wasmtime_major() -> None:
    """The installed wasmtime is in the fast path's tested majors (pyproject pins it), so
    ``auto`` picks the C API path; any other major fails the import-time check, which makes
    ``auto`` fall back to the public path."""
    import importlib.metadata

    installed = importlib.metadata.version("wasmtime")
    assert int(installed.split(".")[0]) in _capi.TESTED_MAJORS
    assert WasmSandbox().binding == "capi"
    _capi.check_version(installed)
    for other in (f"{_capi.TESTED_MAJORS.stop}.0.0", f"{_capi.TESTED_MAJORS.start - 1}.0.0"):
        with pytest.raises(ImportError):
            _capi.check_version(other)
    with pytest.raises(ConfigError):
        WasmSandbox(binding="fast")  # type: ignore[arg-type]


def test_call_finding_every_instance_slot_taken_is_busy() -> None:  # C API path only
    """With every pooled instance slot held (here: the only one, by an instance created
    on the same engine), a call fails with SandboxError(reason="busy") instead of waiting
    or crashing, and succeeds again once the slot is free."""
    with WasmSandbox(instance_slots=1, binding="capi") as sb:
        echo = sb.compile(wasm("echo"))
        holder = wasmtime.Store(sb.engine)
        wasmtime.Instance(holder, echo.module, [])
        with pytest.raises(SandboxError) as info:
            sb.run(echo, b"{}")
        assert info.value.reason == "busy"
        holder.close()
        assert sb.run(echo, b'{"ok":1}').value == {"ok": 1}
