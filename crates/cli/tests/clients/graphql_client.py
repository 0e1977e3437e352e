"""hangar's GraphQL API as a generic client sees it: gql (PyPI) over HTTP and
over both WebSocket protocols, plus plain requests for what a browser or an
attacker's page would send. Prints one JSON object of what it saw.

usage: graphql_client.py URL TOKEN
"""

import asyncio
import json
import sys

import requests
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.requests import RequestsHTTPTransport
from gql.transport.websockets import WebsocketsTransport

URL, TOKEN = sys.argv[1], sys.argv[2]
HOST = URL.split("//", 1)[1].split("/", 1)[0]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
out = {}


def raw(name, headers, body=None, method="post", path="/graphql"):
    body = body or {"query": "{ status { pid } }"}
    r = getattr(requests, method)(
        f"http://{HOST}{path}", json=body, headers=headers, allow_redirects=False, timeout=30
    )
    try:
        payload = r.json()
    except ValueError:
        payload = r.text
    out[name] = {
        "status": r.status_code,
        "body": payload,
        "cors": r.headers.get("Access-Control-Allow-Origin"),
        "set_cookie": r.headers.get("Set-Cookie"),
        "location": r.headers.get("Location"),
    }
    return r


# What must be refused before anything runs.
raw("no_token", {})
raw("wrong_token", {"Authorization": "Bearer " + "0" * 64})
raw("foreign_origin", dict(AUTH, Origin="http://evil.example"))
raw("rebinding_host", dict(AUTH, Host="evil.example:" + HOST.rsplit(":", 1)[1]))
raw(
    "mutation_without_token",
    {"Origin": f"http://{HOST}"},
    {"query": 'mutation { reload { added } }'},
)
# A browser's login: the cookie, then the cookie alone is enough.
login = raw("login", {}, method="get", path=f"/login?token={TOKEN}")
cookie = login.cookies.get("hangar_session")
raw("with_cookie", {"Cookie": f"hangar_session={cookie}", "Origin": f"http://{HOST}"})
raw("bad_login", {}, method="get", path="/login?token=nope")

http = Client(
    transport=RequestsHTTPTransport(url=URL, headers=AUTH, timeout=30),
    fetch_schema_from_transport=True,
)


def q(name, text, variables=None):
    try:
        out[name] = {"data": http.execute(gql(text), variable_values=variables)}
    except TransportQueryError as e:
        out[name] = {"errors": e.errors}


q("status", "{ status { version pid dataDir lastEventId processes { state count } } }")
q(
    "catalog",
    "{ catalog { id name version options { name type secret enumValues } modes { id } } }",
)
q("not_found", '{ instance(idOrName: "nope") { id } }')
q("bad_cursor", '{ events(after: "x") { edges { cursor } } }')
q("deep", "{ __schema { types { fields { type { " + "ofType { " * 16 + "name" + " }" * 16 + " } } } } }")


async def follow(protocol, text, variables, until, limit=200):
    """Subscribe over `protocol` and collect results until `until(result)`."""
    ws = WebsocketsTransport(
        url=URL.replace("http://", "ws://"),
        headers=AUTH,
        subprotocols=[protocol],
        connect_timeout=30,
    )
    got = []
    async with Client(transport=ws) as s:
        async for r in s.subscribe(gql(text), variable_values=variables):
            got.append(r)
            if until(r) or len(got) >= limit:
                break
    return got


async def ex(text):
    """The HTTP client's execute, off the event loop (it is synchronous)."""
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: http.execute(gql(text))
    )


async def qa(name, text, variables=None):
    await asyncio.get_running_loop().run_in_executor(None, lambda: q(name, text, variables))


async def rest_of_the_api():
    """Every other query and mutation, each against the real daemon."""
    await qa("instances", "{ instances { name state } }")
    await qa(
        "feature",
        '{ feature(id: "demo") { id version asset { version url } installed { version current } } }',
    )
    # Another version, made current, then back, then the old one removed.
    await qa("install_old", 'mutation { install(featureId: "demo", version: "1.0.0") { version current } }')
    await qa("install_back", 'mutation { install(featureId: "demo", version: "1.1.0") { version current } }')
    await qa("uninstall_old", 'mutation { uninstall(featureId: "demo", version: "1.0.0") }')
    await qa("installed", "{ installed { id version current } }")
    # The stopped instance: start, restart, update (its only mode).
    await qa("start_instance", 'mutation { startInstance(idOrName: "g1") { state } }')
    await qa("restart_instance", 'mutation { restartInstance(idOrName: "g1") { state } }')
    await qa("update_instance", 'mutation { updateInstance(idOrName: "g1", mode: "default") { state mode } }')
    # A process added through the API, acted on, followed, removed.
    await qa(
        "add",
        "mutation($t: String!) { addProcesses(toml: $t) { name source } }",
        {"t": '[[process]]\nname = "gq"\ncommand = "sleep"\nargs = ["300"]\n'},
    )
    for _ in range(300):
        r = await ex('{ process(name: "gq") { state pid } }')
        if r["process"]["state"] == "running":
            break
        await asyncio.sleep(0.1)
    out["added_process"] = r["process"]
    last_id = (await ex("{ status { lastEventId } }"))["status"]["lastEventId"]

    async def restart_soon():
        await asyncio.sleep(1)
        await qa("restart_processes", 'mutation { restartProcesses(pattern: "gq") { names } }')

    restarter = asyncio.ensure_future(restart_soon())
    seen = []

    def restarted(r):
        seen.append(r["events"]["to"])
        return r["events"]["to"] == "running" and len(seen) > 1

    evs = await asyncio.wait_for(
        follow(
            WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL,
            'subscription($a: Int64!) { events(name: "gq", kinds: ["state"], afterId: $a) '
            "{ id name kind to } }",
            {"a": last_id},
            restarted,
        ),
        60,
    )
    await restarter
    out["gq_events"] = [e["events"] for e in evs]
    out["gq_after"] = last_id
    await qa("stop_processes", 'mutation { stopProcesses(pattern: "gq", timeoutMs: 5000) { names errors { name } } }')
    await qa("stopped_process", '{ process(name: "gq") { state pid } }')
    await qa("start_processes", 'mutation { startProcesses(pattern: "gq") { names errors { name } } }')
    await qa("signal", 'mutation { signalProcesses(pattern: "gq", signal: "CONT") { names errors { name } } }')
    await qa("bad_signal", 'mutation { signalProcesses(pattern: "gq", signal: "NOPE") { names } }')
    await qa("remove", 'mutation { removeProcess(name: "gq") }')
    await qa("removed", '{ process(name: "gq") { state } }')


async def scenario():
    # Install and follow it over graphql-transport-ws, from the answer on.
    created = (await ex(
            'mutation { installFeature(featureId: "demo", name: "g1") '
            "{ instanceId reused instance { state } } }"
    ))["installFeature"]
    out["install_feature"] = created
    progress = await asyncio.wait_for(
        follow(
            WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL,
            "subscription($id: String!) { installProgress(instanceId: $id) "
            "{ eventId status step percent bytes total error { code } } }",
            {"id": created["instanceId"]},
            # The server ends the stream once the instance settles.
            lambda r: False,
        ),
        60,
    )
    out["progress"] = [p["installProgress"] for p in progress]
    await qa(
        "instance",
        '{ instance(idOrName: "g1") { id state ports { name port } process configPreview } }',
    )
    process = out["instance"]["data"]["instance"]["process"]
    # Its output, over the older graphql-ws protocol.
    lines = await asyncio.wait_for(
        follow(
            WebsocketsTransport.APOLLO_SUBPROTOCOL,
            "subscription($n: [String!]!) { logs(names: $n, lines: 50) { process stream text } }",
            {"n": [process]},
            lambda r: True,
        ),
        60,
    )
    out["logs"] = [l["logs"] for l in lines]
    # State changes as they happen: stop it while subscribed.
    last_id = (await ex("{ status { lastEventId } }"))["status"]["lastEventId"]

    async def stop_soon():
        await asyncio.sleep(1)
        await ex('mutation { stopInstance(idOrName: "g1") { state } }')

    stopper = asyncio.ensure_future(stop_soon())
    states = await asyncio.wait_for(
        follow(
            WebsocketsTransport.APOLLO_SUBPROTOCOL,
            "subscription($after: Int64!) { instanceState(name: \"g1\", afterId: $after) "
            "{ id name kind from to } }",
            {"after": last_id},
            lambda r: r["instanceState"]["to"] == "stopped",
        ),
        60,
    )
    await stopper
    out["states"] = [s["instanceState"] for s in states]
    # A failing install reports its step and code.
    broken = (await ex('mutation { installFeature(featureId: "broken", name: "b1") { instanceId } }'))[
        "installFeature"
    ]
    failed = await asyncio.wait_for(
        follow(
            WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL,
            "subscription($id: String!) { installProgress(instanceId: $id) "
            "{ status step error { code message } } }",
            {"id": broken["instanceId"]},
            # The server ends the stream once the instance settles.
            lambda r: False,
        ),
        60,
    )
    out["failed"] = [f["installProgress"] for f in failed]
    await qa(
        "history",
        '{ events(last: 3, name: "g1") { edges { cursor node { id kind to } } '
        "pageInfo { hasPreviousPage hasNextPage startCursor } } }",
    )
    await rest_of_the_api()
    await qa("delete", 'mutation { deleteInstance(idOrName: "g1") }')


asyncio.run(scenario())
print(json.dumps(out))
