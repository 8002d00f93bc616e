"""Every kind of flow step, end to end on every carrier: what the caller hears and what is logged.

The real bridge serves on a loopback port and speaks with the Waves stand-in, so the expected
audio is the stand-in's own rendering of each prompt, byte for byte. Simulated carriers play what
they receive in real time; keep the prompts short.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
import wave
import xml.etree.ElementTree as ET
from array import array
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from telebridge.call.audio import mulaw_to_pcm
from telebridge.calllog import CallRecord
from telebridge.simulator.bridge import SIM_PLIVO_AUTH_ID, SIM_PLIVO_AUTH_TOKEN, LocalBridge
from telebridge.simulator.carrier import CallScript, SimResult, SimulatedCall
from telebridge.simulator.fake_vonage_api import VonageApiFake
from telebridge.simulator.plivo import signed_headers
from telebridge.simulator.serving import ServedApp
from telebridge.tokens import CALL_VARS, PLIVO_TRANSFER, sign_call_variables, sign_claims
from telebridge.tts.standin import StandinServer, render
from tests.call.mulaw import pcm_to_mulaw
from tests.e2e.conftest import MakeBridge
from tests.e2e.test_calls import CARRIERS, Carrier, released

PLIVO = Carrier("plivo")
VONAGE = Carrier("vonage", 16000)
# Rate-sensitive steps run at every rate; the rest on one stream of each carrier.
TWO = [PLIVO, VONAGE]
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
TRANSFER_TO = "+14155550123"


def carrier_id(c: Carrier) -> str:
    return f"{c.name}-{c.rate}"


every_carrier = pytest.mark.parametrize("carrier", CARRIERS, ids=carrier_id)
both_carriers = pytest.mark.parametrize("carrier", TWO, ids=carrier_id)


# --- helpers ----------------------------------------------------------------------------


def pcm_of(carrier: Carrier, text: str, **options: Any) -> bytes:
    """The stand-in's PCM for `text` at the carrier's rate, with speech options."""
    return render(text, sample_rate=carrier.rate, **options)


def encoded(carrier: Carrier, pcm: bytes) -> bytes:
    """PCM at the carrier's rate as the carrier receives it, padded to a 20 ms frame."""
    frame = carrier.rate // 50
    if carrier.name == "plivo":
        data = pcm_to_mulaw(pcm)
        return data + b"\xff" * (-len(data) % frame)
    return pcm + b"\x00" * (-len(pcm) % (frame * 2))


def silence(carrier: Carrier, seconds: float) -> bytes:
    frames = round(seconds / 0.02)
    if carrier.name == "plivo":
        return b"\xff" * 160 * frames
    return bytes(carrier.rate // 50 * 2 * frames)


def press_groups(call: SimulatedCall, groups: list[str], gap: float = 0.15) -> SimulatedCall:
    """Let the caller press several keys per prompt: one group per prompt heard, `gap` apart.

    The simulated carrier presses one key per prompt; a group ("12#") is pressed key by key
    from the same moment on. "w" lets a prompt pass.
    """
    call._digits = list(groups)
    press_one = call._press

    async def press(keys: str, at: float) -> None:
        for index, key in enumerate(keys):
            await press_one(key, at + index * gap)

    setattr(call, "_press", press)  # noqa: B010 - replaces a method on this one call
    return call


async def record_of(lb: LocalBridge, carrier: Carrier, result: SimResult) -> CallRecord:
    """The call log's record of a finished call (once the bridge has let the call go)."""
    await released(lb)
    assert lb.bridge is not None and lb.bridge.calllog is not None
    record = await asyncio.to_thread(lb.bridge.calllog.get, carrier.name, result.call_id)
    assert record is not None
    return record


def heard_between_clears(call: SimulatedCall, result: SimResult) -> list[bytes]:
    """What the caller heard, split where each clear cut the playback off."""
    pieces: list[bytes] = []
    done = 0
    for at in (e["at"] for e in result.timeline if e["event"] == "clear"):
        upto = call.playout.heard(until=at)
        pieces.append(upto[done:])
        done = len(upto)
    pieces.append(result.heard[done:])
    return pieces


def events(result: SimResult) -> list[str]:
    return [e["event"] for e in result.timeline]


def rms(pcm: bytes) -> float:
    samples = array("h", pcm)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def write_flow(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def write_tone(path: Path, rate: int, seconds: float, hz: float = 440.0) -> bytes:
    """A sine tone as a 16-bit mono WAV; returns its PCM."""
    count = round(rate * seconds)
    pcm = b"".join(
        struct.pack("<h", round(8000 * math.sin(2 * math.pi * hz * i / rate))) for i in range(count)
    )
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return pcm


# --- say, play, pause -------------------------------------------------------------------


@every_carrier
async def test_say_uses_the_steps_voice_speed_and_language(
    make_bridge: MakeBridge, standin: StandinServer, carrier: Carrier
) -> None:
    lb = await make_bridge(telebridge_flow="voice", **carrier.settings())
    result = await lb.run(carrier.call(lb))

    assert result.violations == []
    expected = encoded(carrier, pcm_of(carrier, "Quick test.", voice_id="lukas", speed=1.5))
    assert result.heard == expected
    # The overrides made a difference: the default voice and speed sound otherwise.
    assert expected != carrier.audio("Quick test.")
    asked = [r for r in standin.requests if "Quick" in str(r.get("text"))]
    assert asked and all(
        (r["voice_id"], r["speed"], r["language"], r["sample_rate"])
        == ("lukas", 1.5, "de", carrier.rate)
        for r in asked
    )
    record = await record_of(lb, carrier, result)
    assert (record.steps, record.outcome, record.flow) == (["hi"], "hangup", "voice")


@every_carrier
async def test_play_resamples_another_rate_and_keeps_the_carriers_rate_exact(
    make_bridge: MakeBridge, carrier: Carrier, tmp_path: Path
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    write_tone(flows / "other.wav", 22050, 0.5)
    same = write_tone(flows / "same.wav", carrier.rate, 0.3, hz=300)
    write_flow(
        flows,
        "tones",
        "start: a\nsteps:\n  a:\n    play: other.wav\n    next: b\n"
        "  b:\n    play: same.wav\n    hangup: true\n",
    )
    lb = await make_bridge(
        telebridge_flows_dir=flows, telebridge_flow="tones", **carrier.settings()
    )
    result = await lb.run(carrier.call(lb))

    assert result.violations == []
    assert [p.mark for p in result.prompts] == ["utterance-1", "utterance-2"]
    other, same_heard = (p.audio for p in result.prompts)
    # 0.5 s at 22050 Hz, resampled: still 0.5 s, to within the last frame's padding.
    assert abs(len(other) / carrier.bytes_per_second - 0.5) <= 0.021
    pcm = mulaw_to_pcm(other) if carrier.name == "plivo" else other
    assert rms(pcm) > 2000  # the tone, not silence
    # At the carrier's own rate nothing is resampled: the samples arrive unchanged.
    assert same_heard == encoded(carrier, same)
    assert result.heard == other + same_heard


@every_carrier
async def test_pause_is_exact_silence_between_prompts(
    make_bridge: MakeBridge, carrier: Carrier
) -> None:
    lb = await make_bridge(telebridge_flow="pause", **carrier.settings())
    result = await lb.run(carrier.call(lb))

    assert result.violations == []
    one, two = carrier.audio("One."), carrier.audio("Two.")
    # 0.4 s after "One." in the first step, then 0.2 s before "Two." in the second.
    assert result.heard == one + silence(carrier, 0.4) + silence(carrier, 0.2) + two
    assert [p.audio for p in result.prompts] == [
        one,
        silence(carrier, 0.4),
        silence(carrier, 0.2),
        two,
    ]
    record = await record_of(lb, carrier, result)
    assert (record.steps, record.outcome) == (["one", "two"], "hangup")


# --- set, templates, routes on variables, hangup -------------------------------------------


@both_carriers
async def test_set_fills_templates_and_variable_routes_pick_the_step(
    make_bridge: MakeBridge, carrier: Carrier
) -> None:
    lb = await make_bridge(telebridge_flow="tiers", **carrier.settings())
    result = await lb.run(carrier.call(lb))

    assert result.violations == []
    assert result.heard == carrier.audio(f"gold {carrier.name} line.")
    record = await record_of(lb, carrier, result)
    assert (record.steps, record.digits, record.outcome) == (["sort", "right"], "", "hangup")
    assert record.variables["who"] == f"gold {carrier.name}"
    assert record.variables["line"] == f"gold {carrier.name} line"


@both_carriers
async def test_hangup_reason_is_recorded_in_the_call_log(
    make_bridge: MakeBridge, carrier: Carrier
) -> None:
    lb = await make_bridge(telebridge_flow="tiers", **carrier.settings())
    result = await lb.run(carrier.call(lb))
    record = await record_of(lb, carrier, result)
    assert record.outcome is not None and record.outcome.startswith("hangup")
    logged = record.to_json()
    logged.pop("variables")
    assert "preferred-customer" in json.dumps(logged)


# --- gather ---------------------------------------------------------------------------


@both_carriers
async def test_gather_takes_several_keys_until_the_finish_key_or_max_digits(
    make_bridge: MakeBridge, carrier: Carrier
) -> None:
    lb = await make_bridge(telebridge_flow="pin", **carrier.settings())
    # "12#" ends the first gather at the finish key; "4567" stops the second after 3 keys.
    call = press_groups(carrier.call(lb, CallScript(press_after=0.3)), ["12#", "4567"])
    result = await lb.run(call)

    assert result.violations == []
    first, second, third = heard_between_clears(call, result)
    # Each key group's first key cut its prompt off 0.3 s in.
    for piece, text in ((first, "Enter the code."), (second, "Got 12. Three more.")):
        assert carrier.audio(text).startswith(piece)
        assert 0.2 <= len(piece) / carrier.bytes_per_second <= 0.7
    assert third == carrier.audio("Got 456.")
    record = await record_of(lb, carrier, result)
    assert (record.steps, record.digits, record.outcome) == (
        ["code", "more", "done"],
        "12,456",
        "hangup",
    )


@both_carriers
async def test_retries_say_no_input_then_invalid_each_before_the_reprompt(
    make_bridge: MakeBridge, carrier: Carrier
) -> None:
    lb = await make_bridge(telebridge_flow="retry", **carrier.settings())
    # Let "Pick one." and "Nothing." pass, press 9 in "Again.", let "Bad key." pass, then 1.
    call = carrier.call(lb, CallScript(digits="ww9w1", press_after=0.2))
    result = await lb.run(call)

    assert result.violations == []
    pick, nothing, again = (carrier.audio(t) for t in ("Pick one.", "Nothing.", "Again."))
    bad_key, yes = carrier.audio("Bad key."), carrier.audio("Yes.")
    # Heard in order: the prompt, no input, the reprompt (cut by 9), invalid, the reprompt
    # (cut by 1), then the step key 1 routes to.
    first, second, third = heard_between_clears(call, result)
    assert first.startswith(pick + nothing) and (pick + nothing + again).startswith(first)
    assert len(first) > len(pick + nothing)
    assert second.startswith(bad_key) and (bad_key + again).startswith(second)
    assert len(second) > len(bad_key)
    assert third == yes
    record = await record_of(lb, carrier, result)
    assert (record.steps, record.digits, record.outcome) == (["ask", "yes"], "9,1", "hangup")


@both_carriers
async def test_without_barge_in_the_prompt_plays_out_and_keys_during_it_are_ignored(
    make_bridge: MakeBridge, carrier: Carrier
) -> None:
    lb = await make_bridge(telebridge_flow="nobarge", **carrier.settings())
    prompt = carrier.audio("Listen to all of this first.")
    seconds = len(prompt) / carrier.bytes_per_second
    # "1" 0.3 s into the prompt (ignored), "2" 0.4 s after it ended (within the timeout).
    call = press_groups(carrier.call(lb, CallScript(press_after=0.3)), ["12"], gap=seconds + 0.1)
    result = await lb.run(call)

    assert result.violations == []
    assert "clear" not in events(result) and events(result).count("digit") == 2
    assert [p.audio for p in result.prompts] == [prompt, carrier.audio("Two.")]
    record = await record_of(lb, carrier, result)
    assert (record.steps, record.digits, record.outcome) == (["ask", "two"], "2", "hangup")


# --- transfer -------------------------------------------------------------------------


def carrier_moves_the_caller(call: SimulatedCall, tasks: set[asyncio.Task[None]]) -> None:
    """The carrier takes the caller to the transfer target shortly after: the stream ends."""

    async def later() -> None:
        await asyncio.sleep(0.2)
        await call.end("transferred")

    task = asyncio.create_task(later())
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def test_plivo_transfer_updates_the_call_with_signed_dial_xml(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge(telebridge_flow="transfer")
    call = lb.plivo_call()
    moving: set[asyncio.Task[None]] = set()

    async def on_transfer(call_uuid: str, body: dict[str, Any]) -> None:
        carrier_moves_the_caller(call, moving)

    lb.plivo_api.on_transfer = on_transfer
    result = await lb.run(call)

    assert result.violations == []
    assert result.heard == PLIVO.audio("Connecting.")
    assert result.ended_by == "transferred"
    [update] = [r for r in lb.plivo_api.requests if r.method == "POST"]
    assert update.path == f"/v1/Account/{SIM_PLIVO_AUTH_ID}/Call/{result.call_id}/"
    assert update.body["legs"] == "aleg"
    assert update.body.get("aleg_method", "POST") == "POST"
    aleg_url: str = update.body["aleg_url"]
    assert aleg_url.startswith(f"{lb.url}/plivo/transfer?t=")
    # "Connecting." had played before the caller was moved.
    played_at = next(e["at"] for e in result.timeline if e["event"] == "played")
    assert played_at <= update.at
    assert [r for r in lb.plivo_api.requests if r.method == "DELETE"] == []

    # Plivo then fetches the new XML from aleg_url, signed like every webhook.
    params = {"CallUUID": result.call_id, "From": "14155550100", "To": "14155550199"}
    get_url = f"{aleg_url}&{urlencode(params)}"  # GET: the fields ride in the query
    post_headers = signed_headers("POST", aleg_url, params, SIM_PLIVO_AUTH_TOKEN)
    get_headers = signed_headers("GET", get_url, {}, SIM_PLIVO_AUTH_TOKEN)
    for response in (
        await lb.http.post(aleg_url, data=params, headers=post_headers),
        await lb.http.get(get_url, headers=get_headers),
    ):
        assert response.status_code == 200, response.request.method
        assert response.headers["content-type"].startswith("application/xml")
        root = ET.fromstring(response.text)
        assert root.tag == "Response"
        numbers = [n.text for n in root.iter("Number")]
        assert numbers == [TRANSFER_TO.lstrip("+")]
        assert root.find("Dial/Number") is not None
    unsigned = await lb.http.post(aleg_url, data=params)
    assert unsigned.status_code == 403
    forged = f"{lb.url}/plivo/transfer?t=not-a-token"
    headers = signed_headers("POST", forged, params, SIM_PLIVO_AUTH_TOKEN)
    assert (await lb.http.post(forged, data=params, headers=headers)).status_code == 403

    record = await record_of(lb, PLIVO, result)
    assert (record.steps, record.outcome) == (["agent"], "transfer")


async def test_plivo_transfer_xml_rings_for_the_flows_timeout(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    assert lb.bridge is not None
    # The token PlivoCallControl.transfer mints for a transfer with `timeout: 20`.
    claims = {"to": TRANSFER_TO, "id": "CALL-1", "t": 20, "exp": time.time() + 60}
    key = lb.bridge.keys.key(PLIVO_TRANSFER, "plivo")
    token = sign_claims(key, claims)
    url = f"{lb.url}/plivo/transfer?t={token}"
    params = {"CallUUID": "CALL-1"}
    headers = signed_headers("POST", url, params, SIM_PLIVO_AUTH_TOKEN)
    response = await lb.http.post(url, data=params, headers=headers)
    assert response.status_code == 200
    dial = ET.fromstring(response.text).find("Dial")
    assert dial is not None and dial.get("timeout") == "20"
    # A transfer token is good for a while, not forever.
    stale = sign_claims(key, {**claims, "exp": time.time() - 1})
    url = f"{lb.url}/plivo/transfer?t={stale}"
    headers = signed_headers("POST", url, params, SIM_PLIVO_AUTH_TOKEN)
    assert (await lb.http.post(url, data=params, headers=headers)).status_code == 403


async def test_plivo_transfer_refused_by_the_api_goes_to_on_error(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge(telebridge_flow="transfer")
    lb.plivo_api.fail_status = 500
    result = await lb.run(lb.plivo_call())

    assert result.violations == []
    assert result.heard == PLIVO.audio("Connecting.") + PLIVO.audio("Sorry.")
    assert any(r.method == "POST" for r in lb.plivo_api.requests)
    record = await record_of(lb, PLIVO, result)
    assert (record.steps, record.outcome) == (["agent", "sorry"], "hangup")


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
async def vonage_api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[VonageApiFake]:
    async with VonageApiFake() as fake:
        # The SDK offers no CA option; requests honours this variable for every session.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake.ca_path)
        yield fake


async def vonage_rest_bridge(
    make_bridge: MakeBridge, api: VonageApiFake, private_key_pem: str
) -> LocalBridge:
    return await make_bridge(
        telebridge_flow="transfer",
        vonage_audio_rate=VONAGE.rate,
        vonage_application_id=APP_ID,
        vonage_private_key=private_key_pem,
        vonage_api_host=api.host,
    )


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
async def test_vonage_transfer_puts_an_ncco_connecting_to_the_number(
    make_bridge: MakeBridge, vonage_api: VonageApiFake, private_key_pem: str, direction: str
) -> None:
    lb = await vonage_rest_bridge(make_bridge, vonage_api, private_key_pem)
    assert lb.bridge is not None
    # A call the bridge placed says so in its signed variables (see outbound.py); its own
    # number is then the caller, and the transfer must come from that number.
    query = ""
    ours = CallScript().callee
    if direction == "outbound":
        key = lb.bridge.keys.key(CALL_VARS, "vonage")
        query = "vars=" + sign_call_variables(key, {"direction": "outbound"}, 60)
        ours = CallScript().caller
    # The call's region is the fake (trusted: it is the configured API host).
    call = lb.vonage_call(region_url=f"https://{vonage_api.host}", answer_query=query)
    moving: set[asyncio.Task[None]] = set()

    async def vonage_moves_the_caller() -> None:
        await vonage_api.received.wait()
        carrier_moves_the_caller(call, moving)

    watcher = asyncio.create_task(vonage_moves_the_caller())
    result = await lb.run(call)
    await watcher

    assert result.violations == []
    assert result.heard == VONAGE.audio("Connecting.")
    assert result.ended_by == "transferred"
    [request] = vonage_api.requests
    assert (request.method, request.path) == ("PUT", f"/v1/calls/{result.call_id}")
    assert request.json == {
        "action": "transfer",
        "destination": {
            "type": "ncco",
            "ncco": [
                {
                    "action": "connect",
                    "from": ours,
                    "timeout": 20,
                    "endpoint": [{"type": "phone", "number": TRANSFER_TO.lstrip("+")}],
                }
            ],
        },
    }
    record = await record_of(lb, VONAGE, result)
    assert (record.steps, record.outcome) == (["agent"], "transfer")


async def test_vonage_transfer_refused_by_the_api_goes_to_on_error(
    make_bridge: MakeBridge, vonage_api: VonageApiFake, private_key_pem: str
) -> None:
    vonage_api.update_status = 500
    lb = await vonage_rest_bridge(make_bridge, vonage_api, private_key_pem)
    result = await lb.run(lb.vonage_call(region_url=f"https://{vonage_api.host}"))

    assert result.violations == []
    assert result.heard == VONAGE.audio("Connecting.") + VONAGE.audio("Sorry.")
    transfers = [r for r in vonage_api.requests if (r.json or {}).get("action") == "transfer"]
    assert transfers and all(r.path == f"/v1/calls/{result.call_id}" for r in transfers)
    record = await record_of(lb, VONAGE, result)
    assert (record.steps, record.outcome) == (["agent", "sorry"], "hangup")


async def test_vonage_transfer_without_rest_credentials_goes_to_on_error(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge(telebridge_flow="transfer", vonage_audio_rate=VONAGE.rate)
    result = await lb.run(lb.vonage_call())
    assert result.heard == VONAGE.audio("Connecting.") + VONAGE.audio("Sorry.")
    record = await record_of(lb, VONAGE, result)
    assert (record.steps, record.outcome) == (["agent", "sorry"], "hangup")


# --- webhook --------------------------------------------------------------------------


class CrmServer:
    """A webhook target on loopback that records each POST and answers as `mode` says."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.received: list[dict[str, Any]] = []
        self.release = asyncio.Event()  # lets a slow answer finish when the test is over
        self.url = ""

    async def hook(self, request: Request) -> Response:
        self.received.append(json.loads(await request.body()))
        if self.mode == "slow":
            try:
                async with asyncio.timeout(5):
                    await self.release.wait()
            except TimeoutError:
                pass
            return JSONResponse({"say": "Too late."})
        if self.mode == "fail":
            return JSONResponse({"error": "down"}, status_code=500)
        if self.mode == "garbage":
            return PlainTextResponse("<html>not json</html>")
        if self.mode == "nostep":
            return JSONResponse({"vars": {"name": "Bob"}, "next": "nowhere"})
        return JSONResponse({"vars": {"name": "Ann", "score": 7}, "say": "Hi Ann.", "next": "two"})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/ivr", self.hook, methods=["POST"])])


@pytest.fixture
async def crm() -> AsyncIterator[CrmServer]:
    server = CrmServer()
    async with ServedApp(server.app(), lifespan="off") as served:
        server.url = f"{served.url}/ivr"
        yield server
        server.release.set()


WEBHOOK_FLOW = """\
start: look
steps:
  look:
    webhook: {{url: "{url}", timeout: 0.5}}
    say: "Step {{{{name}}}}."
    next: one
    on_error: sorry
  one:
    say: "One."
    hangup: true
  two:
    say: "Two {{{{score}}}}."
    hangup: true
  sorry:
    say: "Sorry."
    hangup: true
"""


async def webhook_bridge(
    make_bridge: MakeBridge, crm: CrmServer, tmp_path: Path, carrier: Carrier
) -> LocalBridge:
    flows = tmp_path / "flows"
    write_flow(flows, "lookup", WEBHOOK_FLOW.format(url=crm.url))
    return await make_bridge(
        telebridge_flows_dir=flows, telebridge_flow="lookup", **carrier.settings()
    )


@both_carriers
async def test_webhook_answer_sets_vars_speaks_and_picks_the_next_step(
    make_bridge: MakeBridge, crm: CrmServer, tmp_path: Path, carrier: Carrier
) -> None:
    lb = await webhook_bridge(make_bridge, crm, tmp_path, carrier)
    result = await lb.run(carrier.call(lb))

    assert result.violations == []
    # The answer's say comes first, then the step's own prompt, then the step it named.
    spoken = ["Hi Ann.", "Step Ann.", "Two 7."]
    assert [p.audio for p in result.prompts] == [carrier.audio(t) for t in spoken]
    [posted] = crm.received
    assert {k: posted[k] for k in ("call_id", "carrier", "caller", "callee", "flow", "step")} == {
        "call_id": result.call_id,
        "carrier": carrier.name,
        "caller": CallScript().caller,
        "callee": CallScript().callee,
        "flow": "lookup",
        "step": "look",
    }
    assert posted["vars"]["carrier"] == carrier.name
    record = await record_of(lb, carrier, result)
    assert (record.steps, record.outcome) == (["look", "two"], "hangup")
    assert (record.variables["name"], record.variables["score"]) == ("Ann", "7")
    assert [w["ok"] for w in record.webhooks] == [True]


# What the call log says went wrong, for each way a webhook can fail.
FAILURE_DETAIL = {"slow": "0.5 s", "fail": "HTTP 500", "garbage": "not JSON", "nostep": "nowhere"}


@both_carriers
@pytest.mark.parametrize("mode", list(FAILURE_DETAIL))
async def test_webhook_failure_goes_to_on_error(
    make_bridge: MakeBridge, crm: CrmServer, tmp_path: Path, carrier: Carrier, mode: str
) -> None:
    crm.mode = mode
    lb = await webhook_bridge(make_bridge, crm, tmp_path, carrier)
    result = await lb.run(carrier.call(lb))

    assert result.violations == []
    assert result.heard == carrier.audio("Sorry.")
    assert len(crm.received) == 1
    record = await record_of(lb, carrier, result)
    assert (record.steps, record.outcome) == (["look", "sorry"], "hangup")
    [webhook] = record.webhooks
    assert webhook["ok"] is False and webhook["step"] == "look"
    assert FAILURE_DETAIL[mode] in webhook["detail"]
    assert "name" not in record.variables
